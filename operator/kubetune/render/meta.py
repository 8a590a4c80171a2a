"""The metadata of every child, for both kinds: the labels, the owner reference that makes the resource the
child's controller (children are found by it, and deleted with the resource), and the pods' metadata with
a user's extra labels and annotations (`spec.podMetadata`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubetune.api import API_VERSION, label_names
from kubetune.api.podspec import PodMetadata


@dataclass(frozen=True)
class Owner:
    """The resource that owns a child."""

    kind: str
    name: str
    namespace: str
    uid: str


def owner_reference(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": owner.kind,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def labels(app: str, **own: str) -> dict[str, str]:
    """The recommended app labels, then the operator's own (which select the pods and find the children)."""
    return {label_names.APP_NAME: app, label_names.APP_MANAGED_BY: label_names.MANAGED_BY, **own}


def metadata(owner: Owner, name: str, child_labels: dict[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": child_labels,
        "ownerReferences": [owner_reference(owner)],
    }


def pod_metadata(extra: PodMetadata | None, own_labels: dict[str, str]) -> dict[str, Any]:
    """A pod template's metadata: the user's labels and annotations, with the operator's labels winning
    (Services, selectors and the status depend on them)."""
    meta: dict[str, Any] = {"labels": {**((extra and extra.labels) or {}), **own_labels}}
    if extra and extra.annotations:
        meta["annotations"] = dict(extra.annotations)
    return meta
