"""Pieces shared by the kubetune resources: the model base class, small reference types, model sources, and
the problem type both kinds report."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    ValidationInfo,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

from kubetune.api.cel import CEL_ERROR, Rule, with_rules

# Where the shared claim is mounted in every pod (trainer and server alike), so that a path written by
# the trainer is the same path the server reads.
CLAIM_MOUNT_PATH = "/mnt/claim"

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
RELATIVE_PATH = r"^[^/].*$"

# A base model, for a FineTuneJob and a ModelServe alike: a directory on a claim, or a hub id.
MODEL_SOURCE = r"^(pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?/.+|hf://[^/\s]+/[^/\s]+|ms://[^/\s]+/[^/\s]+)$"
# The variable each hub's own client reads its token from: huggingface_hub reads HF_TOKEN, ModelScope's
# client (modelscope_hub, under `modelscope`) MODELSCOPE_API_TOKEN. `kubetune fetch-model` downloads with
# those clients, in every pod of either kind that fetches a hub model.
HUB_TOKEN_ENV = {"hf": "HF_TOKEN", "ms": "MODELSCOPE_API_TOKEN"}

# Children and pod hostnames are named after the resource: a DNS label keeps every one of them valid (a rule
# on the whole resource, in the CRD's root).
NAME_RULE = Rule(
    "self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
    "metadata.name must be a DNS label: at most 63 lowercase letters, digits and '-'",
)


# The validation context's key saying that this spec was found to hold its CEL rules already (RulesHeld).
RULES_HELD = "rules_held"


class Model(BaseModel):
    """Base of every spec model: camelCase on the wire, snake_case in Python, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, use_enum_values=True
    )

    # The CEL rules of this object (`self` is the object), in the CRD and checked here (kubetune.api.cel).
    cel_rules: ClassVar[tuple[Rule, ...]] = ()

    def wire(self) -> dict[str, Any]:
        """The model as it appears in a manifest: camelCase keys, unset fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        with_rules(handler.resolve_ref_schema(schema), cls.cel_rules)
        return schema

    @model_validator(mode="after")
    def _cel_rules_hold(self, info: ValidationInfo) -> Model:
        # What the API server checks, checked again with the same message: for `kubetune validate`, and
        # for an object stored before a rule existed (once per generation: validation.RulesHeld).
        if info.context and info.context.get(RULES_HELD):
            return self
        object_rules, field_rules = self.cel_rules, _field_rules(type(self))
        if not object_rules and not field_rules:
            return self
        # As on the wire: camelCase, only what the manifest says (unset, defaulted, null fields absent).
        read = _fields_read(type(self))
        node = self.model_dump(
            include=read, by_alias=True, exclude_unset=True, exclude_none=True, mode="json"
        )
        failed = [(rule, rule.field_path or "", node) for rule in object_rules if not rule.holds(node)]
        for alias, rules in field_rules.items():
            if alias in node:  # as in the API server, a field's rules apply when it is there
                failed += [(rule, f".{alias}", node[alias]) for rule in rules if not rule.holds(node[alias])]
        if failed:
            # Reported where the API server points (the rule's fieldPath); describe() puts it in the path.
            messages = "; ".join(rule.message_for(value) for rule, _, value in failed)
            where = failed[0][1]
            raise PydanticCustomError(CEL_ERROR, "{messages}", {"messages": messages, "field_path": where})
        return self


@cache
def _fields_read(model: type[Model]) -> set[str] | None:
    """The fields (Python names) that a model's rules read; None: all of them."""
    aliases: set[str] = set(_field_rules(model))
    for rule in model.cel_rules:
        if rule.fields is None:
            return None
        aliases |= rule.fields
    return {name for name, info in model.model_fields.items() if (info.alias or name) in aliases}


@cache
def _field_rules(model: type[Model]) -> dict[str, tuple[Rule, ...]]:
    """The rules declared on a model's fields (`Annotated[..., Rule(...)]`), by the field's wire name."""
    found = {}
    for name, info in model.model_fields.items():
        rules = tuple(m for m in info.metadata if isinstance(m, Rule))
        if rules:
            found[info.alias or name] = rules
    return found


ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]


def keyed_by_name(field: str) -> AfterValidator:
    """For a list keyed by `name` (`x-kubernetes-list-type: map`): the API server refuses a name twice, in
    its words."""

    def once(items: list[Any]) -> list[Any]:
        names = [item.name for item in items]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"Duplicate value: {field} names must be unique: {', '.join(duplicates)}")
        return items

    return AfterValidator(once)


class SecretKeyRef(Model):
    """A key in a Secret of the resource's namespace."""

    name: ObjectName = Field(description="Name of the Secret.")
    key: str = Field("token", min_length=1, description="Key in the Secret (default `token`).")


# A hub token means nothing for a model on a claim (either kind's `model`).
HUB_TOKEN_ONLY_FOR_HUB = Rule(
    "!has(self.hubTokenSecret) || (has(self.source) && !self.source.startsWith('pvc://'))",
    "hubTokenSecret is only for hub sources (hf:// or ms://), not pvc://",
    field_path=".hubTokenSecret",
)


# A revision names a commit of a hub repository; a directory on a claim has none.
REVISION_ONLY_FOR_HUB = Rule(
    "!has(self.revision) || (has(self.source) && !self.source.startsWith('pvc://'))",
    "revision is only for hub sources (hf:// or ms://), not pvc://",
    field_path=".revision",
)


class ModelSource(Model):
    """Where a base model is, for a FineTuneJob and a ModelServe alike."""

    cel_rules = (HUB_TOKEN_ONLY_FOR_HUB, REVISION_ONLY_FOR_HUB)

    source: str = Field(
        pattern=MODEL_SOURCE,
        description=(
            "Where the base model is: `pvc://<claim>/<path>` (a directory on a PersistentVolumeClaim), "
            "or a hub id, `hf://<org>/<name>` (Hugging Face) or `ms://<org>/<name>` (ModelScope), downloaded "
            "once into the model cache on the storage claim."
        ),
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) of a hub model.")
    hub_token_secret: SecretKeyRef | None = Field(
        None, description="Secret holding the hub token, for gated or private hub models."
    )

    @property
    def scheme(self) -> str:
        return source_scheme(self.source)

    @property
    def hub_id(self) -> str | None:
        return source_hub_id(self.source)

    @property
    def claim_and_path(self) -> tuple[str, str] | None:
        return source_claim_and_path(self.source)


class ClaimStorage(Model):
    """The shared PersistentVolumeClaim, and where hub models are cached on it."""

    claim: ObjectName = Field(
        description=(
            "Name of the PersistentVolumeClaim that holds the models, datasets and outputs (ReadWriteMany "
            "when pods on several nodes mount it)."
        )
    )
    model_cache: str = Field(
        "models/hub", pattern=RELATIVE_PATH, description="Where hub models are cached on the claim."
    )


class ConfigMapKeyRef(Model):
    """A key in a ConfigMap of the resource's namespace."""

    name: ObjectName = Field(description="Name of the ConfigMap.")
    key: str = Field(min_length=1, description="Key in the ConfigMap.")


class Condition(Model):
    """A standard Kubernetes condition."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    type: str = Field(description="Type of the condition, such as `Succeeded`.")
    status: str = Field(description="`True`, `False` or `Unknown`.")
    reason: str | None = Field(None, description="A CamelCase reason for the last transition.")
    message: str | None = Field(None, description="A human-readable explanation.")
    last_transition_time: str | None = Field(None, description="When the status last changed.")
    observed_generation: int | None = Field(None, description="The .metadata.generation it was set for.")


class ResourceStatus(Model):
    """What the status of either kind says first: the phase's why, the conditions, the generation seen."""

    model_config = Model.model_config | {"extra": "allow", "frozen": False}

    reason: str | None = Field(None, description="Why the resource is in its phase, in one CamelCase word.")
    message: str | None = Field(None, description="What is happening, or what went wrong, for a person.")
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = Field(None, description="The .metadata.generation it was computed for.")


def source_scheme(source: str) -> str:
    """`pvc`, `hf` or `ms`: the part of a model source before `://`."""
    return source.split("://", 1)[0]


def source_hub_id(source: str) -> str | None:
    """`org/name` of a hub source; None for `pvc://`."""
    return None if source_scheme(source) == "pvc" else source.split("://", 1)[1]


def source_claim_and_path(source: str) -> tuple[str, str] | None:
    """(claim, path on it) of a `pvc://` source; None for a hub source."""
    if source_scheme(source) != "pvc":
        return None
    claim, _, path = source.removeprefix("pvc://").partition("/")
    return claim, path.strip("/")


@dataclass(frozen=True)
class Problem:
    """Something wrong with a resource: its spec, its config, or what it refers to."""

    reason: str  # InvalidSpec, InvalidConfig, MissingClaim, MissingSecret, MissingConfigMap, ...
    message: str
    terminal: bool  # True: the spec must change (Failed); False: waiting for something to appear (Pending)
