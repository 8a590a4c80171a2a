"""The operator's writes against the real API server (kubetune/kube.py): one request to create, and an
object it created is later applied as if it had been applied from the start."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from kubetune.kube import Kube, NotOurs
from tests.kube import wait_established, widget_crd


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


# A kind of the test's own: no operator writes it, so each call's requests and effects are the test's alone.
WIDGETS = widget_crd(
    "test.kubetune.io", {"status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}
)


@pytest.fixture(scope="module")
def widgets(api: client.ApiClient) -> Iterator[None]:
    from kubetune.kube import KINDS, Kind

    extensions = client.ApiextensionsV1Api(api)
    name = WIDGETS["metadata"]["name"]
    with contextlib.suppress(client.ApiException):
        extensions.create_custom_resource_definition(WIDGETS)
    wait_established(extensions, name)
    KINDS["Widget"] = Kind("test.kubetune.io/v1", "widgets")
    yield
    del KINDS["Widget"]
    extensions.delete_custom_resource_definition(name)


class CountingKube(Kube):
    """The real client, counting the requests it makes."""

    requests = 0

    def _call(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.requests += 1
        return super()._call(*args, **kwargs)

    def counted(self, call: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], int]:
        before = self.requests
        result = call()
        return result, self.requests - before


def test_a_status_write_with_what_it_last_read_is_one_request(
    namespace: str, widgets: None, api: client.ApiClient
) -> None:
    from kubernetes.client.rest import ApiException

    kube = CountingKube(api)
    widget = kube.create(
        {
            "apiVersion": "test.kubetune.io/v1",
            "kind": "Widget",
            "metadata": {"name": "w", "namespace": namespace},
        }
    )
    uid = widget["metadata"]["uid"]

    # No status yet: the whole status, after a test that there is none.
    first, requests = kube.counted(
        lambda: kube.patch_status(
            "Widget", namespace, "w", {"phase": "Pending", "reason": "Created", "message": None}, uid, {}
        )
    )
    assert (first["status"], requests) == ({"phase": "Pending", "reason": "Created"}, 1)

    # Someone else's field (the launcher's progress) is kept, a None removes a field, the rest is set whole.
    kube.patch_status("Widget", namespace, "w", {"progress": {"step": 3}})
    read = kube.get("Widget", namespace, "w")
    assert read is not None
    status = {"phase": "Running", "reason": None, "output": {"path": "/out"}}
    second, requests = kube.counted(
        lambda: kube.patch_status("Widget", namespace, "w", status, uid, read["status"])
    )
    assert (second["status"], requests) == (
        {"phase": "Running", "progress": {"step": 3}, "output": {"path": "/out"}},
        1,
    )

    # A stale read (no status, when there is one now): the JSON patch is refused, and the merge patch writes.
    third, requests = kube.counted(
        lambda: kube.patch_status("Widget", namespace, "w", {"phase": "Succeeded"}, uid, {})
    )
    assert third["status"] == {"phase": "Succeeded", "progress": {"step": 3}, "output": {"path": "/out"}}
    assert requests == 3

    # Another object of the same name: nothing is written, and the conflict says so.
    with pytest.raises(ApiException) as refused:
        kube.patch_status("Widget", namespace, "w", {"phase": "Failed"}, "not-" + uid, third["status"])
    assert refused.value.status == 409
    assert (kube.get("Widget", namespace, "w") or {})["status"]["phase"] == "Succeeded"
