"""The FineTuneJob reconcile's decisions in a table: the cluster found -> the status, the writes, what next.

Each row sets up a cluster in the in-memory client (tests/fakekube.py), playing the Job controller and the
kubelet where the row needs them, and runs one reconcile. The row says the phase and reason it reports, the
conditions it sets, every write it makes (so, also, the ones it must not make), the Events, when it wants to
look again and which other resources it wakes. A second pass on the state the first one left must change
nothing, and, once nothing is waiting on the API server's answer, write nothing at all.

What the API server, the Job controller and the kubelet really do is tested in the integration tier.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from kubetune.api.defaults import TrainerSettings
from kubetune.handlers import finetunejob
from kubetune.handlers.outcome import Key, Outcome
from tests import specs
from tests.fakekube import Call, FakeKube, timestamp

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
    """The operator has created attempt 1; its Job, as the Job controller has it."""
    new(**spec)(fake)
    reconcile(fake)
    return fake.job(NS, "ner-a1")


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
    """Two ModelServes: `qwen` serves this job's adapter, `other` another job's."""
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
    """The Job has been there a while and has no pods: nobody reports that, the reconcile looks again."""
    fake.backdate(started(fake), 30)


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


@dataclass(frozen=True)
class Row:
    id: str
    given: Callable[[FakeKube], None]
    phase: str
    reason: str
    writes: list[tuple[str, str, str]]
    events: list[tuple[str, str]] = field(default_factory=list)
    conditions: dict[str, str] = field(default_factory=dict)  # type -> status, of those the row cares about
    status: dict[str, Any] = field(default_factory=dict)  # other status fields
    requeue_after: float | None = None
    wake: tuple[Key, ...] = ()
    # A second pass writes nothing at all; False where it asks again (a conflict waits on someone else).
    settled: bool = True


ROWS = [
    Row(
        "new: children created, the Job last",
        new(),
        "Pending",
        "Starting",
        [*STATIC_CHILDREN, ("ensure", "Job", "ner-a1"), STATUS],
        [("Normal", "Starting")],
        {"Created": "True", "Running": "False", "SpecValid": "True"},
        {"attempt": 1, "restarts": 0},
        requeue_after=5,  # no pod yet
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
        # The children that do not depend on one another are all tried (CachedKube.ensure_all).
        [*STATIC_CHILDREN, STATUS],
        [("Warning", "ChildConflict")],
        {"Created": "False"},
        settled=False,
    ),
    Row(
        "the operator's own orphan is taken back",
        our_orphaned_config_map,
        "Pending",
        "Starting",
        [*STATIC_CHILDREN, ("ensure", "Job", "ner-a1"), STATUS],
        [("Normal", "Starting")],
        requeue_after=5,
    ),
    Row(
        "a stopped Job of an earlier FineTuneJob: the next free name",
        leftover_job(still_running=False),
        "Pending",
        "Starting",
        [*STATIC_CHILDREN, ("ensure", "Job", "ner-a2"), STATUS],
        [("Normal", "Starting")],
        status={"attempt": 2, "restarts": 0},
        requeue_after=5,
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
        requeue_after=5,
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
        "attempt failed, no restart allowed: failed, wakes the ModelServes serving its adapter",
        failed_without_restarts,
        "Failed",
        "AttemptFailed",
        [STATUS],
        [("Warning", "AttemptFailed")],
        {"Failed": "True", "Running": "False"},
        status={"attempt": 1, "restarts": 0},
        wake=(Key("ModelServe", NS, "qwen"),),
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
        requeue_after=5,
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
        requeue_after=5,
    ),
    Row(
        "succeeded: wakes the ModelServes serving its adapter",
        succeeded(),
        "Succeeded",
        "Completed",
        [STATUS],
        [("Normal", "Completed")],
        {"Succeeded": "True", "Running": "False"},
        wake=(Key("ModelServe", NS, "qwen"),),
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
        wake=(Key("ModelServe", NS, "qwen"),),
    ),
    Row(
        "TTL expired: deleted",
        succeeded(ttl=60, finished_ago=600),
        "Succeeded",
        "Completed",
        [STATUS, ("delete", "FineTuneJob", "ner")],
        [("Normal", "Completed")],
        wake=(Key("ModelServe", NS, "qwen"),),
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
        [*STATIC_CHILDREN, ("ensure", "Job", "ner-a1"), STATUS],
        [("Normal", "Starting")],
        requeue_after=5,
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


def conditions(status: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status.get("conditions") or []}


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_reconcile(row: Row) -> None:
    fake = FakeKube()
    row.given(fake)
    fake.forget_calls()
    events_before = len(fake.events())

    outcome = reconcile(fake)

    status = outcome.status
    assert (status["phase"], status["reason"]) == (row.phase, row.reason), status["message"]
    assert fake.writes() == [Call(*w) for w in row.writes]
    assert fake.events()[events_before:] == row.events
    assert {t: conditions(status).get(t) for t in row.conditions} == row.conditions
    assert {k: status.get(k) for k in row.status} == row.status
    assert outcome.changed == (STATUS in row.writes)
    if row.requeue_after is None:
        assert outcome.requeue_after is None
    else:
        assert outcome.requeue_after == pytest.approx(row.requeue_after, abs=5)
    assert outcome.wake == row.wake


@pytest.mark.parametrize("row", [r for r in ROWS if r.id != "TTL expired: deleted"], ids=lambda r: r.id)
def test_a_second_pass_changes_nothing(row: Row) -> None:
    fake = FakeKube()
    row.given(fake)
    first = reconcile(fake)
    fake.forget_calls()
    events_before = len(fake.events())

    second = reconcile(fake)

    assert fake.changes() == []
    assert fake.events()[events_before:] == []
    assert not second.changed and second.status == first.status and second.wake == ()
    if row.settled:
        assert fake.writes() == []


def test_pods_missing_looks_for_their_refusal() -> None:
    fake = FakeKube()
    pods_missing(fake)
    fake.forget_calls()
    reconcile(fake)
    assert Call("pods_refused", "Job", "ner-a1") in fake.calls


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
