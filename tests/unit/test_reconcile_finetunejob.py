"""The FineTuneJob reconcile's decisions in a table: the cluster found -> the status, the writes, what next.

Each row sets up a cluster in the in-memory client (tests/fakekube.py), playing the Job controller and the
kubelet where the row needs them; tests/reconcile_table.py runs it and checks what the row says.

What the API server, the Job controller and the kubelet really do is tested in the integration tier.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from kubetune.api.defaults import TrainerSettings
from kubetune.api.finetunejob import FineTuneJobStatus
from kubetune.handlers import finetunejob
from kubetune.runtime.outcome import Outcome
from tests import specs
from tests.fakekube import Call, FakeKube, timestamp
from tests.reconcile_table import Row, Table, run, run_twice

NS = "team-a"
SETTINGS = TrainerSettings()

STATIC_CHILDREN = [
    ("ensure", "ConfigMap", "ner-config"),
    ("ensure", "Service", "ner-workers"),
    ("ensure", "ServiceAccount", "ner-launcher"),
    ("ensure", "Role", "ner-launcher"),
    ("ensure", "RoleBinding", "ner-launcher"),
]
STATUS = ("patch_status", "FineTuneJob", "ner")


def reconcile(fake: FakeKube, name: str = "ner") -> Outcome:
    body = fake.get_quietly("FineTuneJob", NS, name)
    assert body is not None, f"FineTuneJob {name} is gone"
    return finetunejob.reconcile(fake, body, SETTINGS)


# --- the cluster as a row finds it ---------------------------------------------------------------------


def new(**spec: Any) -> Callable[[FakeKube], None]:
    """A FineTuneJob just created, its claim there."""

    def given(fake: FakeKube) -> None:
        fake.claim()
        fake.add(specs.finetunejob("ner", **spec))

    return given


def started(fake: FakeKube, **spec: Any) -> dict[str, Any]:
    """The operator has created attempt 1, and reported it Starting once its pods had not started within
    the first status's wait; its Job, as the Job controller has it."""
    new(**spec)(fake)
    reconcile(fake)
    fake.backdate(fake.job(NS, "ner-a1"), finetunejob.FIRST_STATUS_WAIT_SECONDS)
    reconcile(fake)
    return fake.job(NS, "ner-a1")


def created_a_moment_ago(fake: FakeKube) -> None:
    """The operator has just created attempt 1 (its first status waits for the pods)."""
    new()(fake)
    reconcile(fake)


def past_the_first_status_wait(fake: FakeKube) -> None:
    created_a_moment_ago(fake)
    fake.backdate(fake.job(NS, "ner-a1"), finetunejob.FIRST_STATUS_WAIT_SECONDS)


def running_within_the_first_status_wait(fake: FakeKube) -> None:
    created_a_moment_ago(fake)
    fake.job_running(fake.job(NS, "ner-a1"))


def running(fake: FakeKube, **spec: Any) -> dict[str, Any]:
    job = started(fake, **spec)
    fake.job_running(job)
    reconcile(fake)
    return job


def ftj(fake: FakeKube) -> dict[str, Any]:
    return fake.get_quietly("FineTuneJob", NS, "ner") or {}


def someone_elses_service(fake: FakeKube) -> None:
    new()(fake)
    fake.add({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ner-workers"}}, manager="helm")


def our_orphaned_config_map(fake: FakeKube) -> None:
    """`kubectl delete --cascade=orphan` of an earlier `ner`: its ConfigMap stays, without an owner."""
    new()(fake)
    fake.add(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "ner-config", "labels": {"kubetune.io/finetunejob": "ner"}},
        },
        manager="kubetune",
    )


def leftover_job(still_running: bool) -> Callable[[FakeKube], None]:
    """A training Job of an earlier FineTuneJob `ner`, orphaned, under the name attempt 1 would take."""

    def given(fake: FakeKube) -> None:
        new()(fake)
        labels = {"kubetune.io/finetunejob": "ner", "kubetune.io/attempt": "1"}
        job = fake.add(
            {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "ner-a1", "labels": labels},
             "spec": {"parallelism": 1, "template": {"metadata": {"labels": labels}}}},
            manager="kubetune",
        )  # fmt: skip
        if not still_running:
            fake.job_failed(job)

    return given


def refused_job(fake: FakeKube) -> None:
    new()(fake)
    fake.refuse(
        "Job", "ner-a1", 'Job.batch "ner-a1" is invalid: spec.template.spec.nodeSelector: Invalid value'
    )


def failed_attempt(max_restarts: int, stopped: bool = True) -> Callable[[FakeKube], None]:
    def given(fake: FakeKube) -> None:
        job = running(fake, maxRestarts=max_restarts)
        fake.job_failed(job, stopped=stopped)

    return given


def second_attempt_failed(fake: FakeKube) -> None:
    failed_attempt(1)(fake)
    reconcile(fake)  # attempt 2
    job = fake.job(NS, "ner-a2")
    fake.job_running(job)
    reconcile(fake)
    fake.job_failed(job)


def disrupted(fake: FakeKube) -> None:
    fake.job_disrupted(running(fake))


def suspended_by_the_user(fake: FakeKube) -> None:
    running(fake)
    fake.edit(ftj(fake), suspend=True)


def resumed_by_the_user(fake: FakeKube) -> None:
    suspended_by_the_user(fake)
    reconcile(fake)
    fake.job_pods_gone(fake.job(NS, "ner-a1"))
    reconcile(fake)
    fake.edit(ftj(fake), suspend=False)


def served_adapter(fake: FakeKube) -> None:
    """Two ModelServes: `qwen` serves this job's adapter, `other` another job's (the reconcile leaves them
    alone: the runtime queues a ModelServe whose status is behind its job, runtime/controller.py)."""
    for name, job in (("qwen", "ner"), ("other", "sql")):
        fake.add(specs.modelserve(name, adapters=[{"name": job, "fineTuneJob": job}]))


def failed_without_restarts(fake: FakeKube) -> None:
    failed_attempt(max_restarts=0)(fake)
    served_adapter(fake)


def succeeded(ttl: int | None = None, finished_ago: float = 0) -> Callable[[FakeKube], None]:
    def given(fake: FakeKube) -> None:
        job = running(fake, ttlSecondsAfterFinished=ttl)
        served_adapter(fake)
        job = fake.job_succeeded(job)
        fake.set_status(job, completionTime=timestamp(finished_ago))

    return given


def finished(fake: FakeKube) -> None:
    succeeded()(fake)
    reconcile(fake)


def pods_missing(fake: FakeKube) -> None:
    """The Job controller started the Job a while ago and counts no pod of it: nobody reports why, the
    reconcile looks again."""
    fake.job_started(fake.backdate(started(fake), 30))


def pods_not_made_yet(fake: FakeKube) -> None:
    """The Job has been there a while, and the Job controller has not reached it yet (a loaded control
    plane): its status write will wake the reconcile, no lookup or look again needed."""
    fake.backdate(started(fake), 30)


def pods_just_refused(fake: FakeKube) -> None:
    """The Job controller started the Job a moment ago and counts no pod: its Event may be on its way."""
    fake.job_started(fake.backdate(started(fake), 30), seconds_ago=1)


def pods_refused(fake: FakeKube) -> None:
    job = fake.backdate(started(fake), 30)
    fake.failed_create(job, 'pods "ner-a1-0" is forbidden: violates PodSecurity "restricted:latest"')


def dataset_config_map(present: bool) -> Callable[[FakeKube], None]:
    ref = {"names": ["clue"], "configMapRef": {"name": "datasets", "key": "dataset_info.json"}}

    def given(fake: FakeKube) -> None:
        new(dataset=ref)(fake)
        if present:
            fake.config_map("datasets", {"dataset_info.json": '{"clue": {"file_name": "clue.json"}}'})

    return given


# --- the table ---------------------------------------------------------------------------------------


ROWS = [
    Row(
        "new: children created, the Job last; the first status waits for the pods",
        new(),
        "Pending",
        "Starting",
        [*STATIC_CHILDREN, ("ensure", "Job", "ner-a1")],
        [],
        {"Created": "True", "Running": "False", "SpecValid": "True"},
        {"attempt": 1, "restarts": 0},
        requeue_after=finetunejob.FIRST_STATUS_WAIT_SECONDS,
    ),
    Row(
        "new, its pods not started within the first status's wait: Starting",
        past_the_first_status_wait,
        "Pending",
        "Starting",
        [STATUS],
        [("Normal", "Starting")],
        {"Created": "True", "Running": "False", "SpecValid": "True"},
        {"attempt": 1, "restarts": 0},
        requeue_after=None,  # no pod yet, nor the Job controller's word: its status write wakes it
    ),
    Row(
        "new, its pod started within the first status's wait: Running, the first status",
        running_within_the_first_status_wait,
        "Running",
        "Training",
        [STATUS],
        [("Normal", "Training")],
        {"Created": "True", "Running": "True"},
        {"attempt": 1, "restarts": 0},
    ),
    Row(
        "missing claim: waits, creates nothing",
        lambda fake: fake.add(specs.finetunejob("ner")),
        "Pending",
        "MissingClaim",
        [STATUS],
        [("Normal", "MissingClaim")],
        {"Created": "False"},
    ),
    Row(
        "a child's name taken by someone else: waits, no Job",
        someone_elses_service,
        "Pending",
        "ChildConflict",
        # The children that do not depend on one another are all tried (CachedKube.ensure_all); the
        # RoleBinding only after them (it binds the ServiceAccount), and the Job last.
        [*STATIC_CHILDREN[:-1], STATUS],
        [("Warning", "ChildConflict")],
        {"Created": "False"},
        settled=False,
    ),
    Row(
        "the operator's own orphan is taken back",
        our_orphaned_config_map,
        "Pending",
        "Starting",
        [*STATIC_CHILDREN, ("ensure", "Job", "ner-a1")],
        requeue_after=finetunejob.FIRST_STATUS_WAIT_SECONDS,
    ),
    Row(
        "a stopped Job of an earlier FineTuneJob: the next free name",
        leftover_job(still_running=False),
        "Pending",
        "Starting",
        [*STATIC_CHILDREN, ("ensure", "Job", "ner-a2")],
        status={"attempt": 2, "restarts": 0},
        requeue_after=finetunejob.FIRST_STATUS_WAIT_SECONDS,
    ),
    Row(
        "a running Job of an earlier FineTuneJob: waits for it",
        leftover_job(still_running=True),
        "Pending",
        "LeftoverJob",
        [STATUS],
        [("Normal", "LeftoverJob")],
    ),
    Row(
        "the API server refuses the Job: failed, naming its words",
        refused_job,
        "Failed",
        "InvalidValue",
        [*STATIC_CHILDREN, ("ensure", "Job", "ner-a1"), STATUS],
        [("Warning", "InvalidValue")],
        {"Stalled": "True"},
        settled=False,
    ),
    Row(
        "running: status only, no child re-applied",
        lambda fake: fake.job_running(started(fake)),
        "Running",
        "Training",
        [STATUS],
        [("Normal", "Training")],
        {"Running": "True", "Created": "True"},
    ),
    Row(
        "attempt failed with a restart left: the next attempt, the restart counted",
        failed_attempt(max_restarts=1),
        "Pending",
        "Starting",
        [*STATIC_CHILDREN, ("ensure", "Job", "ner-a2"), STATUS],
        [("Warning", "AttemptFailed"), ("Warning", "Restarting"), ("Normal", "Starting")],
        status={"attempt": 2, "restarts": 1},
        requeue_after=None,  # the Job controller's status write wakes it
    ),
    Row(
        "attempt failing, its pods not stopped yet: no next attempt yet",
        failed_attempt(max_restarts=1, stopped=False),
        "Pending",
        "Restarting",
        [STATUS],
        [("Warning", "Restarting")],
        status={"attempt": 1, "restarts": 0},
    ),
    Row(
        "attempt failed, no restart allowed: failed",
        failed_without_restarts,
        "Failed",
        "AttemptFailed",
        [STATUS],
        [("Warning", "AttemptFailed")],
        {"Failed": "True", "Running": "False"},
        status={"attempt": 1, "restarts": 0},
    ),
    Row(
        "maxRestarts used up: failed",
        second_attempt_failed,
        "Failed",
        "RestartLimitExceeded",
        [STATUS],
        [("Warning", "RestartLimitExceeded")],
        {"Failed": "True"},
        {"attempt": 2, "restarts": 1},
    ),
    Row(
        "disrupted: the next attempt, no restart counted",
        disrupted,
        "Pending",
        "Starting",
        [*STATIC_CHILDREN, ("ensure", "Job", "ner-a2"), STATUS],
        [("Warning", "AttemptDisrupted"), ("Warning", "Restarting"), ("Normal", "Starting")],
        status={"attempt": 2, "restarts": 0, "disruptions": 1},
        requeue_after=None,  # the Job controller's status write wakes it
    ),
    Row(
        "suspend: the Job is suspended",
        suspended_by_the_user,
        "Suspended",
        "Suspended",
        [("patch_merge", "Job", "ner-a1"), STATUS],
        [("Normal", "Suspended")],
        {"Suspended": "True"},
    ),
    Row(
        "resumed: the Job is resumed, its pods awaited",
        resumed_by_the_user,
        "Pending",
        "Starting",
        [("patch_merge", "Job", "ner-a1"), STATUS],
        [("Normal", "Starting")],
        {"Suspended": "False"},
        requeue_after=None,  # the Job controller's status write wakes it
    ),
    Row(
        "succeeded",
        succeeded(),
        "Succeeded",
        "Completed",
        [STATUS],
        [("Normal", "Completed")],
        {"Succeeded": "True", "Running": "False"},
    ),
    Row(
        "finished: writes nothing",
        finished,
        "Succeeded",
        "Completed",
        [],
    ),
    Row(
        "TTL not expired yet: looks again when it will have",
        succeeded(ttl=3600, finished_ago=600),
        "Succeeded",
        "Completed",
        [STATUS],
        [("Normal", "Completed")],
        requeue_after=3000,
    ),
    Row(
        "TTL expired: deleted",
        succeeded(ttl=60, finished_ago=600),
        "Succeeded",
        "Completed",
        [STATUS, ("delete", "FineTuneJob", "ner")],
        [("Normal", "Completed")],
        settled=False,
    ),
    Row(
        "pods missing: looks again in 5 s",
        pods_missing,
        "Pending",
        "Starting",
        [],
        requeue_after=5,
    ),
    Row(
        "pods not made yet by the Job controller: waits for its word",
        pods_not_made_yet,
        "Pending",
        "Starting",
        [],
        requeue_after=None,
    ),
    Row(
        "pods just counted short by the Job controller: looks again in 5 s",
        pods_just_refused,
        "Pending",
        "Starting",
        [],
        requeue_after=5,
    ),
    Row(
        "pods refused by admission: says so",
        pods_refused,
        "Pending",
        "PodsRefused",
        [STATUS],
        [("Warning", "PodsRefused")],
        requeue_after=None,
    ),
    Row(
        "dataset ConfigMap missing: waits, creates nothing",
        dataset_config_map(present=False),
        "Pending",
        "MissingConfigMap",
        [STATUS],
        [("Normal", "MissingConfigMap")],
    ),
    Row(
        "dataset ConfigMap there: its entries go into the config",
        dataset_config_map(present=True),
        "Pending",
        "Starting",
        [*STATIC_CHILDREN, ("ensure", "Job", "ner-a1")],
        requeue_after=finetunejob.FIRST_STATUS_WAIT_SECONDS,
    ),
    Row(
        "a misspelt LLaMA-Factory argument: failed, naming it, nothing created",
        new(config={**specs.FINETUNEJOB_SPEC["config"], "lerning_rate": 1}),
        "Failed",
        "InvalidConfig",
        [STATUS],
        [("Warning", "InvalidConfig")],
        {"SpecValid": "False", "Stalled": "True"},
    ),
    Row(
        "a spec the models refuse: failed, nothing created",
        new(resources={"nodes": 1, "gpusPerNode": 8, "processesPerNode": 2}),
        "Failed",
        "InvalidSpec",
        [STATUS],
        [("Warning", "InvalidSpec")],
        {"SpecValid": "False", "Stalled": "True"},
    ),
]


TABLE = Table(
    reconcile=lambda fake, full: reconcile(fake),
    status_write=STATUS,
    status_model=FineTuneJobStatus,
    namespace=NS,
)


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_reconcile(row: Row) -> None:
    run(TABLE, row)


@pytest.mark.parametrize("row", [r for r in ROWS if r.id != "TTL expired: deleted"], ids=lambda r: r.id)
def test_a_second_pass_changes_nothing(row: Row) -> None:
    run_twice(TABLE, row)


def test_pods_missing_looks_for_their_refusal() -> None:
    fake = FakeKube()
    pods_missing(fake)
    fake.forget_calls()
    reconcile(fake)
    assert Call("pods_refused", "Job", "ner-a1") in fake.calls


@pytest.mark.parametrize(
    "given", [pods_not_made_yet, pods_just_refused], ids=["not made yet", "counted short a moment ago"]
)
def test_pods_the_job_controller_has_not_refused_long_enough_ago_cost_no_event_lookup(
    given: Callable[[FakeKube], None],
) -> None:
    """The lookup LISTs the namespace's Events from etcd (4 s each at a thousand jobs starting): it is
    done only when the Job controller has counted the pods short for FAILED_CREATE_AFTER_SECONDS."""
    fake = FakeKube()
    given(fake)
    fake.forget_calls()
    reconcile(fake)
    assert not [call for call in fake.calls if call.verb == "pods_refused"]


def test_a_suspended_job_without_pods_is_not_looked_at_again() -> None:
    """Its Job keeps the Job controller's startTime and counts no pod: nothing was refused (Kueue can hold
    a job suspended for hours)."""
    fake = FakeKube()
    suspended_by_the_user(fake)
    reconcile(fake)
    job = fake.job(NS, "ner-a1")
    fake.job_pods_gone(job)
    fake.job_started(job)
    fake.forget_calls()
    outcome = reconcile(fake)
    assert outcome.requeue_after is None
    assert not [call for call in fake.calls if call.verb == "pods_refused"]


def test_a_new_attempt_keeps_the_first_ones_job() -> None:
    fake = FakeKube()
    failed_attempt(max_restarts=1)(fake)
    reconcile(fake)
    jobs = sorted(j["metadata"]["name"] for j in fake.list_quietly("Job", NS))
    assert jobs == ["ner-a1", "ner-a2"]
    assert fake.job(NS, "ner-a2")["metadata"]["labels"]["kubetune.io/attempt"] == "2"


def test_ttl_expiry_takes_the_children_but_not_the_claim() -> None:
    fake = FakeKube()
    succeeded(ttl=60, finished_ago=600)(fake)
    reconcile(fake)
    assert fake.get_quietly("FineTuneJob", NS, "ner") is None
    assert fake.list_quietly("Job", NS) == [] and fake.list_quietly("ConfigMap", NS) == []
    assert fake.get_quietly("PersistentVolumeClaim", NS, "shared") is not None


def test_a_conflict_leaves_the_other_object_as_it_was() -> None:
    fake = FakeKube()
    someone_elses_service(fake)
    before = fake.get_quietly("Service", NS, "ner-workers")
    outcome = reconcile(fake)
    assert fake.get_quietly("Service", NS, "ner-workers") == before
    assert "Service ner-workers already exists" in outcome.status["message"]
    assert "helm" in outcome.status["message"]


def test_a_leftover_job_is_no_restart() -> None:
    fake = FakeKube()
    leftover_job(still_running=False)(fake)
    reconcile(fake)
    assert ("Warning", "Restarting") not in fake.events()


def test_a_stale_copy_of_an_expired_job_neither_deletes_nor_writes_onto_its_successor() -> None:
    """The cache still holds the old `ner` (finished, TTL expired) while a new `ner` exists: every write
    the old copy leads to carries its uid, and the API server refuses it for the new object."""
    fake = FakeKube()
    succeeded(ttl=60, finished_ago=600)(fake)
    stale = ftj(fake)
    stale["status"] = {**stale.get("status", {}), "phase": "Succeeded", "observedGeneration": 99}
    fake.delete("FineTuneJob", NS, "ner")
    successor = fake.add(specs.finetunejob("ner"))
    assert successor["metadata"]["uid"] != stale["metadata"]["uid"]
    with pytest.raises(ApiException) as refused:
        finetunejob.reconcile(fake, stale, SETTINGS)
    assert refused.value.status == 409
    assert ftj(fake)["metadata"]["uid"] == successor["metadata"]["uid"]
    assert not (ftj(fake).get("status") or {}), "the old job's status was written onto the new one"


def test_the_ttl_delete_names_the_uid() -> None:
    fake = FakeKube()
    succeeded(ttl=60, finished_ago=600)(fake)
    uid = ftj(fake)["metadata"]["uid"]
    fake.forget_calls()
    reconcile(fake)
    assert fake.get_quietly("FineTuneJob", NS, "ner") is None
    fake.add(specs.finetunejob("ner"))
    # Deleting by name with the old uid leaves the new one alone.
    assert fake.delete("FineTuneJob", NS, "ner", uid=uid) is False
    assert fake.get_quietly("FineTuneJob", NS, "ner") is not None


def test_a_running_attempts_job_deleted_by_hand_waits_for_its_pods_then_takes_the_next_name() -> None:
    """Its pods may still write checkpoints into the output path: no Job under the same name (same pod
    hostnames) while they run; once they stopped, the next attempt, counted as a disruption."""
    fake = FakeKube()
    job = running(fake)
    pods = fake.pods_of(job)
    fake.delete("Job", NS, "ner-a1", propagation="Orphan")  # the pods outlive it for a while
    fake.forget_calls()

    outcome = reconcile(fake)
    assert [c for c in fake.writes() if c.verb == "ensure"] == []
    assert "was deleted while 1 of its pods still run" in outcome.status["message"]

    for pod in pods:
        fake.delete("Pod", NS, pod["metadata"]["name"])
    outcome = reconcile(fake)
    assert fake.get_quietly("Job", NS, "ner-a2") is not None
    assert fake.get_quietly("Job", NS, "ner-a1") is None
    assert outcome.status["attempt"] == 2 and outcome.status["disruptions"] == 1
    assert ("Warning", "AttemptDisrupted") in fake.events()


def test_a_new_jobs_first_status_waits_for_its_pods_no_longer_than_the_wait() -> None:
    """The wait runs from the Job's creationTimestamp (whole seconds), so a pass within it asks to look
    again when it ends, and writes nothing."""
    fake = FakeKube()
    created_a_moment_ago(fake)
    fake.forget_calls()
    outcome = reconcile(fake)
    assert not outcome.changed and fake.writes() == [] and "phase" not in ftj(fake).get("status", {})
    assert outcome.requeue_after is not None
    assert 0 < outcome.requeue_after <= finetunejob.FIRST_STATUS_WAIT_SECONDS


def test_a_job_whose_pods_are_not_running_two_seconds_after_its_job_still_waits(monkeypatch) -> None:
    """On a loaded control plane a Job's pod runs 1 to 2 s after the Job: a wait that ended by then made
    many jobs write Starting, then Running (docs/operations.md, Scale). The Job's age is fixed here, as
    its creationTimestamp's whole seconds would make it anything from 2 to 3 s."""
    fake = FakeKube()
    created_a_moment_ago(fake)
    monkeypatch.setattr(finetunejob, "_age_seconds", lambda obj: 2.0)
    fake.forget_calls()
    outcome = reconcile(fake)
    assert not outcome.changed and fake.writes() == []
    assert outcome.requeue_after == pytest.approx(1.0)


def test_a_clock_far_behind_the_api_servers_holds_no_first_status_back() -> None:
    fake = FakeKube()
    created_a_moment_ago(fake)
    fake.backdate(fake.job(NS, "ner-a1"), -60)  # created a minute "from now" by this clock
    outcome = reconcile(fake)
    assert outcome.changed and ftj(fake)["status"]["reason"] == "Starting"


def test_a_pod_that_cannot_start_is_reported_at_once_within_the_first_status_wait() -> None:
    """Only Starting waits: a pod the scheduler refused says so as soon as it is seen."""
    fake = FakeKube()
    created_a_moment_ago(fake)
    unschedulable = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                     "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}  # fmt: skip
    fake.job_pods(fake.job(NS, "ner-a1"), "Pending", conditions=[unschedulable])
    outcome = reconcile(fake)
    assert outcome.changed and ftj(fake)["status"]["reason"] == "Unschedulable"


def test_pods_of_another_job_with_the_same_labels_are_not_this_attempts() -> None:
    """Pods are the attempt's by their owner (the Job's uid), not by their labels: a leftover pod of an
    earlier `ner`'s Job, labelled the same and still running, does not make this attempt run."""
    fake = FakeKube()
    fake.job_pods(started(fake), "Pending")
    labels = {"kubetune.io/finetunejob": "ner", "kubetune.io/attempt": "1"}
    fake.add(
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": "ner-a1-0-old", "labels": labels, "ownerReferences": [
             {"apiVersion": "batch/v1", "kind": "Job", "name": "ner-a1", "uid": "uid-old-job",
              "controller": True}]}},
        manager="kube-controller-manager", phase="Running", startTime=timestamp(),
    )  # fmt: skip
    outcome = reconcile(fake)
    assert outcome.status["phase"] == "Pending"


def test_a_preprocessing_job_of_another_finetunejob_is_not_this_ones() -> None:
    fake = FakeKube()
    new(dataset={**specs.FINETUNEJOB_SPEC["dataset"], "preprocess": {"enabled": True}})(fake)
    labels = {"kubetune.io/preprocess-of": "ner"}
    old = fake.add(
        {"apiVersion": "batch/v1", "kind": "Job",
         "metadata": {"name": "ner-preprocess-old", "labels": labels, "ownerReferences": [
             {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "name": "ner", "uid": "uid-old",
              "controller": True}]},
         "spec": {"template": {"metadata": {"labels": labels}}}},
        manager="kubetune",
    )  # fmt: skip
    fake.job_succeeded(old)
    outcome = reconcile(fake)
    assert fake.get_quietly("Job", NS, "ner-a1") is None, "trained on another job's preprocessing"
    assert outcome.status["phase"] == "Preprocessing"
    assert fake.get_quietly("Job", NS, "ner-preprocess") is not None, "its own preprocessing, created"


def test_a_wide_attempt_failing_on_every_pod_keeps_its_status_small() -> None:
    """512 pods, each with a 4 KiB termination message: a line per pod made a status over etcd's limit, so
    the job was never marked Failed. Rank 0 first, then how many more."""
    fake = FakeKube()
    job = running(fake, resources={"nodes": 512, "gpusPerNode": 8})
    for index, pod in enumerate(fake.pods_of(job)):
        stored = fake.objects[("Pod", NS, pod["metadata"]["name"])]
        stored["metadata"]["annotations"] = {"batch.kubernetes.io/job-completion-index": str(index)}
        terminated = {"exitCode": 1, "reason": "Error", "message": f"[rank{index * 8}]: " + "x" * 4000}
        fake.pod_phase(
            pod, "Failed", containerStatuses=[{"name": "trainer", "state": {"terminated": terminated}}]
        )
    fake.job_failed(job)
    outcome = reconcile(fake)
    assert outcome.status["phase"] == "Failed"
    assert len(json.dumps(outcome.status)) < 64 * 1024
    message = outcome.status["message"]
    assert "(node rank 0)" in message and "[rank0]" in message
    assert "and 509 more pod(s) failed" in message


def test_someone_elses_service_account_of_the_launchers_name_is_never_bound_to_its_role() -> None:
    fake = FakeKube()
    new()(fake)
    fake.add(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "ner-launcher"}}, manager="helm"
    )
    outcome = reconcile(fake)
    assert fake.get_quietly("RoleBinding", NS, "ner-launcher") is None
    assert fake.get_quietly("Job", NS, "ner-a1") is None
    assert "ServiceAccount ner-launcher already exists" in outcome.status["message"]


def test_a_relaxation_above_the_installations_pod_security_limit_is_refused_before_anything_is_created() -> (
    None
):
    """The operator creates the pods for whoever may create a FineTuneJob, perhaps in a namespace where no
    admission enforces a level: SYS_ADMIN or an unconfined seccomp profile only where an administrator
    raised the limit."""
    from dataclasses import replace

    fake = FakeKube()
    new(podSecurity={"addCapabilities": ["SYS_ADMIN"], "seccompProfile": "Unconfined"})(fake)
    outcome = reconcile(fake)
    assert outcome.status["phase"] == "Failed" and outcome.status["reason"] == "PodSecurityLimit"
    assert (
        "podSecurity.addCapabilities: SYS_ADMIN needs Pod Security level privileged"
        in outcome.status["message"]
    )
    assert "KUBETUNE_POD_SECURITY_LIMIT" in outcome.status["message"]
    assert fake.list_quietly("Job", NS) == []

    allowed = FakeKube()
    new(podSecurity={"addCapabilities": ["SYS_ADMIN"]})(allowed)
    body = allowed.get_quietly("FineTuneJob", NS, "ner")
    finetunejob.reconcile(allowed, body, replace(SETTINGS, pod_security_limit="privileged"))
    assert allowed.get_quietly("Job", NS, "ner-a1") is not None
