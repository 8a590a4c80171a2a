"""Pieces shared by the kubetune resources: the model base class and small reference types."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# Where the shared claim is mounted in every pod (trainer and server alike), so that a path written by
# the trainer is the same path the server reads.
CLAIM_MOUNT_PATH = "/mnt/claim"

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


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
