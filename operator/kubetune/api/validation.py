"""A resource's spec checked offline and by the operator: the models (the CRD's schema and CEL rules, with
the API server's messages), then the operator's own checks beyond them."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import ValidationError

from kubetune.api import API_VERSION
from kubetune.api import finetunejob as ftj
from kubetune.api import modelserve as ms
from kubetune.api.cel import CEL_ERROR
from kubetune.api.common import (  # Problem is defined with the shared types; imported from here too
    NAME_RULE,
    RULES_HELD,
    Problem,
    source_claim_and_path,
)
from kubetune.api.llamafactory import ARGUMENTS, OWNED_KEYS, check_config, check_template
from kubetune.api.podspec import PodSecurity, pod_security_over
from kubetune.remembered import Remembered

SpecModel = TypeVar("SpecModel", ftj.FineTuneJobSpec, ms.ModelServeSpec)

# LLaMA-Factory arguments that carry a credential (their names say so: `swanlab_api_key`,
# `swanlab_lark_secret`, a webhook URL that carries its own token, ...). In `spec.config` they would be
# stored in the resource and copied into the run's ConfigMap, readable by anyone who can read ConfigMaps;
# the hub tokens are owned keys already.
_SECRET_NAME = re.compile(r"(^|_)(key|token|secret|password|passwd|webhook_url)$")
SECRET_ARGUMENTS = frozenset(a for a in ARGUMENTS if _SECRET_NAME.search(a) and a not in OWNED_KEYS)
# Where a tracker reads the same credential from the environment (then `spec.secretEnv` passes it).
SECRET_ENV = {"swanlab_api_key": "SWANLAB_API_KEY"}


def describe(error: ValidationError, prefix: str = "spec") -> str:
    """Each problem as `spec.field[index].field: what is wrong`, in the API server's words where it has
    them (`Required value`, `unknown field`), at the field a CEL rule points to (its fieldPath)."""
    messages = []
    for item in error.errors():
        where = prefix + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in item["loc"])
        if item["type"] == CEL_ERROR:
            where += (item.get("ctx") or {}).get("field_path", "")
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            message = "Required value"
        elif item["type"] == "extra_forbidden":
            message = f'unknown field "{where}": remove it (or check its spelling)'
        elif item["type"] in _JSON_TYPES:
            message = f"must be of type {_JSON_TYPES[item['type']]}: {message}"
        messages.append(f"{where}: {message}")
    return "; ".join(messages)


# pydantic's type errors, by the JSON type the API server names.
_JSON_TYPES = {
    "dict_type": "object",
    "model_type": "object",
    "list_type": "array",
    "string_type": "string",
    "int_type": "integer",
    "int_parsing": "integer",
    "int_from_float": "integer",
    "float_type": "number",
    "float_parsing": "number",
    "bool_type": "boolean",
    "bool_parsing": "boolean",
}


def _parse(model: type[SpecModel], raw_spec: dict[str, Any], strict: bool, rules_held: bool) -> SpecModel:
    if strict:  # a manifest as written: JSON types as the API server checks them (no "2" for 2)
        return model.model_validate_json(json.dumps(raw_spec or {}), strict=True)
    return model.model_validate(raw_spec or {}, context={RULES_HELD: rules_held})


# How many resources' generations RulesHeld remembers: every FineTuneJob and ModelServe of a large cluster.
RULES_HELD_SIZE = 20_000


class RulesHeld:
    """The resources' generations (uid, metadata.generation) whose spec was found to hold its CEL rules.

    The API server checks the rules on every write, and a generation's spec never changes: the operator
    checks them again only for an object stored before a rule existed, so once per generation is enough.
    On every reconcile, they were two thirds of parsing a spec (0.3 ms). Bounded; safe across threads."""

    def __init__(self, size: int = RULES_HELD_SIZE):
        self._held: Remembered[tuple[str, int]] = Remembered(size)
        self._lock = threading.Lock()

    def __contains__(self, key: tuple[str, int] | None) -> bool:
        with self._lock:
            return key is not None and key in self._held

    def add(self, key: tuple[str, int] | None) -> None:
        if key is None:
            return
        with self._lock:
            self._held.add(key)


GENERATIONS_HOLDING_RULES = RulesHeld()


def generation_of(body: dict[str, Any]) -> tuple[str, int] | None:
    """A resource's (uid, generation), the key of RulesHeld; None for one without them (not stored yet)."""
    meta = body.get("metadata") or {}
    uid, generation = meta.get("uid"), meta.get("generation")
    return (uid, generation) if uid and isinstance(generation, int) else None


def spec_of(
    body: dict[str, Any],
    check: Callable[..., tuple[SpecModel | None, list[Problem]]],
    held: RulesHeld = GENERATIONS_HOLDING_RULES,
) -> tuple[SpecModel | None, list[Problem]]:
    """A stored resource's spec through `check` (finetunejob_spec or modelserve_spec), its CEL rules
    checked once per generation."""
    key = generation_of(body)
    spec, problems = check(body.get("spec") or {}, rules_held=key in held)
    if spec is not None:
        held.add(key)
    return spec, problems


def finetunejob_spec(
    raw_spec: dict[str, Any], strict: bool = False, rules_held: bool = False
) -> tuple[ftj.FineTuneJobSpec | None, list[Problem]]:
    """The spec against the models, then `config` against the pinned LLaMA-Factory release. `strict`: a
    manifest not yet through the API server, whose JSON types are still to be checked; `rules_held`: its
    CEL rules were found to hold already (RulesHeld)."""
    try:
        spec = _parse(ftj.FineTuneJobSpec, raw_spec, strict, rules_held)
    except ValidationError as error:
        return None, [Problem("InvalidSpec", describe(error), terminal=True)]
    template = None
    if spec.model.template is not None:  # none: LLaMA-Factory takes the tokenizer's chat template
        template = check_template(spec.model.template, field="spec.model.template")
    found = ([template] if template else []) + check_config(spec.config)
    problems = [Problem("InvalidConfig", p.message, terminal=True) for p in found]
    problems += [Problem("InvalidConfig", m, terminal=True) for m in secret_problems(spec.config)]
    return spec, problems


def modelserve_spec(
    raw_spec: dict[str, Any], strict: bool = False, rules_held: bool = False
) -> tuple[ms.ModelServeSpec | None, list[Problem]]:
    """The spec against the models (their schema and CEL rules), then what the operator checks across
    fields; `strict` and `rules_held` as for finetunejob_spec."""
    try:
        spec = _parse(ms.ModelServeSpec, raw_spec, strict, rules_held)
    except ValidationError as error:
        return None, [Problem("InvalidSpec", describe(error), terminal=True)]
    problems = []
    on_claim = source_claim_and_path(spec.model.source) if spec.model.source else None
    if on_claim is not None:
        model_claim = on_claim[0]
        if model_claim != spec.storage.claim:
            problems.append(
                Problem(
                    "InvalidSpec",
                    f"spec.model.source is on claim {model_claim}: serve from spec.storage.claim "
                    f"({spec.storage.claim}), where the trainer wrote the adapters",
                    terminal=True,
                )
            )
    return spec, problems


SPEC_CHECKS = {ftj.KIND: finetunejob_spec, ms.KIND: modelserve_spec}


def resource_problems(document: dict[str, Any]) -> list[Problem]:
    """What the API server and then the operator would refuse in a whole kubetune resource, offline."""
    kind = document.get("kind")
    if kind not in SPEC_CHECKS:
        return [Problem("UnsupportedKind", f"unsupported kind {kind!r}", terminal=True)]
    problems = []
    if document.get("apiVersion") != API_VERSION:
        found = document.get("apiVersion")
        problems.append(Problem("InvalidSpec", f"apiVersion: {found!r}: set {API_VERSION}", terminal=True))
    metadata = document.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
        problems.append(Problem("InvalidSpec", "metadata.name: Required value: name the resource", True))
    elif not NAME_RULE.holds({"metadata": metadata}):
        problems.append(Problem("InvalidSpec", NAME_RULE.message, terminal=True))
    if not isinstance(document.get("spec"), dict):
        problems.append(Problem("InvalidSpec", "spec: Required value: an object", terminal=True))
        return problems
    _, found = SPEC_CHECKS[kind](document["spec"], strict=True)
    return problems + found


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


def pod_security_problems(security: PodSecurity | None, limit: str) -> list[Problem]:
    """spec.podSecurity's relaxations beyond the installation's Pod Security limit, as problems."""
    over = pod_security_over(security, limit)
    return [Problem("PodSecurityLimit", message, terminal=True) for message in over]
