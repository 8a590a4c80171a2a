"""The operator's own checks of a spec, beyond what the CRD schema and CEL rules already refuse."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from kubetune.api import finetunejob as ftj
from kubetune.api.common import Problem  # defined with the shared types; imported from here too
from kubetune.api.llamafactory import ARGUMENTS, OWNED_KEYS, check_config, check_template

# LLaMA-Factory arguments that carry a credential (their names say so: `swanlab_api_key`,
# `swanlab_lark_secret`, ...). In `spec.config` they would be stored in the resource and copied into the
# run's ConfigMap, readable by anyone who can read ConfigMaps; the hub tokens are owned keys already.
_SECRET_NAME = re.compile(r"(^|_)(key|token|secret|password|passwd)$")
SECRET_ARGUMENTS = frozenset(a for a in ARGUMENTS if _SECRET_NAME.search(a) and a not in OWNED_KEYS)
# Where a tracker reads the same credential from the environment (then `spec.secretEnv` passes it).
SECRET_ENV = {"swanlab_api_key": "SWANLAB_API_KEY"}


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
    problems += [Problem("InvalidConfig", m, terminal=True) for m in secret_problems(spec.config)]
    return spec, problems


def secret_problems(config: dict[str, Any]) -> list[str]:
    """Credentials in `spec.config`: refused, each with where the value goes instead."""
    messages = []
    for key in sorted(k for k in config if k in SECRET_ARGUMENTS):
        message = (
            f"spec.config.{key}: `{key}` is a credential and would be stored in the resource and in its "
            f"ConfigMap: keep it in a Secret"
        )
        if key in SECRET_ENV:
            message += (
                f" and pass it as `spec.secretEnv: [{{name: {SECRET_ENV[key]}, secretKeyRef: "
                f"{{name: <secret>, key: <key>}}}}]` (the tracker reads {SECRET_ENV[key]})"
            )
        else:
            message += " (LLaMA-Factory reads it only from its config: this tracker option is not supported)"
        messages.append(message)
    return messages
