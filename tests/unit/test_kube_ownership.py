"""`Kube`'s own ownership rules (kube.py), on its real code with the HTTP exchange replaced.

tests/fakekube.py carries a copy of these rules for the reconciles' tables; here the production client is
tested, so that weakening it fails a test (the integration tier checks the same against the API server).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from kubetune.kube import Kube, NotOurs

OWNER = {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "name": "ner", "uid": "uid-ner",
         "controller": True}  # fmt: skip


def config_map(owner_uid: str | None = "uid-ner", manager: str = "kubetune", **labels: str) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": "ner-config",
        "namespace": "team-a",
        "resourceVersion": "7",
        "labels": labels,
        "managedFields": [{"manager": manager, "operation": "Apply"}],
    }
    if owner_uid is not None:
        meta["ownerReferences"] = [{**OWNER, "uid": owner_uid}]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"a": "1"}}


def manifest() -> dict[str, Any]:
    body = config_map()
    del body["metadata"]["resourceVersion"], body["metadata"]["managedFields"]
    body["metadata"]["labels"] = {"kubetune.io/finetunejob": "ner"}
    return body


class Exchange(Kube):
    """Kube with `_call` answered from one stored object; every request is recorded."""

    def __init__(self, stored: dict[str, Any] | None):
        super().__init__(api_client=object())  # type: ignore[arg-type]
        self.stored = copy.deepcopy(stored)
        self.requests: list[tuple[str, dict[str, Any] | None]] = []

    def _call(self, method: str, path: str, *, body: Any = None, **_: Any) -> dict[str, Any]:
        self.requests.append((method, body))
        if method == "GET":
            if self.stored is None:
                raise ApiException(status=404, reason="NotFound")
            return copy.deepcopy(self.stored)
        if method == "POST":
            if self.stored is not None:
                raise ApiException(status=409, reason="AlreadyExists")
            self.stored = copy.deepcopy(body)
            return copy.deepcopy(body)
        if method == "PATCH":
            version = (body.get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
            if version is not None and self.stored and version != self.stored["metadata"]["resourceVersion"]:
                raise ApiException(status=409, reason="Conflict")
            return copy.deepcopy(self.stored or {})
        raise AssertionError(method)

    def methods(self) -> list[str]:
        return [method for method, _ in self.requests]


def test_apply_never_writes_over_an_object_another_owner_controls() -> None:
    kube = Exchange(config_map(owner_uid="uid-someone-else"))
    with pytest.raises(NotOurs, match="controlled by FineTuneJob ner uid uid-someone-else"):
        kube.apply(manifest())
    assert kube.methods() == ["GET"]


def test_apply_never_writes_over_an_object_without_a_controller_made_by_someone_else() -> None:
    kube = Exchange(config_map(owner_uid=None, manager="helm", **{"kubetune.io/finetunejob": "ner"}))
    with pytest.raises(NotOurs, match="written by helm"):
        kube.apply(manifest())
    assert "PATCH" not in kube.methods()


def test_apply_writes_over_its_own_object_with_the_version_it_checked() -> None:
    kube = Exchange(config_map())
    kube.apply(manifest())
    assert kube.methods() == ["GET", "PATCH"]
    assert kube.requests[-1][1]["metadata"]["resourceVersion"] == "7"


def test_apply_readopts_its_own_orphan() -> None:
    kube = Exchange(config_map(owner_uid=None, **{"kubetune.io/finetunejob": "ner"}))
    kube.apply(manifest())
    assert kube.methods() == ["GET", "PATCH"]


def test_without_adoption_its_own_orphan_is_named_for_deletion_and_left_alone() -> None:
    # The chart's adoptOrphans: false grants no delete verb, without which the API server refuses to set
    # an ownerReference (OwnerReferencesPermissionEnforcement).
    kube = Exchange(config_map(owner_uid=None, **{"kubetune.io/finetunejob": "ner"}))
    kube.adopt_orphans = False
    with pytest.raises(NotOurs) as refused:
        kube.apply(manifest())
    assert kube.methods() == ["GET"]
    assert "orphaned by `kubectl delete --cascade=orphan`" in str(refused.value)
    assert "adoptOrphans" in str(refused.value) and "delete it" in str(refused.value)


def test_an_object_that_changed_hands_after_the_check_is_not_taken_over() -> None:
    kube = Exchange(config_map())
    real_get = kube._call

    def get_then_someone_takes_it(method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        answer = real_get(method, path, **kwargs)
        if method == "GET":
            kube.stored["metadata"]["resourceVersion"] = "8"  # type: ignore[index]
            kube.stored["metadata"]["ownerReferences"][0]["uid"] = "uid-someone-else"  # type: ignore[index]
        return answer

    kube._call = get_then_someone_takes_it  # type: ignore[method-assign]
    with pytest.raises(ApiException) as conflict:
        kube.apply(manifest())
    assert conflict.value.status == 409


def test_an_object_missing_at_the_check_is_created_not_applied() -> None:
    """A forced apply would take over an object someone creates between the read and the write."""
    kube = Exchange(None)
    kube.apply(manifest())
    assert kube.methods() == ["GET", "POST"]


def test_ensure_over_another_owners_object_refuses() -> None:
    kube = Exchange(config_map(owner_uid="uid-someone-else"))
    with pytest.raises(NotOurs):
        kube.ensure(manifest())
    assert kube.methods() == ["POST", "GET"]


def test_orphan_adoption_is_on_unless_the_installation_says_false() -> None:
    from kubetune.config import OperatorConfig

    assert OperatorConfig.from_env({}).adopt_orphans is True
    assert OperatorConfig.from_env({"KUBETUNE_ADOPT_ORPHANS": "false"}).adopt_orphans is False
    with pytest.raises(ValueError, match="KUBETUNE_ADOPT_ORPHANS"):
        OperatorConfig.from_env({"KUBETUNE_ADOPT_ORPHANS": "no"})
