"""The in-memory client keeps `kubetune.kube.Kube`'s semantics that the reconcile tables rely on."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from kubetune.kube import ChildRefused, NotOurs
from tests.fakekube import Call, FakeKube

NS = "team-a"
OWNER = {"kind": "FineTuneJob", "name": "ner", "uid": "owner-uid", "controller": True}


def config_map(data: dict[str, str] | None = None, owner: dict[str, Any] | None = OWNER, **labels: str):
    meta: dict[str, Any] = {"name": "ner-config", "namespace": NS, "labels": labels}
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data or {"a": "1"}}


def job(suspend: bool = False) -> dict[str, Any]:
    meta = {"name": "ner-a1", "namespace": NS, "ownerReferences": [OWNER]}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": {"suspend": suspend}}


def test_a_new_object_gets_its_identity() -> None:
    fake = FakeKube()
    made = fake.ensure(config_map())
    meta = made["metadata"]
    assert meta["uid"] and meta["resourceVersion"] and meta["creationTimestamp"]
    assert meta["generation"] == 1 and meta["ownerReferences"] == [OWNER]
    assert fake.get("ConfigMap", NS, "ner-config") == made


def test_an_apply_of_the_same_manifest_changes_nothing() -> None:
    fake = FakeKube()
    first = fake.apply(job())
    again = fake.apply(job())
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    assert fake.writes() == [Call("apply", "Job", "ner-a1")] * 2
    assert fake.changes() == [Call("apply", "Job", "ner-a1")]


def test_a_spec_change_moves_the_generation_a_status_change_does_not() -> None:
    fake = FakeKube()
    fake.apply(job())
    suspended = fake.patch_merge("Job", NS, "ner-a1", {"spec": {"suspend": True}})
    assert suspended["metadata"]["generation"] == 2 and suspended["spec"]["suspend"] is True
    with_status = fake.patch_status("Job", NS, "ner-a1", {"active": 1})
    assert with_status["metadata"]["generation"] == 2
    assert with_status["metadata"]["resourceVersion"] != suspended["metadata"]["resourceVersion"]


def test_patch_status_merges_into_status_only() -> None:
    fake = FakeKube()
    fake.apply(job())
    fake.patch_status("Job", NS, "ner-a1", {"active": 1, "conditions": [{"type": "X"}]})
    patched = fake.patch_status("Job", NS, "ner-a1", {"active": 2})
    assert patched["status"] == {"active": 2, "conditions": [{"type": "X"}]}
    assert patched["spec"] == {"suspend": False}


def test_a_status_write_with_what_was_read_is_kubes_json_patch() -> None:
    """As Kube's: each given field set whole, None removes one; a status unlike the one read (a write
    meanwhile) is refused by the patch's tests and goes as a merge patch instead."""
    fake = FakeKube()
    uid = fake.apply(job())["metadata"]["uid"]
    first = fake.patch_status("Job", NS, "ner-a1", {"active": 1, "conditions": [{"type": "X"}]}, uid, {})
    assert first["status"] == {"active": 1, "conditions": [{"type": "X"}]}
    read = first["status"]
    patched = fake.patch_status("Job", NS, "ner-a1", {"active": None, "ready": 1}, uid, read)
    assert patched["status"] == {"conditions": [{"type": "X"}], "ready": 1}
    # Read before any status: the patch's test of no status fails, and the merge patch keeps the rest.
    stale = fake.patch_status("Job", NS, "ner-a1", {"active": 3}, uid, {})
    assert stale["status"] == {"conditions": [{"type": "X"}], "ready": 1, "active": 3}
    with pytest.raises(ApiException) as moved:
        fake.patch_status("Job", NS, "ner-a1", {"active": 4}, "another-uid", read)
    assert moved.value.status == 409


def test_writes_to_a_missing_object_are_404_and_creating_an_existing_one_409() -> None:
    fake = FakeKube()
    with pytest.raises(ApiException) as missing:
        fake.patch_status("Job", NS, "ner-a1", {"active": 1})
    assert missing.value.status == 404
    fake.create(job())
    with pytest.raises(ApiException) as exists:
        fake.create(job())
    assert exists.value.status == 409


def test_someone_elses_object_is_not_ours_and_left_alone() -> None:
    fake = FakeKube()
    theirs = fake.add(config_map({"theirs": "x"}, owner=None), manager="helm")
    for write in (fake.apply, fake.ensure):
        with pytest.raises(NotOurs, match="written by helm"):
            write(config_map())
    assert fake.get_quietly("ConfigMap", NS, "ner-config") == theirs
    assert fake.changes() == []


def test_another_owners_object_is_not_ours() -> None:
    fake = FakeKube()
    fake.ensure(config_map(owner={**OWNER, "uid": "earlier-uid"}, **{"kubetune.io/finetunejob": "ner"}))
    with pytest.raises(NotOurs, match="uid earlier-uid"):
        fake.apply(config_map(**{"kubetune.io/finetunejob": "ner"}))


def test_the_operators_own_orphan_is_taken_back() -> None:
    fake = FakeKube()
    labels = {"kubetune.io/finetunejob": "ner"}
    fake.add(config_map(owner=None, **labels), manager="kubetune")
    adopted = fake.apply(config_map(**labels))
    assert adopted["metadata"]["ownerReferences"] == [OWNER]


def test_an_apply_keeps_what_others_wrote_and_drops_what_it_rendered_before() -> None:
    fake = FakeKube()
    fake.apply(config_map({"a": "1", "b": "2"}))
    fake.objects[("ConfigMap", NS, "ner-config")]["data"]["sidecar"] = "report"
    applied = fake.apply(config_map({"a": "1"}))
    assert applied["data"] == {"a": "1", "sidecar": "report"}


def test_a_refused_child_is_child_refused() -> None:
    fake = FakeKube()
    fake.refuse("Job", "ner-a1", "spec.template.spec.nodeSelector: Invalid value")
    with pytest.raises(ChildRefused, match="nodeSelector"):
        fake.ensure(job())
    assert fake.get_quietly("Job", NS, "ner-a1") is None


def test_delete_owned_deletes_only_what_the_uid_controls() -> None:
    fake = FakeKube()
    fake.apply(config_map())
    assert not fake.delete_owned("ConfigMap", NS, "ner-config", "another-uid")
    assert fake.get_quietly("ConfigMap", NS, "ner-config") is not None
    assert fake.delete_owned("ConfigMap", NS, "ner-config", "owner-uid")
    assert fake.get_quietly("ConfigMap", NS, "ner-config") is None
    assert not fake.delete_owned("ConfigMap", NS, "ner-config", "owner-uid")


@pytest.mark.parametrize(("propagation", "job_left"), [("Background", False), ("Orphan", True)])
def test_a_deletion_takes_the_dependents_unless_orphaned(propagation: str, job_left: bool) -> None:
    fake = FakeKube()
    owner = fake.add(
        {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "ner"}}
    )
    dependent = job()
    dependent["metadata"]["ownerReferences"] = [{**OWNER, "uid": owner["metadata"]["uid"]}]
    fake.apply(dependent)
    fake.delete("FineTuneJob", NS, "ner", propagation)
    left = fake.get_quietly("Job", NS, "ner-a1")
    assert (left is not None) == job_left
    if left is not None:
        assert left["metadata"]["ownerReferences"] == []


def test_a_kind_not_served_is_a_404_to_writes_and_absent_to_reads() -> None:
    fake = FakeKube(not_installed={"ScaledObject"})
    manifest = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "x", "namespace": NS},
    }
    with pytest.raises(ApiException) as error:
        fake.apply(manifest)
    assert error.value.status == 404
    assert fake.get("ScaledObject", NS, "x") is None
    assert fake.delete_owned("ScaledObject", NS, "x", "owner-uid") is False


def test_list_selects_by_labels_and_namespace() -> None:
    fake = FakeKube()
    fake.add(config_map(owner=None, app="a"))
    fake.add({**config_map(owner=None, app="b"), "metadata": {"name": "other", "labels": {"app": "b"}}})
    fake.add(config_map(owner=None, app="a"), namespace="team-b")
    assert [o["metadata"]["name"] for o in fake.list("ConfigMap", NS, {"app": "b"})] == ["other"]
    assert len(fake.list("ConfigMap", None, {"app": "a"})) == 1  # the other namespace's keeps its own
    assert len(fake.list("ConfigMap", NS)) == 2


def test_the_job_controller_helpers() -> None:
    fake = FakeKube()
    made = fake.ensure(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "ner-a1", "namespace": NS},
            "spec": {"parallelism": 2, "template": {"metadata": {"labels": {"kubetune.io/attempt": "1"}}}},
        }
    )
    pods = fake.job_running(made)
    assert [p["status"]["phase"] for p in pods] == ["Running", "Running"]
    assert all(p["metadata"]["labels"] == {"kubetune.io/attempt": "1"} for p in pods)
    failed = fake.job_failed(made)
    assert {c["type"] for c in failed["status"]["conditions"]} == {"FailureTarget", "Failed"}
    assert [p["status"]["phase"] for p in fake.pods_of(made)] == ["Failed", "Failed"]
    assert fake.calls == [Call("ensure", "Job", "ner-a1")], "the other controllers' writes are not recorded"


def test_ensure_all_tries_every_one_then_raises_the_first_error() -> None:
    fake = FakeKube()
    fake.add(config_map(owner=None), manager="helm")
    other = config_map()
    other["metadata"]["name"] = "ner-other"
    with pytest.raises(NotOurs):
        fake.ensure_all([config_map(), other])
    assert fake.get_quietly("ConfigMap", NS, "ner-other") is not None
    assert fake.writes() == [
        Call("ensure", "ConfigMap", "ner-config"),
        Call("ensure", "ConfigMap", "ner-other"),
    ]
