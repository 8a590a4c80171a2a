"""The operator's writes against the real API server (kubetune/kube.py): one request to create, and an
object it created is later applied as if it had been applied from the start."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from kubetune.kube import Kube, NotOurs


def config_map(namespace: str, owner: client.V1ConfigMap, data: dict[str, str]) -> dict[str, Any]:
    reference = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": owner.metadata.name,
        "uid": owner.metadata.uid,
        "controller": True,
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "child", "namespace": namespace, "ownerReferences": [reference]},
        "data": data,
    }


def managers(obj: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f["manager"], f["operation"]) for f in obj["metadata"]["managedFields"]]


def test_a_created_child_drops_a_field_its_rendering_no_longer_has(
    namespace: str, api: client.ApiClient, core: client.CoreV1Api
) -> None:
    kube = Kube(api)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    created = kube.ensure(config_map(namespace, owner, {"keep": "1", "drop": "2"}))
    assert managers(created) == [("kubetune", "Update")]  # a create: one request, no read first

    # The next attempt renders it without `drop`: the create's fields were handed to the apply.
    again = kube.ensure(config_map(namespace, owner, {"keep": "1"}))
    assert again["data"] == {"keep": "1"}
    assert managers(again) == [("kubetune", "Apply")]


def test_ensure_never_writes_over_someone_elses_object(
    namespace: str, api: client.ApiClient, core: client.CoreV1Api
) -> None:
    kube = Kube(api)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "child"}, "data": {"theirs": "x"}})
    with pytest.raises(NotOurs, match="ConfigMap child already exists"):
        kube.ensure(config_map(namespace, owner, {"ours": "1"}))
    assert core.read_namespaced_config_map("child", namespace).data == {"theirs": "x"}


def test_writes_with_the_owners_uid_never_reach_a_successor_of_the_same_name(
    namespace: str, crds: None, api: client.ApiClient
) -> None:
    """The status patch's `metadata.uid` and the delete's `preconditions.uid` are preconditions for the API
    server: a stale copy of a deleted FineTuneJob cannot write onto, or delete, a new one of its name."""
    from kubernetes.client.rest import ApiException

    from tests.integration.finetunejobs import FineTuneJobs
    from tests.specs import finetunejob

    kube = Kube(api)
    ftjs = FineTuneJobs(api, namespace)
    old = ftjs.create(finetunejob("ner", suspend=True))
    ftjs.delete("ner")
    new = ftjs.create(finetunejob("ner", suspend=True))
    assert new["metadata"]["uid"] != old["metadata"]["uid"]

    with pytest.raises(ApiException) as refused:
        kube.patch_status("FineTuneJob", namespace, "ner", {"phase": "Succeeded"}, old["metadata"]["uid"])
    assert refused.value.status == 409
    assert kube.delete("FineTuneJob", namespace, "ner", uid=old["metadata"]["uid"]) is False
    assert ftjs.exists("ner") and (ftjs.get("ner").get("status") or {}).get("phase") != "Succeeded"

    # What the API server returned: the session's operator may write this status again at any moment.
    written = kube.patch_status("FineTuneJob", namespace, "ner", {"message": "ours"}, new["metadata"]["uid"])
    assert written["status"]["message"] == "ours"
    assert kube.delete("FineTuneJob", namespace, "ner", uid=new["metadata"]["uid"]) is True
