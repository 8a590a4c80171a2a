"""Pieces shared by the kubetune resources: the model base class, small reference types, model sources, and
the problem type both kinds report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

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


class Model(BaseModel):
    """Base of every spec model: camelCase on the wire, snake_case in Python, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, use_enum_values=True
    )

    def wire(self) -> dict[str, Any]:
        """The model as it appears in a manifest: camelCase keys, unset fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]


class SecretKeyRef(Model):
    """A key in a Secret of the resource's namespace."""

    name: ObjectName = Field(description="Name of the Secret.")
    key: str = Field("token", min_length=1, description="Key in the Secret (default `token`).")


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
