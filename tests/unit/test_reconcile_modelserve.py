"""The ModelServe reconcile's decisions in a table: the cluster found -> the status, the writes, what next.

As for the FineTuneJob (test_reconcile_finetunejob.py): each row sets up a cluster in the in-memory client,
playing the Deployment controller, the FineTuneJobs an adapter comes from and the adapter-sync sidecars, and
runs one reconcile (`full`: as the periodic resync does, pruning whatever the spec no longer asks for).
What the API server and vLLM really do is tested in the integration and serve tiers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from kubetune.api.defaults import TrainerSettings
from kubetune.api.modelserve import ModelServeStatus
from kubetune.handlers import modelserve
from kubetune.kube import ADAPTER_REPORT
from kubetune.runtime.cache import Cache, CachedKube
from kubetune.runtime.outcome import Outcome
from tests import specs
from tests.fakekube import FakeKube
from tests.reconcile_table import Row, Table, run, run_twice

NS = "team-a"
SETTINGS = TrainerSettings()
SIDECAR_IMAGE = "ghcr.io/kubetune/trainer:test"

CHILDREN = [
    ("apply", "ConfigMap", "qwen-adapters"),
    ("apply", "ConfigMap", "qwen-lora-guard"),
    ("apply", "ConfigMap", "qwen-adapter-report"),
    ("apply", "ServiceAccount", "qwen-adapter-sync"),
    ("apply", "Role", "qwen-adapter-sync"),
    ("apply", "RoleBinding", "qwen-adapter-sync"),
    ("apply", "Service", "qwen-vllm"),
    ("apply", "Deployment", "qwen-vllm"),
]
HPA = ("apply", "HorizontalPodAutoscaler", "qwen-vllm")
# Every autoscaler a ModelServe `qwen` may have had (either provider, today's name and an earlier release's).
PRUNED_AUTOSCALERS = [
    ("delete_owned", "HorizontalPodAutoscaler", "qwen"),
    ("delete_owned", "HorizontalPodAutoscaler", "qwen-vllm"),
    ("delete_owned", "ScaledObject", "qwen"),
    ("delete_owned", "ScaledObject", "qwen-vllm"),
]
STATUS = ("patch_status", "ModelServe", "qwen")
AUTOSCALING = {"minReplicas": 1, "maxReplicas": 3, "targetWaitingRequests": 4}
ADAPTER_PATH = "runs/team-a/ner/adapter"


def reconcile(fake: FakeKube, full: bool = False) -> Outcome:
    body = fake.get_quietly("ModelServe", NS, "qwen")
    assert body is not None
    return modelserve.reconcile(fake, body, SETTINGS, SIDECAR_IMAGE, full=full)


# --- the cluster as a row finds it ---------------------------------------------------------------------


def new(adapters: list[dict[str, Any]] | None = None, **spec: Any) -> Callable[[FakeKube], None]:
    def given(fake: FakeKube) -> None:
        fake.claim()
        fake.add(specs.modelserve("qwen", adapters=adapters, **spec))

    return given


def served(adapters: list[dict[str, Any]] | None = None, **spec: Any) -> Callable[[FakeKube], None]:
    """Created by the operator, and its one replica ready."""

    def given(fake: FakeKube) -> None:
        new(adapters, **spec)(fake)
        reconcile(fake)
        fake.deployment_ready(fake.get_quietly("Deployment", NS, "qwen-vllm") or {})
        reconcile(fake)

    return given


def finetunejob(phase: str, **status: Any) -> Callable[[FakeKube], None]:
    """The FineTuneJob `ner` whose adapter `ner` the ModelServe serves, in `phase`."""

    def given(fake: FakeKube) -> None:
        job = fake.add(specs.finetunejob("ner"))
        fake.set_status(job, phase=phase, **status)

    return given


ADAPTER = [{"name": "ner", "fineTuneJob": "ner"}]
TRAINED = {"output": {"claim": "shared", "path": "runs/team-a/ner", "adapterPath": ADAPTER_PATH}}


# A ModelServe of the model FineTuneJob `ner` made (spec.model.fineTuneJob), and that job's outputs.
JOB_MODEL = {"fineTuneJob": "ner"}
MERGED = {"output": {**TRAINED["output"], "mergedPath": "runs/team-a/ner/merged"}}


def job_model_gone(fake: FakeKube) -> None:
    """Served from the merged model of `ner`, which is then deleted."""
    finetunejob("Succeeded", **MERGED)(fake)
    served(model=JOB_MODEL)(fake)
    fake.delete("FineTuneJob", NS, "ner")


def then(*steps: Callable[[FakeKube], None]) -> Callable[[FakeKube], None]:
    def given(fake: FakeKube) -> None:
        for step in steps:
            step(fake)

    return given


def sidecars_loaded(fake: FakeKube) -> None:
    """Every pod's adapter-sync sidecar says, in the report ConfigMap, that its vLLM loaded the adapter."""
    report = fake.get_quietly("ConfigMap", NS, "qwen-adapter-report") or {}
    loaded = {"adapters": {"ner": {"claimPath": ADAPTER_PATH, "state": "Loaded"}}}
    pods = [p["metadata"]["name"] for p in fake.list_quietly("Pod", NS)]
    fake.objects[("ConfigMap", NS, "qwen-adapter-report")] = {
        **report,
        "data": {pod: json.dumps(loaded) for pod in pods},
    }


def a_stranger_with_the_pods_labels(fake: FakeKube) -> None:
    """A ready pod that copies the vLLM pods' labels, not made by the Deployment, and whose adapter never
    loads: no replica of this ModelServe."""
    deployment = fake.get_quietly("Deployment", NS, "qwen-vllm") or {}
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    stranger = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "stranger", "labels": dict(labels)}}
    fake.add(stranger, NS, phase="Running", conditions=[{"type": "Ready", "status": "True"}])


def someone_elses_service(fake: FakeKube) -> None:
    new()(fake)
    fake.add({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "qwen-vllm"}}, manager="helm")


def autoscaling_removed(fake: FakeKube) -> None:
    """Served with an HPA; the user removes spec.autoscaling (a new generation)."""
    served(autoscaling=AUTOSCALING)(fake)
    fake.edit(fake.get_quietly("ModelServe", NS, "qwen") or {}, autoscaling=None)


def autoscaling_removed_and_seen(fake: FakeKube) -> None:
    """As above, but the status already names the new generation (a pass that wrote it and missed the
    prune: the operator stopped in between); only a full pass prunes now."""
    autoscaling_removed(fake)
    body = fake.get_quietly("ModelServe", NS, "qwen") or {}
    fake.set_status(body, observedGeneration=body["metadata"]["generation"])


def someone_elses_hpa(fake: FakeKube) -> None:
    served()(fake)
    fake.add(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "qwen-vllm"},
        },
        manager="helm",
    )


def replicas_refused(fake: FakeKube) -> None:
    new()(fake)
    reconcile(fake)
    refused = {
        "type": "ReplicaFailure",
        "status": "True",
        "reason": "FailedCreate",
        "message": 'pods "qwen-vllm-x" is forbidden: violates PodSecurity "restricted:latest"',
    }
    fake.set_status(fake.get_quietly("Deployment", NS, "qwen-vllm") or {}, conditions=[refused])


# --- the table ---------------------------------------------------------------------------------------


ROWS = [
    Row(
        "new: children applied, the Deployment after what it uses",
        new(),
        "Pending",
        "Starting",
        [*CHILDREN, *PRUNED_AUTOSCALERS, STATUS],
        [("Normal", "Starting")],
        {"Ready": "False", "Progressing": "True"},
        exists={("Deployment", "qwen-vllm"): True},
    ),
    Row(
        "missing claim: waits, creates nothing",
        lambda fake: fake.add(specs.modelserve("qwen")),
        "Pending",
        "MissingClaim",
        [STATUS],
        [("Normal", "MissingClaim")],
        exists={("Deployment", "qwen-vllm"): False, ("ConfigMap", "qwen-adapters"): False},
    ),
    Row(
        "a child's name taken by someone else: waits, nothing after it",
        someone_elses_service,
        "Pending",
        "ChildConflict",
        [*CHILDREN[:7], STATUS],  # nothing pruned either while a child is someone else's
        [("Warning", "ChildConflict")],
        exists={("Deployment", "qwen-vllm"): False},
        settled=False,  # a full pass (the resync) applies every child; a conflict asks again
    ),
    Row(
        "rolled out: serving",
        served(),
        "Ready",
        "Serving",
        [],  # rendered as last applied: nothing to write
        [],
        {"Ready": "True", "AdaptersReady": "True"},
    ),
    Row(
        "adapter waiting for its FineTuneJob: not in the ConfigMap, nothing to poll",
        then(finetunejob("Running"), served(ADAPTER)),
        "Ready",
        "Serving",
        [],
        [],
        {"Ready": "True", "AdaptersReady": "False"},
        adapters={},
    ),
    Row(
        "adapter's FineTuneJob succeeded: in the ConfigMap; no polling, the sidecars' report wakes it",
        then(finetunejob("Running"), served(ADAPTER), finetunejob("Succeeded", **TRAINED)),
        "Ready",
        "Serving",
        [*CHILDREN, STATUS],
        [],
        {"AdaptersReady": "False"},
        adapters={"ner": f"/mnt/claim/{ADAPTER_PATH}"},
    ),
    Row(
        "adapter loaded by every ready replica: ready",
        then(finetunejob("Succeeded", **TRAINED), served(ADAPTER), sidecars_loaded),
        "Ready",
        "Serving",
        [STATUS],  # the report is read, the children are as applied
        [("Normal", "AdapterAdded")],
        {"AdaptersReady": "True"},
        adapters={"ner": f"/mnt/claim/{ADAPTER_PATH}"},
    ),
    Row(
        "a pod with the vLLM pods' labels that the Deployment did not make: not a replica",
        then(
            finetunejob("Succeeded", **TRAINED),
            served(ADAPTER),
            sidecars_loaded,
            a_stranger_with_the_pods_labels,
        ),
        "Ready",
        "Serving",
        [STATUS],
        [("Normal", "AdapterAdded")],
        {"AdaptersReady": "True"},
        adapters={"ner": f"/mnt/claim/{ADAPTER_PATH}"},
    ),
    Row(
        "model from a FineTuneJob that runs: waits, creates nothing",
        then(finetunejob("Running"), new(model=JOB_MODEL)),
        "Pending",
        "WaitingForFineTuneJob",
        [STATUS],
        [("Normal", "WaitingForFineTuneJob")],
        {"Ready": "False", "Progressing": "True"},
        exists={("Deployment", "qwen-vllm"): False},
    ),
    Row(
        "model from a FineTuneJob not there: waits, creates nothing",
        new(model=JOB_MODEL),
        "Pending",
        "FineTuneJobNotFound",
        [STATUS],
        [("Normal", "FineTuneJobNotFound")],
        exists={("Deployment", "qwen-vllm"): False},
    ),
    Row(
        "model from a FineTuneJob that failed: a warning, creates nothing",
        then(finetunejob("Failed", message="attempt 1 failed"), new(model=JOB_MODEL)),
        "Pending",
        "FineTuneJobFailed",
        [STATUS],
        [("Warning", "FineTuneJobFailed")],
        exists={("Deployment", "qwen-vllm"): False},
    ),
    Row(
        "model from a FineTuneJob that merged: its merged model served",
        then(finetunejob("Succeeded", **MERGED), new(model=JOB_MODEL)),
        "Pending",
        "Starting",
        [*CHILDREN, *PRUNED_AUTOSCALERS, STATUS],
        [("Normal", "Starting")],
        exists={("Deployment", "qwen-vllm"): True},
    ),
    Row(
        "model from a LoRA FineTuneJob that merged nothing: refused, naming the fix",
        then(finetunejob("Succeeded", **TRAINED), new(model=JOB_MODEL)),
        "Failed",
        "InvalidModel",
        [STATUS],
        [("Warning", "InvalidModel")],
        exists={("Deployment", "qwen-vllm"): False},
    ),
    Row(
        "model's FineTuneJob deleted after it was served: served on from the claim",
        job_model_gone,
        "Ready",
        "Serving",
        [STATUS],  # status.model says so
        [],
        {"Ready": "True"},
    ),
    Row(
        "adapter's FineTuneJob failed: degraded, naming it",
        then(served(ADAPTER), finetunejob("Failed", message="attempt 1 failed")),
        "Degraded",
        "FineTuneJobFailed",
        [STATUS],
        [("Warning", "FineTuneJobFailed")],
        {"Ready": "True", "Degraded": "True", "AdaptersReady": "False"},
        adapters={},
    ),
    Row(
        "adapter's FineTuneJob not there",
        served(ADAPTER),
        "Ready",
        "Serving",
        [],
        [],
        {"AdaptersReady": "False"},
        adapters={},
    ),
    Row(
        "autoscaling removed (a new generation): its HPA pruned",
        autoscaling_removed,
        "Ready",
        "Serving",
        [*CHILDREN, *PRUNED_AUTOSCALERS, STATUS],
        exists={("HorizontalPodAutoscaler", "qwen-vllm"): False},
    ),
    Row(
        "autoscaling removed, generation seen: not pruned by a plain pass",
        autoscaling_removed_and_seen,
        "Ready",
        "Serving",
        [*CHILDREN, STATUS],
        exists={("HorizontalPodAutoscaler", "qwen-vllm"): True},
    ),
    Row(
        "autoscaling removed, generation seen: pruned by a full pass",
        autoscaling_removed_and_seen,
        "Ready",
        "Serving",
        [*CHILDREN, *PRUNED_AUTOSCALERS, STATUS],
        full=True,
        exists={("HorizontalPodAutoscaler", "qwen-vllm"): False},
        settled=False,  # a full pass (the resync) applies every child; a conflict asks again
    ),
    Row(
        "someone else's HPA under the autoscaler's name: left alone by the prune",
        someone_elses_hpa,
        "Ready",
        "Serving",
        [*CHILDREN, *PRUNED_AUTOSCALERS],
        full=True,
        exists={("HorizontalPodAutoscaler", "qwen-vllm"): True},
        settled=False,  # a full pass (the resync) applies every child; a conflict asks again
    ),
    Row(
        "autoscaling kept: applied, not pruned",
        served(autoscaling=AUTOSCALING),
        "Ready",
        "Serving",
        [*CHILDREN, HPA, *[d for d in PRUNED_AUTOSCALERS if d[1:] != HPA[1:]]],
        full=True,
        exists={("HorizontalPodAutoscaler", "qwen-vllm"): True},
        settled=False,  # a full pass (the resync) applies every child; a conflict asks again
    ),
    Row(
        "the vLLM pods refused by admission: says so",
        replicas_refused,
        "Pending",
        "PodsRefused",
        [STATUS],
        [("Warning", "PodsRefused")],
    ),
]


TABLE = Table(
    reconcile=lambda fake, full: reconcile(fake, full=full),
    status_write=STATUS,
    status_model=ModelServeStatus,
    namespace=NS,
)


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_reconcile(row: Row) -> None:
    fake, _ = run(TABLE, row)
    if ("apply", "ConfigMap", "qwen-adapters") in row.writes and row.phase != "Pending":
        config_map = fake.get_quietly("ConfigMap", NS, "qwen-adapters") or {}
        assert json.loads(config_map["data"]["adapters.json"]) == row.adapters


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_a_second_pass_changes_nothing(row: Row) -> None:
    run_twice(TABLE, row)


def test_a_settled_modelserve_writes_nothing() -> None:
    fake = FakeKube()
    served()(fake)
    fake.forget_calls()
    reconcile(fake)
    assert fake.writes() == []


def ready(fake: FakeKube) -> None:
    """The Deployment controller and the kubelet: its replica runs and is ready."""
    fake.deployment_ready(fake.get_quietly("Deployment", NS, "qwen-vllm") or {})


def as_watched(fake: FakeKube, cache: Cache) -> None:
    """What the operator's watches bring of the fake cluster into its cache (runtime/controller.py)."""
    for kind in cache.kinds:
        for found in fake.list_quietly("ConfigMap" if kind == ADAPTER_REPORT else kind, NS):
            cache.upsert(kind, found)


def cached_operator(fake: FakeKube, *steps: Callable[[FakeKube], None]) -> tuple[CachedKube, Cache]:
    """The steps played with the operator's own cache between the client and the fake cluster."""
    cache = Cache()
    client = CachedKube(fake, cache, events_in_background=False)  # type: ignore[arg-type]
    for step in steps:
        step(fake)
        as_watched(fake, cache)
        body = fake.get_quietly("ModelServe", NS, "qwen")
        if body is not None:
            modelserve.reconcile(client, body, SETTINGS, SIDECAR_IMAGE)
            as_watched(fake, cache)
    return client, cache


def test_a_settled_modelserve_reads_its_report_from_the_cache_and_asks_the_api_nothing() -> None:
    """At 500 ModelServes, a GET of each one's report per resync was most of a quiet operator's requests."""
    fake = FakeKube()
    client, _ = cached_operator(
        fake, finetunejob("Succeeded", **TRAINED), new(ADAPTER), ready, sidecars_loaded
    )
    fake.forget_calls()
    body = fake.get_quietly("ModelServe", NS, "qwen") or {}
    outcome = modelserve.reconcile(client, body, SETTINGS, SIDECAR_IMAGE, full=False)
    assert fake.calls == []
    assert [a["ready"] for a in outcome.status["adapters"]] == [True]


def test_a_resync_writes_nothing_while_every_child_stands_and_writes_back_one_changed_by_hand() -> None:
    """The resync's pass (full) asked the API server 17 times per ModelServe to change nothing."""
    fake = FakeKube()
    client, cache = cached_operator(fake, new(ADAPTER), ready)
    fake.forget_calls()
    modelserve.reconcile(client, fake.get_quietly("ModelServe", NS, "qwen") or {}, SETTINGS, SIDECAR_IMAGE)
    assert fake.calls == []

    edited = fake.get_quietly("ConfigMap", NS, "qwen-adapters") or {}
    fake.objects[("ConfigMap", NS, "qwen-adapters")] = {**edited, "data": {"adapters.json": "{}"}}
    as_watched(fake, cache)
    modelserve.reconcile(client, fake.get_quietly("ModelServe", NS, "qwen") or {}, SETTINGS, SIDECAR_IMAGE)
    assert ("apply", "ConfigMap", "qwen-adapters") in [tuple(c) for c in fake.writes()]
    assert (fake.get_quietly("ConfigMap", NS, "qwen-adapters") or {})["data"] == edited["data"]


def test_an_adapter_added_writes_what_its_rendering_changed_and_nothing_else() -> None:
    """Target: one edit, the writes it needs. It wrote all eight children, each after a GET."""
    fake = FakeKube()
    client, _ = cached_operator(fake, new([{"name": "a", "path": "runs/a"}]), ready)
    fake.edit(
        fake.get_quietly("ModelServe", NS, "qwen") or {},
        adapters=[{"name": "a", "path": "runs/a"}, {"name": "b", "path": "runs/b"}],
    )
    fake.forget_calls()
    modelserve.reconcile(client, fake.get_quietly("ModelServe", NS, "qwen") or {}, SETTINGS, SIDECAR_IMAGE)
    written = [tuple(c) for c in fake.writes()]
    assert ("apply", "ConfigMap", "qwen-adapters") in written
    assert not [w for w in written if w[1] in ("Deployment", "Service", "ServiceAccount", "Role")], written


def test_a_finetunejobs_model_is_what_vllm_serves() -> None:
    fake = FakeKube()
    then(finetunejob("Succeeded", **MERGED), new(model=JOB_MODEL))(fake)
    outcome = reconcile(fake)
    deployment = fake.get_quietly("Deployment", NS, "qwen-vllm") or {}
    vllm = deployment["spec"]["template"]["spec"]["containers"][0]
    assert vllm["args"][0] == "/mnt/claim/runs/team-a/ner/merged"
    assert not [
        c for c in deployment["spec"]["template"]["spec"].get("initContainers") or [] if "fetch" in c["name"]
    ]
    assert outcome.status["model"] == {"fineTuneJob": "ner", "path": "runs/team-a/ner/merged"}
    # A full fine-tune's output is itself the model.
    fake = FakeKube()
    full = specs.finetunejob("ner", config={**specs.FINETUNEJOB_SPEC["config"], "finetuning_type": "full"})
    fake.set_status(fake.add(full), phase="Succeeded", output={"claim": "shared", "path": "runs/team-a/ner"})
    new(model=JOB_MODEL)(fake)
    reconcile(fake)
    deployment = fake.get_quietly("Deployment", NS, "qwen-vllm") or {}
    assert deployment["spec"]["template"]["spec"]["containers"][0]["args"][0] == "/mnt/claim/runs/team-a/ner"


def test_a_served_finetunejob_model_goes_on_when_its_job_is_deleted_and_says_so() -> None:
    fake = FakeKube()
    job_model_gone(fake)
    outcome = reconcile(fake)
    assert outcome.status["model"]["path"] == "runs/team-a/ner/merged"
    assert "was deleted" in outcome.status["model"]["message"]
    deployment = fake.get_quietly("Deployment", NS, "qwen-vllm") or {}
    assert (
        deployment["spec"]["template"]["spec"]["containers"][0]["args"][0]
        == "/mnt/claim/runs/team-a/ner/merged"
    )


def test_keda_not_installed_says_so() -> None:
    fake = FakeKube(not_installed={"ScaledObject"})
    keda = {**AUTOSCALING, "provider": "keda", "prometheusAddress": "http://prometheus:9090"}
    new(autoscaling=keda)(fake)
    outcome = reconcile(fake)
    assert (outcome.status["phase"], outcome.status["reason"]) == ("Pending", "KedaNotInstalled")
    assert fake.get_quietly("Deployment", NS, "qwen-vllm") is not None, "the rest is applied regardless"


def test_the_sidecars_reports_survive_the_operators_apply() -> None:
    """The operator applies the report ConfigMap without data: what the sidecars wrote in it stays."""
    fake = FakeKube()
    then(finetunejob("Succeeded", **TRAINED), served(ADAPTER), sidecars_loaded)(fake)
    reconcile(fake)
    reconcile(fake, full=True)
    assert (fake.get_quietly("ConfigMap", NS, "qwen-adapter-report") or {}).get("data")


def test_a_finetunejob_created_again_under_the_same_name_keeps_its_adapter_served() -> None:
    """As a deleted one's does: the adapter it trained stays on the claim and in vLLM until the new one
    succeeds (it unserved the adapter from every replica for good)."""
    fake = FakeKube()
    then(finetunejob("Succeeded", **TRAINED), served(ADAPTER), sidecars_loaded)(fake)
    reconcile(fake)
    fake.delete("FineTuneJob", NS, "ner")
    finetunejob("Running")(fake)
    outcome = reconcile(fake)
    adapters = fake.get_quietly("ConfigMap", NS, "qwen-adapters") or {}
    assert "ner" in json.dumps(adapters.get("data") or {})
    entry = next(a for a in outcome.status["adapters"] if a["name"] == "ner")
    assert entry["path"] == ADAPTER_PATH
    assert "Running again" in json.dumps(outcome.status)


def test_a_modelserve_above_the_pod_security_limit_creates_nothing() -> None:
    fake = FakeKube()
    new(podSecurity={"seccompProfile": "Unconfined"})(fake)
    outcome = reconcile(fake)
    assert outcome.status["reason"] == "PodSecurityLimit"
    assert "seccompProfile: Unconfined needs Pod Security level privileged" in outcome.status["message"]
    assert fake.get_quietly("Deployment", NS, "qwen-vllm") is None
