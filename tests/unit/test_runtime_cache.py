"""The watch caches and what an event queues (runtime/cache.py, runtime/controller.py's Controller)."""

from __future__ import annotations

from typing import Any

import pytest

from kubetune.config import OperatorConfig
from kubetune.handlers.watches import RECONCILERS
from kubetune.runtime import cache as cache_module
from kubetune.runtime.cache import OWN_WRITE, Cache, manifest_hash, written_mark
from kubetune.runtime.controller import Controller
from kubetune.runtime.outcome import Key


def obj(
    kind: str, name: str, namespace: str = "ns", rv: str = "1", uid: str | None = None, **extra: Any
) -> dict:
    meta = {"name": name, "namespace": namespace, "resourceVersion": rv, "uid": uid or f"uid-{name}"}
    meta.update(extra.pop("metadata", {}))
    return {"kind": kind, "metadata": meta, **extra}


def pod(name: str, owner: str, phase: str = "Running", rv: str = "1", **labels: str) -> dict:
    return obj(
        "Pod", name, rv=rv,
        metadata={
            "labels": {"kubetune.io/finetunejob": owner, **labels},
            "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}],
        },
        spec={"containers": [{"name": "trainer", "args": ["y" * 999]}], "nodeName": "n1"},
        status={"phase": phase},
    )  # fmt: skip


def test_a_pod_is_kept_without_its_spec_and_field_managers() -> None:
    cache = Cache()
    cache.upsert("Pod", pod("p0", "a"))
    kept = cache.get("Pod", "ns", "p0")
    assert kept == {
        "metadata": {
            "name": "p0", "namespace": "ns", "resourceVersion": "1", "uid": "uid-p0",
            "labels": {"kubetune.io/finetunejob": "a"},
        },
        "spec": {"nodeName": "n1"},
        "status": {"phase": "Running"},
    }  # fmt: skip


def test_a_job_keeps_suspend_not_its_template() -> None:
    cache = Cache()
    job = obj(
        "Job", "a-a1", spec={"suspend": True, "template": {"spec": {"containers": []}}}, status={"active": 1}
    )
    cache.upsert("Job", job)
    assert cache.get("Job", "ns", "a-a1")["spec"] == {"suspend": True}


def test_a_jobs_pod_failure_policy_and_other_spec_fields_are_not_kept() -> None:
    cache = Cache()
    spec = {"parallelism": 2, "backoffLimit": 3, "podFailurePolicy": {"rules": [{"action": "FailJob"}]}}
    cache.upsert("Job", obj("Job", "a-a1", spec=spec, status={"active": 1}))
    assert cache.get("Job", "ns", "a-a1")["spec"] == {}


def test_a_pods_status_keeps_what_says_why_it_waits_or_failed_not_its_addresses_times_or_images() -> None:
    waiting = {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}}
    last = {"terminated": {"exitCode": 137, "reason": "OOMKilled", "message": "killed"}}
    container = {
        "name": "trainer", "state": waiting, "lastState": last, "restartCount": 2, "ready": False,
        "started": False, "image": "trainer:1", "imageID": "sha256:ab", "containerID": "containerd://cd",
    }  # fmt: skip
    condition = {
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes",
        "lastProbeTime": None, "lastTransitionTime": "2026-12-05T00:00:00Z",
    }  # fmt: skip
    status = {
        "phase": "Failed", "reason": "Evicted", "message": "low on memory", "conditions": [condition],
        "containerStatuses": [container], "initContainerStatuses": [{**container, "name": "fetch"}],
        "hostIP": "10.0.0.1", "hostIPs": [{"ip": "10.0.0.1"}],
        "podIP": "10.1.0.1", "podIPs": [{"ip": "10.1.0.1"}],
        "startTime": "2026-12-05T00:00:00Z", "qosClass": "Guaranteed",
    }  # fmt: skip
    cache = Cache()
    cache.upsert("Pod", {**pod("p0", "a"), "status": status})

    kept_container = {"state": waiting, "lastState": last, "restartCount": 2}
    kept_condition = {k: condition[k] for k in ("type", "status", "reason", "message")}
    assert cache.get("Pod", "ns", "p0")["status"] == {
        "phase": "Failed", "reason": "Evicted", "message": "low on memory",
        "conditions": [kept_condition],
        "containerStatuses": [{"name": "trainer", **kept_container}],
        "initContainerStatuses": [{"name": "fetch", **kept_container}],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "hashed"),
    [("ConfigMap", True), ("Deployment", True), ("HorizontalPodAutoscaler", True), ("Job", False)],
)
def test_the_written_mark_names_the_rendering_only_where_a_copy_must_stand_as_written(
    kind: str, hashed: bool
) -> None:
    manifest = obj(kind, "a", data={"k": "v"})
    assert written_mark(kind, manifest) == (manifest_hash(manifest) if hashed else OWN_WRITE)
    assert written_mark(kind, None) is None


def test_listing_by_owner_label_finds_only_that_owners_objects() -> None:
    cache = Cache()
    for index in range(3):
        cache.upsert("Pod", pod(f"a-{index}", "a", **{"kubetune.io/attempt": str(index % 2 + 1)}))
    cache.upsert("Pod", pod("b-0", "b"))
    cache.upsert(
        "Pod", {**pod("a-other-ns", "a"), "metadata": {**pod("x", "a")["metadata"], "namespace": "other"}}
    )
    names = [p["metadata"]["name"] for p in cache.list("Pod", "ns", {"kubetune.io/finetunejob": "a"})]
    assert names == ["a-0", "a-1", "a-2"]
    attempt = cache.list("Pod", "ns", {"kubetune.io/finetunejob": "a", "kubetune.io/attempt": "2"})
    assert [p["metadata"]["name"] for p in attempt] == ["a-1"]
    assert len(cache.list("Pod")) == 5


def test_a_relabelled_object_leaves_its_old_owners_listing() -> None:
    cache = Cache()
    cache.upsert("Pod", pod("p", "a", rv="1"))
    cache.upsert("Pod", pod("p", "b", rv="2"))
    assert cache.list("Pod", "ns", {"kubetune.io/finetunejob": "a"}) == []
    assert len(cache.list("Pod", "ns", {"kubetune.io/finetunejob": "b"})) == 1


def test_an_older_version_never_replaces_a_newer_one() -> None:
    cache = Cache()
    cache.upsert("Pod", pod("p", "a", phase="Running", rv="20"))
    assert not cache.upsert("Pod", pod("p", "a", phase="Pending", rv="9"))
    assert cache.get("Pod", "ns", "p")["status"]["phase"] == "Running"


def test_a_recreated_object_replaces_the_old_one_whatever_its_version() -> None:
    cache = Cache()
    cache.upsert("Job", obj("Job", "j", rv="50", uid="old"))
    assert cache.upsert("Job", obj("Job", "j", rv="3", uid="new"))
    assert cache.get("Job", "ns", "j")["metadata"]["uid"] == "new"


def test_what_a_reader_changes_does_not_change_the_cache() -> None:
    cache = Cache()
    ready = {"type": "Ready", "status": "True"}
    cache.upsert("Pod", {**pod("p", "a"), "status": {"phase": "Running", "conditions": [ready]}})
    read = cache.get("Pod", "ns", "p")
    read["status"]["phase"] = "Failed"
    read["status"]["conditions"][0]["status"] = "False"
    read["status"]["conditions"].append({"type": "DisruptionTarget", "status": "True"})
    cache.list("Pod", "ns")[0]["metadata"]["labels"].clear()
    assert cache.get("Pod", "ns", "p")["status"] == {"phase": "Running", "conditions": [ready]}
    assert cache.list("Pod", "ns", {"kubetune.io/finetunejob": "a"})[0]["metadata"]["labels"]


def test_a_writes_reply_after_the_deletion_does_not_bring_the_object_back() -> None:
    """The reply of a write (kept at once) can come after the watch's DELETED event: it is refused, or a
    ghost would be reconciled every resync and its children created again for a dead owner."""
    controller = Controller(kube=None, config=OperatorConfig(), reconcilers=RECONCILERS, batch_seconds=0)  # type: ignore[arg-type]
    deployment = obj("Deployment", "qwen-vllm", rv="5", uid="uid-old")
    controller.observed("Deployment", "ADDED", deployment)
    controller.observed("Deployment", "DELETED", deployment)
    late_reply = obj("Deployment", "qwen-vllm", rv="6", uid="uid-old")
    assert controller.cache.upsert("Deployment", late_reply) is False
    assert controller.cache.get("Deployment", "ns", "qwen-vllm") is None
    successor = obj("Deployment", "qwen-vllm", rv="9", uid="uid-new")
    assert controller.cache.upsert("Deployment", successor) is True


def test_removing_a_copy_by_uid_keeps_a_successor_of_the_same_name() -> None:
    cache = Cache()
    cache.upsert("FineTuneJob", obj("FineTuneJob", "ner", rv="9", uid="uid-new"))
    cache.remove("FineTuneJob", "ns", "ner", uid="uid-old")
    assert cache.get("FineTuneJob", "ns", "ner")["metadata"]["uid"] == "uid-new"
    assert cache.upsert("FineTuneJob", obj("FineTuneJob", "ner", rv="3", uid="uid-old")) is False


def test_the_tombstones_are_bounded() -> None:
    cache = Cache(tombstones=3)
    for index in range(10):
        cache.upsert("Pod", obj("Pod", f"p{index}", uid=f"u{index}"))
        cache.remove("Pod", "ns", f"p{index}")
    assert len(cache._deleted) == 3
    assert cache.upsert("Pod", obj("Pod", "p0", uid="u0")) is True  # forgotten: the oldest go first
    assert cache.upsert("Pod", obj("Pod", "p9", uid="u9")) is False


def test_a_status_write_refused_for_a_gone_resource_drops_the_ghost() -> None:
    from kubernetes.client.rest import ApiException

    from kubetune.runtime.cache import CachedKube

    class Gone:
        def patch_status(self, *args: Any) -> dict:
            raise ApiException(status=404, reason="NotFound")

    cache = Cache()
    cache.upsert("ModelServe", obj("ModelServe", "qwen", uid="uid-ghost"))
    client = CachedKube(Gone(), cache)  # type: ignore[arg-type]
    with pytest.raises(ApiException):
        client.patch_status("ModelServe", "ns", "qwen", {"phase": "Ready"}, "uid-ghost")
    assert cache.get("ModelServe", "ns", "qwen") is None


@pytest.fixture
def controller() -> Controller:
    # A child's change is queued at once here; its batching has a test of its own.
    return Controller(kube=None, config=OperatorConfig(), reconcilers=RECONCILERS, batch_seconds=0)  # type: ignore[arg-type]


def queued(controller: Controller) -> list[Key]:
    out = []
    while (item := controller.queue.get(timeout=0)) is not None:
        out.append(item.key)
        controller.queue.done(item.key)
    return out


def ftj(name: str, generation: int = 1, observed: int | None = None, claim: str = "shared") -> dict:
    status = {"observedGeneration": observed} if observed is not None else {}
    return obj(
        "FineTuneJob",
        name,
        metadata={"generation": generation},
        spec={"storage": {"claim": claim}},
        status=status,
    )


def test_events_of_a_jobs_pods_queue_it_once(controller: Controller) -> None:
    for index in range(64):
        controller.observed("Pod", "MODIFIED", pod(f"wide-{index}", "wide"))
    controller.observed(
        "Job", "MODIFIED", obj("Job", "wide-a1", metadata={"labels": {"kubetune.io/finetunejob": "wide"}})
    )
    assert queued(controller) == [Key("FineTuneJob", "ns", "wide")]


def test_a_jobs_counts_moving_queue_nothing_its_conditions_and_suspend_do(controller: Controller) -> None:
    labels = {"kubetune.io/finetunejob": "a"}

    def job(status: dict, suspend: bool = False) -> dict:
        return obj("Job", "a-a1", metadata={"labels": labels}, spec={"suspend": suspend}, status=status)

    controller.observed("Job", "ADDED", job({}))
    queued(controller)
    controller.observed("Job", "MODIFIED", job({"active": 1, "startTime": "2026-12-05T00:00:00Z"}))
    controller.observed("Job", "MODIFIED", job({"active": 1, "ready": 1}))
    assert queued(controller) == [], "a Job's counts follow its pods, whose events queue the owner"
    ended = {"conditions": [{"type": "SuccessCriteriaMet", "status": "True"}], "active": 1}
    controller.observed("Job", "MODIFIED", job(ended))
    assert queued(controller) == [Key("FineTuneJob", "ns", "a")]
    controller.observed("Job", "MODIFIED", job(ended, suspend=True))
    assert queued(controller) == [Key("FineTuneJob", "ns", "a")]


def test_the_operators_own_status_write_queues_nothing(controller: Controller) -> None:
    controller.observed("FineTuneJob", "MODIFIED", ftj("a", generation=2, observed=2))
    assert queued(controller) == []
    controller.observed("FineTuneJob", "MODIFIED", ftj("a", generation=3, observed=2))  # a spec edit
    controller.observed("FineTuneJob", None, ftj("b", generation=1, observed=1))  # listed at start
    assert queued(controller) == [Key("FineTuneJob", "ns", "a"), Key("FineTuneJob", "ns", "b")]


def test_a_deleted_object_leaves_the_cache_and_wakes_its_owner(controller: Controller) -> None:
    controller.observed("Pod", "ADDED", pod("p", "a"))
    queued(controller)
    controller.observed("Pod", "DELETED", pod("p", "a"))
    assert controller.cache.get("Pod", "ns", "p") is None
    assert queued(controller) == [Key("FineTuneJob", "ns", "a")]


def test_a_claim_created_wakes_what_waits_for_it(controller: Controller) -> None:
    controller.observed("FineTuneJob", "ADDED", ftj("uses-it"))
    controller.observed("FineTuneJob", "ADDED", ftj("another", claim="other"))
    queued(controller)
    controller.observed("PersistentVolumeClaim", "ADDED", obj("PersistentVolumeClaim", "shared"))
    assert queued(controller) == [Key("FineTuneJob", "ns", "uses-it")]
    controller.observed("PersistentVolumeClaim", "MODIFIED", obj("PersistentVolumeClaim", "shared", rv="2"))
    assert queued(controller) == []


def serving(name: str, job: str, **reported: Any) -> dict:
    """A ModelServe serving adapter `ner` of FineTuneJob `job`; its status says `reported` of it."""
    status = {"adapters": [{"name": "ner", **reported}]} if reported else {}
    return obj("ModelServe", name, spec={"adapters": [{"name": "ner", "fineTuneJob": job}]}, status=status)


def finished(name: str, phase: str) -> dict:
    body = ftj(name, observed=1)
    body["status"]["phase"] = phase
    return body


WAITING = {"ready": False, "reason": "WaitingForFineTuneJob"}
NOT_FOUND = {"ready": False, "reason": "FineTuneJobNotFound"}
FAILED = {"ready": False, "reason": "FineTuneJobFailed"}
LOADING = {"ready": False, "reason": "Loading"}
SERVED = {"ready": True}


@pytest.mark.parametrize(
    ("reported", "event_type", "job", "queued_again"),
    [
        (WAITING, "MODIFIED", finished("ner", "Succeeded"), True),  # its adapter is ready now
        (WAITING, "MODIFIED", finished("ner", "Failed"), True),  # it never will be
        (WAITING, "MODIFIED", finished("ner", "Running"), False),  # progress: nothing to decide
        (NOT_FOUND, None, ftj("ner"), True),  # listed at start: it exists now
        (NOT_FOUND, "ADDED", ftj("ner"), True),  # the job appeared
        (FAILED, "MODIFIED", finished("ner", "Succeeded"), True),  # created again, and trained
        (LOADING, "MODIFIED", finished("ner", "Succeeded"), False),  # already knows: the sidecars load it
        (SERVED, None, finished("ner", "Succeeded"), False),  # the resync's listing: nothing new
        (FAILED, "MODIFIED", finished("ner", "Failed"), False),
        (SERVED, "DELETED", finished("ner", "Succeeded"), True),  # serving goes on, saying so
        ({}, "MODIFIED", finished("ner", "Succeeded"), False),  # not reported yet: its own pass resolves it
    ],
)
def test_a_finetunejob_queues_the_modelserves_whose_status_is_behind_it(
    controller: Controller, reported: dict, event_type: str | None, job: dict, queued_again: bool
) -> None:
    controller.cache.upsert("ModelServe", serving("qwen", "ner", **reported))
    controller.cache.upsert("ModelServe", serving("other", "sql", **WAITING))
    controller.observed("FineTuneJob", event_type, job)
    keys = [k for k in queued(controller) if k.kind == "ModelServe"]
    assert keys == ([Key("ModelServe", "ns", "qwen")] if queued_again else [])


@pytest.mark.parametrize(
    ("status", "job", "queued_again"),
    [
        ({"reason": "WaitingForFineTuneJob"}, finished("ner", "Succeeded"), True),
        ({"reason": "WaitingForFineTuneJob"}, finished("ner", "Running"), False),
        ({"reason": "FineTuneJobNotFound"}, ftj("ner"), True),  # the job created (ADDED)
        ({"reason": "Serving", "model": {"path": "runs/ns/ner/merged"}}, finished("ner", "Succeeded"), False),
        ({}, finished("ner", "Succeeded"), False),  # not reconciled yet: its own first pass resolves it
    ],
)
def test_a_finetunejob_queues_the_modelserves_of_its_model_whose_status_is_behind_it(
    controller: Controller, status: dict, job: dict, queued_again: bool
) -> None:
    modelserve = obj("ModelServe", "qwen", spec={"model": {"fineTuneJob": "ner"}}, status=status)
    controller.cache.upsert("ModelServe", modelserve)
    event_type = "MODIFIED" if (job.get("status") or {}).get("phase") else "ADDED"
    controller.observed("FineTuneJob", event_type, job)
    keys = [k for k in queued(controller) if k.kind == "ModelServe"]
    assert keys == ([Key("ModelServe", "ns", "qwen")] if queued_again else [])


def test_a_modelserves_pods_and_deployment_queue_the_modelserve(controller: Controller) -> None:
    labels = {"metadata": {"labels": {"kubetune.io/modelserve": "qwen"}}}
    controller.observed("Deployment", "MODIFIED", obj("Deployment", "qwen-vllm", **labels))
    controller.observed("Pod", "MODIFIED", obj("Pod", "qwen-vllm-x", **labels))
    assert queued(controller) == [Key("ModelServe", "ns", "qwen")]


def test_a_sidecars_report_wakes_its_modelserve_and_is_cached_with_its_data(
    controller: Controller,
) -> None:
    """The report ConfigMaps are watched (label_names.REPORTS_SELECTOR): a pod's report of what vLLM loaded
    queues the ModelServe at once, with no look again every few seconds while an adapter loads; a settled
    ModelServe reads the report from the cache."""
    labels = {"kubetune.io/modelserve": "qwen", "kubetune.io/adapter-report": "true"}
    report = obj("AdapterReport", "qwen-adapter-report", metadata={"labels": labels})
    report["data"] = {"qwen-vllm-x": '{"adapters": {}}'}
    controller.observed("AdapterReport", "MODIFIED", report)
    assert queued(controller) == [Key("ModelServe", "ns", "qwen")]
    cached = controller.cache.get("AdapterReport", "ns", "qwen-adapter-report") or {}
    assert cached["data"] == report["data"]


def test_the_resync_queues_what_can_still_change(controller: Controller) -> None:
    ran = [{"type": "Created", "status": "True"}]
    done = ftj("done")
    done["status"] = {"phase": "Succeeded", "conditions": ran}
    expiring = ftj("expiring")
    expiring["status"] = {"phase": "Failed", "conditions": ran}
    expiring["spec"]["ttlSecondsAfterFinished"] = 60
    refused = ftj("refused")  # Failed for its spec before it ran: a fixed spec proceeds
    refused["status"] = {"phase": "Failed"}
    for body in (ftj("running"), done, expiring, refused):
        controller.cache.upsert("FineTuneJob", body)
    controller.cache.upsert("ModelServe", obj("ModelServe", "qwen"))
    controller.resync()
    items = []
    while (item := controller.queue.get(timeout=0)) is not None:
        items.append((item.key.name, item.full))
        controller.queue.done(item.key)
    assert sorted(items) == [("expiring", True), ("qwen", True), ("refused", True), ("running", True)]


def test_scans_over_every_cached_resource_copy_none(
    controller: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The resync, a FineTuneJob's event and a claim's creation read a few fields of every resource in
    place: a copy of each was the whole cache again, allocated and dropped every minute."""
    for index in range(3):
        controller.cache.upsert("FineTuneJob", ftj(f"job-{index}"))
        controller.cache.upsert(
            "ModelServe", obj("ModelServe", f"serve-{index}", spec={"storage": {"claim": "c"}})
        )
    copies: list[Any] = []
    monkeypatch.setattr(cache_module, "copied", lambda value: copies.append(value) or value)

    controller.resync()
    controller.observed("FineTuneJob", "DELETED", ftj("job-0"))
    controller.observed("PersistentVolumeClaim", "ADDED", obj("PersistentVolumeClaim", "c"))

    assert copies == []
    assert {key.name for key in queued(controller)} == {
        *(f"job-{i}" for i in range(3)),
        *(f"serve-{i}" for i in range(3)),
    }


# --- a ModelServe's children: do they stand as the operator wrote them? ---------------------------------

CHILD_LABELS = {"app.kubernetes.io/managed-by": "kubetune", "kubetune.io/modelserve": "qwen"}
OWNED = [{"kind": "ModelServe", "name": "qwen", "uid": "uid-qwen", "controller": True}]


def child(rv: str, data: dict[str, str] | None = None, **meta: Any) -> dict:
    """The ModelServe's adapters ConfigMap, as the API server returns it."""
    metadata = {"labels": CHILD_LABELS, "ownerReferences": OWNED, **meta}
    return obj("ConfigMap", "qwen-adapters", rv=rv, metadata=metadata, data=data or {"adapters.json": "{}"})


def test_a_child_stands_from_the_operators_write_until_someone_changes_it() -> None:
    cache = Cache()
    assert cache.upsert("ConfigMap", child("1"))  # listed at start: who wrote it last is not known
    assert not cache.stands("ConfigMap", "ns", "qwen-adapters")
    cache.upsert("ConfigMap", child("2"), written="w")  # what the operator's apply returned
    assert cache.stands("ConfigMap", "ns", "qwen-adapters", "uid-qwen")
    assert not cache.stands("ConfigMap", "ns", "qwen-adapters", "uid-other")
    cache.upsert("ConfigMap", child("2"))  # the watch's event of that write
    cache.upsert("ConfigMap", child("3", annotations={"note": "x"}))  # someone's annotation: no content
    assert cache.stands("ConfigMap", "ns", "qwen-adapters")
    cache.upsert("ConfigMap", child("4", data={"adapters.json": '{"x": "/mnt/claim/x"}'}))  # an edit
    assert not cache.stands("ConfigMap", "ns", "qwen-adapters")
    cache.upsert("ConfigMap", child("5"), written="w")  # written back
    assert cache.stands("ConfigMap", "ns", "qwen-adapters")
    cache.remove("ConfigMap", "ns", "qwen-adapters")
    assert not cache.stands("ConfigMap", "ns", "qwen-adapters")


def test_only_a_modelserves_children_are_tracked_and_none_is_read_in_place_of_a_get() -> None:
    from kubetune.runtime.cache import CachedKube

    cache = Cache()
    theirs = obj("ConfigMap", "dataset", data={"dataset_info.json": "{}"})
    assert not cache.upsert("ConfigMap", theirs, written="x")  # no watch would ever bring its deletion

    class Api:
        def get(self, kind: str, namespace: str, name: str) -> dict:
            return {"from": "the API server"}

        def apply(self, manifest: dict, existing: dict | None = None) -> dict:
            return child("2")

    client = CachedKube(Api(), cache)  # type: ignore[arg-type]
    meta = {"name": "qwen-adapters", "namespace": "ns", "ownerReferences": OWNED}
    manifest = {"kind": "ConfigMap", "metadata": meta, "data": {"adapters.json": "{}"}}
    client.apply(manifest)
    assert client.stands(manifest)
    assert not client.stands({**manifest, "data": {"adapters.json": '{"x": "/mnt/claim/x"}'}}), "re-rendered"
    assert client.get("ConfigMap", "ns", "qwen-adapters") == {"from": "the API server"}
    assert not client.stands({"kind": "ScaledObject", "metadata": {"name": "qwen-vllm", "namespace": "ns"}})


def test_a_report_configmap_is_kept_with_its_data_and_goes_with_it() -> None:
    cache = Cache()
    labels = {**CHILD_LABELS, "kubetune.io/adapter-report": "true"}
    report = obj("ConfigMap", "qwen-adapter-report", metadata={"labels": labels}, data={"pod": "{}"})
    cache.upsert("ConfigMap", report, written="w")
    assert (cache.get("AdapterReport", "ns", "qwen-adapter-report") or {})["data"] == {"pod": "{}"}
    # A sidecar's report is the sidecars' to write: the operator's ConfigMap still stands (no write back).
    reported = obj(
        "ConfigMap", "qwen-adapter-report", rv="2", metadata={"labels": labels}, data={"pod": "[]"}
    )
    cache.upsert("ConfigMap", reported)
    assert cache.stands("ConfigMap", "ns", "qwen-adapter-report")
    assert (cache.get("AdapterReport", "ns", "qwen-adapter-report") or {})["data"] == {"pod": "[]"}
    cache.remove("ConfigMap", "ns", "qwen-adapter-report", "uid-qwen-adapter-report")
    assert cache.get("AdapterReport", "ns", "qwen-adapter-report") is None


def queued_items(controller: Controller) -> list[tuple[Key, bool]]:
    out = []
    while (item := controller.queue.get(timeout=0)) is not None:
        out.append((item.key, item.full))
        controller.queue.done(item.key)
    return out


def test_someone_elses_change_or_deletion_of_a_child_is_written_back_at_once(controller: Controller) -> None:
    qwen = Key("ModelServe", "ns", "qwen")
    controller.cache.upsert("ConfigMap", child("2"), written="w")
    controller.observed("ConfigMap", "MODIFIED", child("2"))  # the event of the operator's own write
    assert queued_items(controller) == [], "its echo: the reconcile that wrote it decided on the reply"
    controller.observed("ConfigMap", "MODIFIED", child("3", annotations={"note": "x"}))  # not content
    assert queued_items(controller) == [], "no reconcile reads the adapters ConfigMap: nothing to decide"
    controller.observed("ConfigMap", "MODIFIED", child("3", data={"adapters.json": "{}", "x": "y"}))
    assert queued_items(controller) == [(qwen, True)]  # a full pass: it writes back what no longer stands
    controller.observed("ConfigMap", "DELETED", child("3"))
    assert queued_items(controller) == [(qwen, True)]
    controller.observed("ConfigMap", None, child("4"))  # the initial listing: the resync writes, once
    assert queued_items(controller) == [(qwen, False)]


def test_the_echo_of_its_own_deployment_write_queues_nothing_its_status_does(controller: Controller) -> None:
    qwen = Key("ModelServe", "ns", "qwen")
    meta = {"labels": CHILD_LABELS, "ownerReferences": OWNED}
    written = obj("Deployment", "qwen-vllm", rv="7", metadata=meta, spec={"replicas": 1})
    controller.cache.upsert("Deployment", written, written="w")
    controller.observed("Deployment", "MODIFIED", written)
    assert queued_items(controller) == []
    rolled_out = obj("Deployment", "qwen-vllm", rv="8", metadata=meta, spec={"replicas": 1},
                     status={"readyReplicas": 1})  # fmt: skip
    controller.observed("Deployment", "MODIFIED", rolled_out)
    assert queued_items(controller) == [(qwen, False)]


def test_a_sidecars_report_always_wakes_its_modelserve(controller: Controller) -> None:
    labels = {**CHILD_LABELS, "kubetune.io/adapter-report": "true"}
    meta = {"labels": labels, "ownerReferences": OWNED}
    controller.cache.upsert("ConfigMap", obj("ConfigMap", "qwen-adapter-report", metadata=meta), written="w")
    reported = obj("ConfigMap", "qwen-adapter-report", rv="2", metadata=meta, data={"pod": "{}"})
    controller.observed("ConfigMap", "MODIFIED", reported)
    assert queued_items(controller) == [(Key("ModelServe", "ns", "qwen"), False)]


def test_the_echo_of_the_job_it_created_queues_nothing_the_job_controllers_decisions_do(
    controller: Controller,
) -> None:
    ner = Key("FineTuneJob", "ns", "ner")
    meta = {"labels": {"app.kubernetes.io/managed-by": "kubetune", "kubetune.io/finetunejob": "ner"}}
    created = obj("Job", "ner-a1", rv="5", metadata=meta, spec={"suspend": False})
    controller.cache.upsert("Job", created, written="w")  # the create's reply
    controller.observed("Job", "ADDED", created)  # its watch event: the reconcile decided on the reply
    assert queued_items(controller) == []
    failing = {"active": 1, "conditions": [{"type": "FailureTarget", "status": "True"}]}
    decided = obj("Job", "ner-a1", rv="6", metadata=meta, spec={"suspend": False}, status=failing)
    controller.observed("Job", "MODIFIED", decided)
    assert queued_items(controller) == [(ner, False)]
    controller.observed("Job", "ADDED", created)  # a late copy of the written version: older, not kept
    assert (controller.cache.get("Job", "ns", "ner-a1") or {})["status"] == failing


def test_a_burst_of_child_events_is_one_reconcile_a_batch_period_after_the_first() -> None:
    from kubetune.runtime.controller import CHILD_BATCH_SECONDS
    from kubetune.runtime.workqueue import WorkQueue

    now = [0.0]
    queue: WorkQueue[Key] = WorkQueue(clock=lambda: now[0])
    controller = Controller(kube=None, config=OperatorConfig(), reconcilers=RECONCILERS, queue=queue)  # type: ignore[arg-type]
    labels = {"labels": {"kubetune.io/finetunejob": "ner"}}
    controller.observed("Pod", "ADDED", pod("ner-a1-0", "ner"))
    controller.observed("Job", "MODIFIED", obj("Job", "ner-a1", metadata=labels, status={"active": 1}))
    now[0] = CHILD_BATCH_SECONDS * 0.6
    controller.observed("Pod", "MODIFIED", pod("ner-a1-0", "ner", rv="2"))
    assert queued(controller) == []
    now[0] = CHILD_BATCH_SECONDS
    assert queued(controller) == [Key("FineTuneJob", "ns", "ner")]


def test_a_pod_that_starts_or_ends_queues_its_owner_at_once_with_what_was_batched() -> None:
    from kubetune.runtime.workqueue import WorkQueue

    now = [0.0]
    queue: WorkQueue[Key] = WorkQueue(clock=lambda: now[0])
    controller = Controller(kube=None, config=OperatorConfig(), reconcilers=RECONCILERS, queue=queue)  # type: ignore[arg-type]
    controller.observed("Pod", "ADDED", pod("ner-a1-0", "ner", phase="Pending"))
    controller.observed("Pod", "MODIFIED", pod("ner-a1-0", "ner", phase="Pending", rv="2"))  # bound
    assert queued(controller) == []
    controller.observed("Pod", "MODIFIED", pod("ner-a1-0", "ner", phase="Running", rv="3"))
    assert queued(controller) == [Key("FineTuneJob", "ns", "ner")]
    now[0] = 5
    assert queued(controller) == []  # the batched addition went with it
    controller.observed("Pod", "MODIFIED", pod("ner-a1-0", "ner", phase="Failed", rv="4"))
    assert queued(controller) == [Key("FineTuneJob", "ns", "ner")]


def test_copies_share_their_keys_and_short_strings_but_keep_their_values() -> None:
    import json

    from kubetune.runtime.cache import compact

    def from_the_watch(name: str) -> dict:  # each decoded object has strings of its own
        return json.loads(json.dumps(pod(name, "ner", rv="7") | {"message": "x" * 100}))

    first, second = compact(from_the_watch("ner-a1-0")), compact(from_the_watch("ner-a1-1"))
    assert first == from_the_watch("ner-a1-0")
    key = next(k for k in first["status"] if k == "phase")
    assert key is next(k for k in second["status"] if k == "phase")
    assert first["status"]["phase"] is second["status"]["phase"]
    assert first["metadata"]["resourceVersion"] is second["metadata"]["resourceVersion"]
    assert first["message"] is not second["message"]  # a long string: its own copy


def test_the_resync_skips_a_finetunejob_reconciled_since_the_last_and_never_two_in_a_row() -> None:
    """At 5000 jobs starting, each resync queued the few thousand running ones again: a reconcile each
    that decided nothing, ahead of the new jobs still waiting for their first."""
    from kubetune.runtime.outcome import Outcome
    from kubetune.runtime.workqueue import WorkQueue

    now = [0.0]
    ran: list[str] = []

    def reconcile(kube: object, body: dict, config: object, full: bool) -> Outcome:
        ran.append(body["metadata"]["name"])
        return Outcome(status={}, changed=False)

    controller = Controller(
        kube=None,  # type: ignore[arg-type]
        config=OperatorConfig(),
        reconcilers={"FineTuneJob": reconcile},
        queue=WorkQueue(clock=lambda: now[0]),
        clock=lambda: now[0],
    )

    def work() -> list[str]:
        ran.clear()
        while (item := controller.queue.get(timeout=0)) is not None:
            controller.work(item)
        return sorted(ran)

    for name in ("busy", "quiet"):
        controller.cache.upsert("FineTuneJob", ftj(name))
    now[0] = 60
    controller.resync()  # neither was reconciled yet
    assert work() == ["busy", "quiet"]
    now[0] = 90
    controller.queue.add(Key("FineTuneJob", "ns", "busy"))  # its pod started
    assert work() == ["busy"]
    now[0] = 120
    controller.resync()
    assert work() == ["quiet"]  # busy was reconciled since the last resync
    now[0] = 180
    controller.resync()
    assert work() == ["busy", "quiet"]  # neither was: each at least once between two resyncs
    controller.observed("FineTuneJob", "DELETED", ftj("quiet"))
    assert Key("FineTuneJob", "ns", "quiet") not in controller._last_pass  # nothing kept for the gone


def test_events_wait_in_the_background_up_to_a_bound_beyond_which_they_are_dropped_and_counted() -> None:
    """At 3000 jobs starting, 4000 Events waited behind two threads when the last job ran: memory that
    grows with the burst. client-go's recorder drops what its full queue (1000) cannot take, too."""
    import threading

    from prometheus_client import REGISTRY

    from kubetune.runtime.cache import CachedKube

    release = threading.Event()
    recorded: list[str] = []

    class SlowApi:
        def create(self, manifest: dict) -> dict:
            release.wait(timeout=30)
            recorded.append(manifest["metadata"]["name"])
            return manifest

    def dropped() -> float:
        return REGISTRY.get_sample_value("kubetune_events_dropped_total") or 0.0

    client = CachedKube(SlowApi(), Cache(), max_pending_events=2)  # type: ignore[arg-type]
    before = dropped()
    for index in range(5):
        client.create({"kind": "Event", "metadata": {"name": f"e{index}", "namespace": "ns"}})
    assert dropped() - before == 3
    release.set()
    client._events.shutdown(wait=True)  # type: ignore[union-attr]
    assert sorted(recorded) == ["e0", "e1"]


def test_a_listing_keeps_what_it_holds_and_drops_what_was_deleted_while_no_watch_ran(
    controller: Controller,
) -> None:
    """A child kind's listing (a list-watch's start, or its restart after a gap) replaces what the cache held
    of that kind in that namespace, as client-go's reflector does: without it, a pod deleted while the watch
    was down would stay in the cache for good."""
    other = obj("Pod", "elsewhere", namespace="other", metadata={"labels": {"kubetune.io/finetunejob": "o"}})
    for held in (
        pod("gone", "a", rv="5"),
        pod("stays", "b", rv="5"),
        pod("written-after", "c", rv="12"),
        other,
    ):
        controller.observed("Pod", "ADDED", held)
    queued(controller)

    controller.listed("Pod", "ns", [pod("stays", "b", rv="9"), pod("new", "d", rv="10")], "10")

    assert controller.cache.get("Pod", "ns", "gone") is None
    assert controller.cache.get("Pod", "ns", "stays")["metadata"]["resourceVersion"] == "9"
    assert controller.cache.get("Pod", "ns", "new") is not None
    # Written after the listing (a write's reply came first): its watch event follows, it stays.
    assert controller.cache.get("Pod", "ns", "written-after") is not None
    # Another namespace's listing is another watch's.
    assert controller.cache.get("Pod", "other", "elsewhere") is not None
    # The listed pods' owners decide again, and so does the deleted pod's.
    assert queued(controller) == [Key("FineTuneJob", "ns", n) for n in ("b", "d", "a")]


def test_the_workers_wait_until_every_watch_has_listed_once() -> None:
    from kubetune.runtime.controller import RESOURCES_LISTED

    config = OperatorConfig(namespaces=("ns", "other"))
    controller = Controller(kube=None, config=config, reconcilers=RECONCILERS)  # type: ignore[arg-type]
    children = controller.watched_children()
    assert len(children) == 20
    controller.listed_once(RESOURCES_LISTED)  # kopf's listing of the custom resources
    for kind, namespace in children:
        assert not controller.caches_filled.is_set(), (kind, namespace)
        controller.listed(kind, namespace, [], "1")
    assert controller.caches_filled.is_set()
    # A listing again later (a watch's restart) changes nothing of it.
    controller.listed("Pod", "ns", [], "2")
    assert controller.caches_filled.is_set()


def test_each_queued_key_says_which_watched_kind_or_the_resync_queued_it(controller: Controller) -> None:
    """kubetune_reconcile_causes_total counts reconciles by it: where reconciles come from at scale."""
    controller.observed("Pod", "MODIFIED", pod("p", "a"))
    controller.observed("FineTuneJob", "ADDED", ftj("b"))
    item = controller.queue.get(timeout=0)
    assert item is not None and (item.key.name, item.cause) == ("a", "Pod")
    controller.queue.done(item.key)
    item = controller.queue.get(timeout=0)
    assert item is not None and (item.key.name, item.cause) == ("b", "FineTuneJob")
    controller.queue.done(item.key)
    controller.resync()
    assert {(i.key.name, i.cause) for i in iter(lambda: controller.queue.get(timeout=0), None)} == {
        ("b", "resync")
    }


def test_a_listed_object_the_controller_fails_on_does_not_stop_the_others(
    controller: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = controller.observed

    def observed(kind: str, event_type: str | None, body: dict) -> None:
        if body["metadata"]["name"] == "poison":
            raise KeyError("status")
        real(kind, event_type, body)

    monkeypatch.setattr(controller, "observed", observed)
    controller.listed("Pod", "ns", [pod("poison", "a"), pod("fine", "b")], "3")
    assert controller.cache.get("Pod", "ns", "fine") is not None
    assert queued(controller) == [Key("FineTuneJob", "ns", "b")]
