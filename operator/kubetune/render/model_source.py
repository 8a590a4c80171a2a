"""Where the base model is inside a pod, and how a hub model gets there, for both kinds.

A FineTuneJob and a ModelServe with the same `model.source` (and storage) see the model at the same path:
an adapter records the base model's path it was trained on, and vLLM matches it against the path it serves.
A hub model (`hf://`, `ms://`) is downloaded once into the model cache on the storage claim by the
`fetch-model` init container, with the hub's token in the variable that hub's client reads.
"""

from __future__ import annotations

import posixpath
from typing import Any, Protocol

from kubetune.api.common import (
    CLAIM_MOUNT_PATH,
    HUB_TOKEN_ENV,
    SecretKeyRef,
    source_claim_and_path,
    source_hub_id,
    source_scheme,
)
from kubetune.api.defaults import EXTRA_CLAIMS_MOUNT_PATH

FETCH_MODEL_CONTAINER = "fetch-model"
# The pod's volume of the storage claim; a pvc:// model on another claim is the volume `model`.
CLAIM_VOLUME = "claim"
MODEL_VOLUME = "model"


class ModelSource(Protocol):
    """`spec.model` of either kind, as far as where the model comes from."""

    @property
    def source(self) -> str: ...

    @property
    def revision(self) -> str | None: ...

    @property
    def hub_token_secret(self) -> SecretKeyRef | None: ...


def claim_path(path: str) -> str:
    """A path on the storage claim, as the pods see it."""
    path = path.strip("/")
    return posixpath.join(CLAIM_MOUNT_PATH, path) if path else CLAIM_MOUNT_PATH


def is_hub(model: ModelSource) -> bool:
    return source_hub_id(model.source) is not None


def model_path(model: ModelSource, storage_claim: str, model_cache: str) -> str:
    """The base model's directory inside the pod."""
    hub_id = source_hub_id(model.source)
    if hub_id is not None:
        # Each revision has its own directory: two revisions must never share one download.
        cached = hub_id + (f"@{model.revision}" if model.revision else "")
        return claim_path(posixpath.join(model_cache, source_scheme(model.source), cached))
    claim, path = source_claim_and_path(model.source)  # type: ignore[misc]
    if claim == storage_claim:
        return claim_path(path)
    return posixpath.join(EXTRA_CLAIMS_MOUNT_PATH, claim, path)


def model_claim_volume(
    model: ModelSource, storage_claim: str
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(volume, mount) of a pvc:// model on a claim other than the storage claim, read-only; else None."""
    found = source_claim_and_path(model.source)
    if found is None or found[0] == storage_claim:
        return None
    claim = found[0]
    volume = {"name": MODEL_VOLUME, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
    mount_path = posixpath.join(EXTRA_CLAIMS_MOUNT_PATH, claim)
    mount = {"name": MODEL_VOLUME, "mountPath": mount_path, "readOnly": True}
    return volume, mount


def hub_token_env(model: ModelSource) -> list[dict[str, Any]]:
    """The hub token from its Secret, in the variable the source's hub client reads (HUB_TOKEN_ENV); the
    kubelet reads the Secret, the value never passes through the operator."""
    token = model.hub_token_secret
    variable = HUB_TOKEN_ENV.get(source_scheme(model.source))
    if token is None or variable is None:
        return []
    return [{"name": variable, "valueFrom": {"secretKeyRef": {"name": token.name, "key": token.key}}}]


def fetch_model_container(
    model: ModelSource,
    dest: str,
    image: str,
    *,
    image_pull_policy: str | None = None,
    env: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The init container that downloads a hub model into the cache on the claim once (`kubetune
    fetch-model`); a later pod finds it complete and skips. It writes the claim, so its mount says so."""
    args = ["fetch-model", "--source", model.source, "--dest", dest]
    if model.revision:
        args += ["--revision", model.revision]
    container: dict[str, Any] = {"name": FETCH_MODEL_CONTAINER, "image": image}
    if image_pull_policy:
        container["imagePullPolicy"] = image_pull_policy
    container |= {"command": ["kubetune"], "args": args}
    env = [*(env or []), *hub_token_env(model)]
    if env:
        container["env"] = env
    container["volumeMounts"] = [{"name": CLAIM_VOLUME, "mountPath": CLAIM_MOUNT_PATH, "readOnly": False}]
    return container
