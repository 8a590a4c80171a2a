"""What was observed of a FineTuneJob's children -> its status and Events (`kubetune.status.finetunejob`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from kubetune.api.validation import Problem
from kubetune.status.finetunejob import (
    CONDITION_TYPES,
    KSTATUS_TYPES,
    Event,
    Observation,
    compute,
    transitions,
)

NOW = "2025-03-04T05:06:07Z"
EARLIER = "2025-03-01T00:00:00Z"
JOB_START = "2025-03-02T10:00:00Z"
JOB_END = "2025-03-03T11:00:00Z"
UNSCHEDULABLE = "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
OOM_MESSAGE = "Traceback (most recent call last):\n...\ntorch.OutOfMemoryError: CUDA out of memory."


# --- small Kubernetes objects ------------------------------------------------------------------------


def job(
    *,
    suspend: bool = False,
    complete: bool = False,
    failed: str | None = None,
    success_criteria_met: bool = False,
) -> dict[str, Any]:
    """A Job as the API server returns it; `failed` is the reason of its Failed condition."""
    conditions = []
    if success_criteria_met:
        conditions.append({"type": "SuccessCriteriaMet", "status": "True"})
    if complete:
        conditions.append({"type": "Complete", "status": "True"})
    if failed:
        conditions.append({"type": "Failed", "status": "True", "reason": failed, "message": f"Job {failed}"})
    status: dict[str, Any] = {"conditions": conditions}
    if not suspend:
        status["startTime"] = JOB_START
    if complete or failed:
        status["completionTime"] = JOB_END
    return {
        "metadata": {"name": "ner-a1", "labels": {"kubetune.io/attempt": "1"}},
        "spec": {"suspend": suspend, "completions": 2, "parallelism": 2},
        "status": status,
    }


def pod(
    index: int,
    phase: str = "Pending",
    *,
    conditions: list[dict[str, Any]] | None = None,
    containers: list[dict[str, Any]] | None = None,
    init_containers: list[dict[str, Any]] | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": f"ner-a1-{index}-abcde",
        "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
    }
    if deleting:
        metadata["deletionTimestamp"] = NOW
    status: dict[str, Any] = {"phase": phase}
    if conditions is not None:
        status["conditions"] = conditions
    if containers is not None:
        status["containerStatuses"] = containers
    if init_containers is not None:
        status["initContainerStatuses"] = init_containers
    return {"metadata": metadata, "status": status}


def unschedulable(index: int) -> dict[str, Any]:
    condition = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": UNSCHEDULABLE,
    }
    return pod(index, conditions=[condition])


def waiting(index: int, reason: str, message: str = "", init: bool = False) -> dict[str, Any]:
    state = [
        {
            "name": "fetch-model" if init else "trainer",
            "state": {"waiting": {"reason": reason, "message": message}},
        }
    ]
    return pod(index, init_containers=state) if init else pod(index, containers=state)


def terminated(index: int, exit_code: int, reason: str, message: str = "") -> dict[str, Any]:
    state = {"terminated": {"exitCode": exit_code, "reason": reason, "message": message}}
    return pod(index, "Failed", containers=[{"name": "trainer", "state": state}])


def observation(**fields: Any) -> Observation:
    values: dict[str, Any] = {
        "generation": 3,
        "now": NOW,
        "previous": {},
        "nodes": 2,
        "gpus_per_node": 8,
        "max_restarts": 2,
    }
    values.update(fields)
    return Observation(**values)


def true_conditions(status: dict[str, Any]) -> set[str]:
    """The FineTuneJob's own conditions that are True (the kstatus ones are checked on their own)."""
    return {c["type"] for c in status["conditions"] if c["status"] == "True" and c["type"] in CONDITION_TYPES}


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    (found,) = [c for c in status["conditions"] if c["type"] == type_]
    return found


# --- phase, reason, conditions -----------------------------------------------------------------------

RUNNING = [pod(0, "Running"), pod(1, "Running")]
# A status as the operator wrote it after a run: Created is what says the training really ran.
RAN = [{"type": "Created", "status": "True", "reason": "ChildrenCreated", "lastTransitionTime": JOB_START}]

SUCCEEDED_BEFORE = {
    "phase": "Succeeded",
    "reason": "Completed",
    "message": "attempt 1 completed",
    "startTime": JOB_START,
    "completionTime": JOB_END,
    "conditions": RAN,
}

CASES = [
    pytest.param({}, "Pending", "Creating", set(), ["creating"], id="no-job"),
    pytest.param(
        {"job": job(suspend=True), "suspend": True},
        "Suspended",
        "Suspended",
        {"Created", "Suspended"},
        ["spec.suspend"],
        id="suspended-by-spec",
    ),
    pytest.param(
        {"job": job(suspend=True), "queue_name": "gpu-queue"},
        "Pending",
        "Queued",
        {"Created"},
        ["gpu-queue"],
        id="queued-in-kueue",
    ),
    pytest.param(
        {"job": job(suspend=True)},
        "Pending",
        "Resuming",
        {"Created"},
        [],
        id="resuming-after-suspend",
    ),
    pytest.param(
        {"job": job(), "pods": RUNNING},
        "Running",
        "Training",
        {"Created", "Running"},
        ["2 of 2"],
        id="all-nodes-running",
    ),
    pytest.param(
        {"job": job(), "pods": [pod(0, "Succeeded"), pod(1, "Running")]},
        "Running",
        "Training",
        {"Created", "Running"},
        ["2 of 2"],
        id="a-finished-pod-counts-until-the-job-completes",
    ),
    pytest.param(
        {"job": job(), "pods": [pod(0, "Running"), pod(1)]},
        "Pending",
        "Starting",
        {"Created"},
        ["1 of 2"],
        id="some-nodes-running",
    ),
    pytest.param(
        {"job": job(), "pods": [pod(0, "Running"), pod(1, "Running", deleting=True)]},
        "Pending",
        "Starting",
        {"Created"},
        ["1 of 2"],
        id="terminating-pod-does-not-count",
    ),
    pytest.param(
        {"job": job(), "pods": [pod(0, "Running"), unschedulable(1)]},
        "Pending",
        "Unschedulable",
        {"Created"},
        ["ner-a1-1-abcde", UNSCHEDULABLE],
        id="unschedulable",
    ),
    pytest.param(
        {"job": job(), "pods": [waiting(0, "ErrImagePull", "manifest unknown"), pod(1)]},
        "Pending",
        "ImagePullError",
        {"Created"},
        ["ErrImagePull", "manifest unknown"],
        id="image-pull-error",
    ),
    pytest.param(
        {"job": job(), "pods": [waiting(0, "ImagePullBackOff", init=True)]},
        "Pending",
        "ImagePullError",
        {"Created"},
        ["ImagePullBackOff"],
        id="init-container-image-pull-backoff",
    ),
    pytest.param(
        {"job": job(), "pods": [waiting(0, "CreateContainerConfigError", 'secret "hf-token" not found')]},
        "Pending",
        "ContainerConfigError",
        {"Created"},
        ['secret "hf-token" not found'],
        id="missing-secret-in-pod",
    ),
    pytest.param(
        {"job": job(complete=True)},
        "Succeeded",
        "Completed",
        {"Created", "Succeeded"},
        [],
        id="job-complete",
    ),
    pytest.param(
        {"job": job(success_criteria_met=True)},
        "Succeeded",
        "Completed",
        {"Created", "Succeeded"},
        [],
        id="job-success-criteria-met",
    ),
    pytest.param(
        {
            "job": job(failed="BackoffLimitExceeded"),
            "pods": [terminated(0, 137, "OOMKilled", OOM_MESSAGE), pod(1, "Failed")],
            "attempt": 2,
            "max_restarts": 1,
        },
        "Failed",
        "RestartLimitExceeded",
        {"Created", "Failed"},
        [
            "attempt 2",
            "node rank 0",
            "exited with code 137 (OOMKilled)",
            "torch.OutOfMemoryError: CUDA out of memory.",
            "1 of 1",
        ],
        id="oom-restart-limit-exceeded",
    ),
    pytest.param(
        {"job": job(failed="BackoffLimitExceeded"), "pods": [terminated(1, 1, "Error", "bad dataset")]},
        "Pending",
        "Restarting",
        {"Created"},
        ["attempt 1 failed", "node rank 1", "exited with code 1 (Error)", "bad dataset"],
        id="failed-with-restarts-left",
    ),
    pytest.param(
        {"job": job(failed="BackoffLimitExceeded"), "max_restarts": 0},
        "Failed",
        "AttemptFailed",
        {"Created", "Failed"},
        ["Job BackoffLimitExceeded"],
        id="failed-no-restarts-allowed",
    ),
    pytest.param(
        {"job": job(failed="DeadlineExceeded"), "max_restarts": 5},
        "Failed",
        "DeadlineExceeded",
        {"Created", "Failed"},
        ["activeDeadlineSeconds"],
        id="deadline-exceeded",
    ),
    pytest.param(
        {
            "problems": [
                Problem("InvalidConfig", "unknown LLaMA-Factory argument `lora_rnak`", terminal=True),
                Problem("MissingClaim", "PersistentVolumeClaim shared not found", terminal=False),
            ]
        },
        "Failed",
        "InvalidConfig",
        {"Failed"},
        ["lora_rnak"],
        id="terminal-problem",
    ),
    pytest.param(
        {"problems": [Problem("MissingClaim", "PersistentVolumeClaim shared not found", terminal=False)]},
        "Pending",
        "MissingClaim",
        set(),
        ["PersistentVolumeClaim shared not found"],
        id="waiting-problem",
    ),
    pytest.param(
        {"previous": SUCCEEDED_BEFORE},
        "Succeeded",
        "Completed",
        {"Created", "Succeeded"},
        ["attempt 1 completed"],
        id="succeeded-and-job-gone",
    ),
    pytest.param(
        {
            "previous": {
                "phase": "Failed",
                "reason": "RestartLimitExceeded",
                "message": "attempt 3 failed",
                "conditions": RAN,
            }
        },
        "Failed",
        "RestartLimitExceeded",
        {"Created", "Failed"},
        ["attempt 3 failed"],
        id="failed-and-job-gone",
    ),
]


@pytest.mark.parametrize(("fields", "phase", "reason", "true", "message_has"), CASES)
def test_phase_reason_and_conditions(
    fields: dict[str, Any], phase: str, reason: str, true: set[str], message_has: list[str]
) -> None:
    status = compute(observation(**fields))
    assert (status["phase"], status["reason"]) == (phase, reason)
    assert true_conditions(status) == true
    assert [c["type"] for c in status["conditions"]] == list(CONDITION_TYPES + KSTATUS_TYPES)
    kstatus = {c["type"]: c["status"] for c in status["conditions"] if c["type"] in KSTATUS_TYPES}
    assert kstatus == {
        "Ready": "True" if phase == "Succeeded" else "False",
        "Reconciling": "False" if phase in ("Succeeded", "Failed") else "True",
        "Stalled": "True" if phase == "Failed" else "False",
    }
    for part in message_has:
        assert part in status["message"]
    # Every condition carries the same explanation, for `kubectl describe`.
    assert {c["message"] for c in status["conditions"]} == {status["message"]}


@pytest.mark.parametrize(("fields", "phase", "reason", "true", "message_has"), CASES)
def test_observed_generation_and_shape_on_every_status(
    fields: dict[str, Any], phase: str, reason: str, true: set[str], message_has: list[str]
) -> None:
    status = compute(observation(**fields))
    assert status["observedGeneration"] == 3
    assert all(c["observedGeneration"] == 3 for c in status["conditions"])
    assert status["shape"] == "2x8"
    attempt = fields.get("attempt", 1)
    assert (status["attempt"], status["restarts"]) == (attempt, attempt - 1)


def test_failed_condition_reason_is_what_kubectl_wait_users_read() -> None:
    status = compute(observation(job=job(failed="DeadlineExceeded")))
    assert condition(status, "Failed")["reason"] == "DeadlineExceeded"
    assert condition(status, "Succeeded")["status"] == "False"


# --- times -------------------------------------------------------------------------------------------


def test_start_time_is_set_when_all_nodes_run_and_then_kept() -> None:
    assert "startTime" not in compute(observation(job=job(), pods=[pod(0, "Running"), pod(1)]))
    first = compute(observation(job=job(), pods=RUNNING))
    assert first["startTime"] == NOW
    later = compute(observation(job=job(), pods=RUNNING, previous=first, now="2025-03-05T00:00:00Z"))
    assert later["startTime"] == NOW
    assert "completionTime" not in later


def test_succeeded_has_the_jobs_times() -> None:
    status = compute(observation(job=job(complete=True)))
    assert status["completionTime"] == JOB_END
    assert status["startTime"] == JOB_START


def test_failed_has_a_completion_time() -> None:
    status = compute(observation(job=job(failed="DeadlineExceeded")))
    assert status["completionTime"] == JOB_END


def test_finished_times_are_kept_once_set() -> None:
    previous = {**SUCCEEDED_BEFORE, "startTime": EARLIER, "completionTime": EARLIER}
    status = compute(observation(job=job(complete=True), previous=previous))
    assert (status["startTime"], status["completionTime"]) == (EARLIER, EARLIER)


def test_succeeded_and_job_gone_keeps_times_and_output() -> None:
    output = {"claim": "shared", "path": "runs/team-a/ner", "adapterPath": "runs/team-a/ner"}
    status = compute(observation(previous=SUCCEEDED_BEFORE, output=output))
    assert status["completionTime"] == JOB_END
    assert status["startTime"] == JOB_START
    assert status["output"] == output


@pytest.mark.parametrize("current_job", [None, job(complete=True)], ids=["job-gone", "job-complete"])
def test_a_finished_verdict_is_not_overturned_by_a_later_spec_problem(current_job: dict | None) -> None:
    problem = Problem("InvalidConfig", "unknown LLaMA-Factory argument `use_unsloth`", terminal=True)
    status = compute(observation(previous=SUCCEEDED_BEFORE, job=current_job, problems=[problem]))
    assert status["phase"] == "Succeeded"


def test_a_spec_refused_before_it_ran_proceeds_once_fixed() -> None:
    refused = {"phase": "Failed", "reason": "InvalidConfig", "message": "unknown LLaMA-Factory argument `x`"}
    status = compute(observation(previous=refused))
    assert (status["phase"], status["reason"]) == ("Pending", "Creating")


# --- lastTransitionTime ------------------------------------------------------------------------------


def test_last_transition_time_is_now_without_previous_conditions() -> None:
    status = compute(observation())
    assert {c["lastTransitionTime"] for c in status["conditions"]} == {NOW}


def test_last_transition_time_kept_while_status_unchanged_and_moved_when_it_flips() -> None:
    running = compute(observation(job=job(), pods=RUNNING, now=EARLIER))
    assert condition(running, "Running")["lastTransitionTime"] == EARLIER

    still_running = compute(observation(job=job(), pods=RUNNING, previous=running))
    assert {c["lastTransitionTime"] for c in still_running["conditions"]} == {EARLIER}

    done = compute(observation(job=job(complete=True), previous=still_running))
    assert condition(done, "Running")["status"] == "False"
    assert condition(done, "Running")["lastTransitionTime"] == NOW  # flipped True -> False
    assert condition(done, "Succeeded")["lastTransitionTime"] == NOW  # flipped False -> True
    assert condition(done, "Created")["lastTransitionTime"] == EARLIER  # True all along
    assert condition(done, "Failed")["lastTransitionTime"] == EARLIER  # False all along


def test_reason_change_alone_does_not_move_last_transition_time() -> None:
    starting = compute(observation(job=job(), pods=[pod(0, "Running"), pod(1)], now=EARLIER))
    stuck = compute(observation(job=job(), pods=[pod(0, "Running"), unschedulable(1)], previous=starting))
    running = condition(stuck, "Running")
    assert (running["status"], running["reason"], running["lastTransitionTime"]) == (
        "False",
        "Unschedulable",
        EARLIER,
    )


def test_observed_generation_follows_the_resource() -> None:
    first = compute(observation(job=job(), pods=RUNNING, generation=1))
    second = compute(observation(job=job(), pods=RUNNING, generation=2, previous=first))
    assert second["observedGeneration"] == 2
    assert {c["observedGeneration"] for c in second["conditions"]} == {2}


# --- Events ------------------------------------------------------------------------------------------


def status_of(phase: str, reason: str, attempt: int = 1, message: str = "what happened") -> dict[str, Any]:
    return {"phase": phase, "reason": reason, "attempt": attempt, "message": message}


@pytest.mark.parametrize(
    ("previous", "current", "expected"),
    [
        pytest.param({}, status_of("Pending", "Creating"), [("Normal", "Creating")], id="first-status"),
        pytest.param(
            status_of("Pending", "Creating"),
            status_of("Pending", "Starting"),
            [("Normal", "Starting")],
            id="reason",
        ),
        pytest.param(
            status_of("Pending", "Starting"),
            status_of("Running", "Training"),
            [("Normal", "Training")],
            id="running",
        ),
        pytest.param(
            status_of("Running", "Training"),
            status_of("Succeeded", "Completed"),
            [("Normal", "Completed")],
            id="succeeded",
        ),
        pytest.param(
            status_of("Pending", "Creating"),
            status_of("Suspended", "Suspended"),
            [("Normal", "Suspended")],
            id="suspended",
        ),
        pytest.param(
            status_of("Pending", "Starting"),
            status_of("Pending", "Unschedulable"),
            [("Warning", "Unschedulable")],
            id="unschedulable",
        ),
        pytest.param(
            status_of("Pending", "Starting"),
            status_of("Pending", "ImagePullError"),
            [("Warning", "ImagePullError")],
            id="image-pull",
        ),
        pytest.param(
            status_of("Running", "Training"),
            status_of("Failed", "RestartLimitExceeded"),
            [("Warning", "RestartLimitExceeded")],
            id="failed",
        ),
        pytest.param(
            status_of("Running", "Training"),
            status_of("Failed", "DeadlineExceeded"),
            [("Warning", "DeadlineExceeded")],
            id="deadline",
        ),
        pytest.param(
            {}, status_of("Failed", "InvalidConfig"), [("Warning", "InvalidConfig")], id="invalid-spec"
        ),
        pytest.param(
            status_of("Running", "Training"),
            status_of("Pending", "Restarting"),
            [("Warning", "Restarting")],
            id="attempt-failed",
        ),
        pytest.param(
            status_of("Pending", "Restarting", attempt=1),
            status_of("Pending", "Starting", attempt=2),
            [("Warning", "Restarting"), ("Normal", "Starting")],
            id="next-attempt-starts",
        ),
        pytest.param(
            status_of("Running", "Training", attempt=1),
            status_of("Running", "Training", attempt=2),
            [("Warning", "Restarting")],
            id="attempt-grows-alone",
        ),
        pytest.param(
            status_of("Running", "Training"), status_of("Running", "Training"), [], id="nothing-changed"
        ),
        pytest.param(
            status_of("Running", "Training", message="attempt 1: 2 of 2 node(s) running"),
            status_of("Running", "Training", message="attempt 1: 2 of 2 node(s) running, now longer"),
            [],
            id="message-only",
        ),
    ],
)
def test_transitions(
    previous: dict[str, Any], current: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    events = transitions(previous, current)
    assert [(e.type, e.reason) for e in events] == expected
    assert all(isinstance(e, Event) and e.message for e in events)


def test_transition_event_carries_the_status_message() -> None:
    current = status_of(
        "Pending", "Unschedulable", message=f"pod ner-a1-1 cannot be scheduled: {UNSCHEDULABLE}"
    )
    (event,) = transitions(status_of("Pending", "Starting"), current)
    assert event.message == current["message"]


def test_restarting_event_names_the_new_attempt() -> None:
    events = transitions(
        status_of("Running", "Training", attempt=2), status_of("Running", "Training", attempt=3)
    )
    assert [e.reason for e in events] == ["Restarting"]
    assert "attempt 3" in events[0].message


def test_computed_statuses_give_one_event_per_change() -> None:
    """A run as the reconciler sees it, pass after pass: Events only where something changed."""
    passes = [
        observation(),
        observation(job=job(), pods=[pod(0), pod(1)]),
        observation(job=job(), pods=[pod(0), pod(1)]),
        observation(job=job(), pods=[pod(0, "Running"), unschedulable(1)]),
        observation(job=job(), pods=RUNNING),
        observation(job=job(), pods=RUNNING),
        observation(job=job(complete=True)),
        observation(),
    ]
    previous: dict[str, Any] = {}
    reasons = []
    for obs in passes:
        current = compute(replace(obs, previous=previous))
        reasons.append([e.reason for e in transitions(previous, current)])
        previous = current
    assert reasons == [["Creating"], ["Starting"], [], ["Unschedulable"], ["Training"], [], ["Completed"], []]
