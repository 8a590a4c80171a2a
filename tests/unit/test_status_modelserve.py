"""ModelServe: what was observed -> the status, and the Events of a transition (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from kubetune.api.validation import Problem
from kubetune.status.conditions import Event
from kubetune.status.modelserve import AdapterState, Observation, compute, transitions
from tests import specs

BASE: dict[str, Any] = specs.modelserve_spec()


def deployment(ready: int, desired: int = 1, updated: int | None = None, progress: str = "") -> dict:
    updated = desired if updated is None else updated
    complete = updated >= desired and ready >= desired
    reason = progress or ("NewReplicaSetAvailable" if complete else "ReplicaSetUpdated")
    return {
        "metadata": {"generation": 1},
        "spec": {"replicas": desired},
        "status": {
            "observedGeneration": 1,
            "replicas": max(desired, updated),
            "readyReplicas": ready,
            "updatedReplicas": updated,
            "availableReplicas": ready,
            "conditions": [{"type": "Progressing", "status": "True", "reason": reason}],
        },
    }


def observe(**fields: Any) -> Observation:
    return Observation(
        generation=2,
        now="2026-11-23T10:00:00Z",
        previous=fields.pop("previous", {}),
        endpoint="http://qwen.team-a.svc:8000/v1",
        served_model_name="qwen2.5-7b",
        selector="kubetune.io/modelserve=qwen",
        desired_replicas=fields.pop("desired", 1),
        **fields,
    )


TWO = {"desired": 2}
DONE, STUCK = "NewReplicaSetAvailable", "ProgressDeadlineExceeded"
WAITING = AdapterState("ner", False, None, "WaitingForFineTuneJob", "waiting for FineTuneJob ner to succeed")
FAILED = AdapterState("ner", False, None, "FineTuneJobFailed", "FineTuneJob ner failed: OOM")
READY = AdapterState("ner", True, "runs/team-a/ner")


def ready_pod(name: str = "qwen-vllm-a") -> dict:
    return {
        "metadata": {"name": name},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }


def report(**states: tuple[str, str] | str) -> dict:
    """A sidecar's report: {adapter: state} or {adapter: (state, message)}, at READY's path."""
    adapters = {}
    for name, state in states.items():
        state, message = state if isinstance(state, tuple) else (state, None)
        entry = {"state": state, "path": f"/mnt/claim/runs/team-a/{name}", "claimPath": f"runs/team-a/{name}"}
        if message:
            entry["message"] = message
        adapters[name] = entry
    return {"adapters": adapters}


LOADED = {"pods": [ready_pod()], "reports": {"qwen-vllm-a": report(ner="Loaded")}}


@pytest.mark.parametrize(
    ("fields", "phase", "ready", "progressing", "degraded", "adapters_ready"),
    [
        ({}, "Pending", "False", "True", "False", "True"),
        ({"deployment": deployment(0)}, "Pending", "False", "True", "False", "True"),
        ({"deployment": deployment(1)}, "Ready", "True", "False", "False", "True"),
        ({"deployment": deployment(1, 2, updated=1), **TWO}, "Progressing", "True", "True", "False", "True"),
        # Rolled out earlier, then a replica stopped being ready.
        ({"deployment": deployment(1, 2, progress=DONE), **TWO}, "Degraded", "True", "False", "True", "True"),
        ({"deployment": deployment(1), "adapters": [WAITING]}, "Ready", "True", "False", "False", "False"),
        ({"deployment": deployment(1), "adapters": [FAILED]}, "Degraded", "True", "False", "True", "False"),
        ({"deployment": deployment(1), "adapters": [READY], **LOADED}, "Ready", "True", "False", "False",
         "True"),
        ({"deployment": deployment(1), "adapters": [READY], "pods": [ready_pod()]}, "Ready", "True", "False",
         "False", "False"),
        ({"deployment": deployment(1), "adapters": [READY], "pods": [ready_pod()],
          "reports": {"qwen-vllm-a": report(ner=("Failed", "rank 64 is above 16"))}}, "Degraded", "True",
         "False", "True", "False"),
        ({"problems": [Problem("InvalidSpec", "bad", True)]}, "Failed", "False", "False", "True", "True"),
        ({"problems": [Problem("MissingClaim", "no", False)]}, "Pending", "False", "True", "False", "True"),
        ({"deployment": deployment(1, 2, progress=STUCK), **TWO}, "Degraded", "True", "False",
         "True", "True"),
        ({"deployment": deployment(0, 0), "desired": 0}, "Pending", "False", "False", "False", "True"),
    ],
    ids=[
        "creating", "starting", "ready", "rolling-out", "degraded", "adapter-waiting", "adapter-failed",
        "adapter-loaded", "adapter-loading", "adapter-refused-by-vllm", "invalid", "missing-claim", "stuck",
        "scaled-to-zero",
    ],
)  # fmt: skip
def test_status(fields, phase, ready, progressing, degraded, adapters_ready) -> None:
    status = compute(observe(**fields))
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert status["phase"] == phase
    assert (conditions["Ready"], conditions["Progressing"], conditions["Degraded"]) == (
        ready,
        progressing,
        degraded,
    )
    assert conditions["AdaptersReady"] == adapters_ready
    assert all(c["observedGeneration"] == 2 for c in status["conditions"])


def test_served_models_are_what_every_ready_replica_loaded() -> None:
    sql = AdapterState("sql", True, "runs/team-a/sql")
    pods = [ready_pod("a"), ready_pod("b")]
    reports = {"a": report(ner="Loaded", sql="Loaded"), "b": report(ner="Loaded")}
    status = compute(
        observe(deployment=deployment(2, 2), adapters=[READY, sql], pods=pods, reports=reports, **TWO)
    )
    assert status["servedModels"] == ["qwen2.5-7b", "ner"], "sql would 404 on replica b"
    assert status["adaptersDisplay"] == "1/2"
    assert status["endpoint"] == "http://qwen.team-a.svc:8000/v1"
    by_name = {a["name"]: a for a in status["adapters"]}
    assert by_name["ner"]["loadedReplicas"] == 2
    assert (by_name["sql"]["reason"], by_name["sql"]["message"]) == (
        "Loading",
        "loaded by 1 of 2 ready vLLM replica(s)",
    )
    # A report of an older path (before the adapter moved) does not count.
    moved = {
        "a": report(ner="Loaded"),
        "b": {"adapters": {"ner": {"state": "Loaded", "path": "/mnt/claim/old", "claimPath": "old"}}},
    }
    status = compute(observe(deployment=deployment(2, 2), adapters=[READY], pods=pods, reports=moved, **TWO))
    assert status["servedModels"] == ["qwen2.5-7b"]
    # Nothing is served before a replica is ready.
    assert compute(observe(deployment=deployment(0), adapters=[READY]))["servedModels"] == []


UNSCHEDULABLE_POD = {
    "metadata": {"name": "qwen-vllm-x"},
    "status": {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                        "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."}],
    },
}  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "phase", "reason", "progressing", "prefix"),
    [
        ({"deployment": deployment(0)}, "Pending", "Unschedulable", "True", "pod qwen-vllm-x"),
        # A scale-up or a rollout whose new pod finds no GPU: served by the old one, and says why not more.
        ({"deployment": deployment(1, 2, updated=1), **TWO}, "Progressing", "Unschedulable", "True",
         "1 of 2 replica(s) ready; rolling out; pod qwen-vllm-x"),
        ({"deployment": deployment(1, 2, progress=DONE), **TWO}, "Degraded", "Unschedulable", "False",
         "1 of 2 replica(s) ready; pod qwen-vllm-x"),
        ({"deployment": deployment(1, 2, progress=STUCK), **TWO}, "Degraded", "ProgressDeadlineExceeded",
         "False", "1 of 2 replica(s) ready; the rollout is stuck; pod qwen-vllm-x"),
    ],
    ids=["no-replica", "rolling-out", "replica-lost", "stuck"],
)  # fmt: skip
def test_unschedulable_pods_are_quoted(fields, phase, reason, progressing, prefix) -> None:
    ready = [ready_pod()] if fields["deployment"]["status"]["readyReplicas"] else []
    status = compute(observe(pods=[*ready, UNSCHEDULABLE_POD], **fields))
    assert (status["phase"], status["reason"]) == (phase, reason)
    assert status["message"].startswith(prefix), status["message"]
    assert status["message"].endswith(
        "cannot be scheduled: 0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
    )
    assert {c["type"]: c["status"] for c in status["conditions"]}["Progressing"] == progressing


def test_an_unschedulable_replica_is_a_warning() -> None:
    rolling = {"deployment": deployment(1, 2, updated=1), **TWO}
    serving = compute(observe(pods=[ready_pod()], **rolling))
    short = compute(observe(pods=[ready_pod(), UNSCHEDULABLE_POD], previous=serving, **rolling))
    assert [(e.type, e.reason) for e in transitions(serving, short)] == [("Warning", "Unschedulable")]


def test_events_for_phase_changes_and_adapters() -> None:
    before = compute(observe(deployment=deployment(1), adapters=[WAITING]))
    after = compute(observe(deployment=deployment(1), adapters=[READY], previous=before, **LOADED))
    assert transitions(before, after) == [Event("Normal", "AdapterAdded", "serving ner")]
    assert transitions(after, after) == []
