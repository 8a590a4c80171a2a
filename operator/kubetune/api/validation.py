"""The operator's own checks of a spec, beyond what the CRD schema and CEL rules already refuse."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from kubetune.api import finetunejob as ftj
from kubetune.api.llamafactory import check_config, check_template


@dataclass(frozen=True)
class Problem:
    """Something wrong with a resource: its spec, its config, or what it refers to."""

    reason: str  # InvalidSpec, InvalidConfig, MissingClaim, MissingSecret, MissingConfigMap, ...
    message: str
    terminal: bool  # True: the spec must change (Failed); False: waiting for something to appear (Pending)


def describe(error: ValidationError, prefix: str = "spec") -> str:
    messages = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"])
        messages.append(f"{prefix}.{where}: {item['msg']}" if where else f"{prefix}: {item['msg']}")
    return "; ".join(messages)


def finetunejob_spec(raw_spec: dict[str, Any]) -> tuple[ftj.FineTuneJobSpec | None, list[Problem]]:
    """The spec against the models, then `config` against the pinned LLaMA-Factory release."""
    try:
        spec = ftj.FineTuneJobSpec.model_validate(raw_spec or {})
    except ValidationError as error:
        return None, [Problem("InvalidSpec", describe(error), terminal=True)]
    template = None
    if spec.model.template is not None:  # none: LLaMA-Factory takes the tokenizer's chat template
        template = check_template(spec.model.template, field="spec.model.template")
    found = ([template] if template else []) + check_config(spec.config)
    problems = [Problem("InvalidConfig", p.message, terminal=True) for p in found]
    return spec, problems
