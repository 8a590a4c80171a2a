"""What was observed of a FineTuneJob's children -> its status and Events (`kubetune.status.finetunejob`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from kubetune.api.finetunejob import check_output_path, default_path_owner, output_path_of, paths_overlap
from kubetune.api.validation import Problem
from kubetune.status.attempts import (
    AttemptEnd,
    History,
    attempt_end,
    history,
    job_stopped,
    next_attempt_allowed,
    ttl_expired,
)
from kubetune.status.conditions import Event
from kubetune.status.finetunejob import (
    CHECK_TYPES,
    CONDITION_TYPES,
    KSTATUS_TYPES,
    Observation,
    compute,
    transitions,
)
from kubetune.status.pods import owned_by

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
            "restarts": 1,
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
    assert [c["type"] for c in status["conditions"]] == list(CONDITION_TYPES + CHECK_TYPES + KSTATUS_TYPES)
    kstatus = {c["type"]: c["status"] for c in status["conditions"] if c["type"] in KSTATUS_TYPES}
    assert kstatus == {
        "Ready": "True" if phase == "Succeeded" else "False",
        "Reconciling": "False" if phase in ("Succeeded", "Failed") else "True",
        "Stalled": "True" if phase == "Failed" else "False",
    }
    for part in message_has:
        assert part in status["message"]
    # Every condition carries the same explanation, for `kubectl describe` (SpecValid speaks of the spec).
    assert {c["message"] for c in status["conditions"] if c["type"] != "SpecValid"} == {status["message"]}


@pytest.mark.parametrize(("fields", "phase", "reason", "true", "message_has"), CASES)
def test_observed_generation_and_shape_on_every_status(
    fields: dict[str, Any], phase: str, reason: str, true: set[str], message_has: list[str]
) -> None:
    status = compute(observation(**fields))
    assert status["observedGeneration"] == 3
    assert all(c["observedGeneration"] == 3 for c in status["conditions"])
    assert status["shape"] == "2x8"
    assert (status["attempt"], status["restarts"]) == (fields.get("attempt", 1), fields.get("restarts", 0))


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


# --- issue 10: the status never lies -----------------------------------------------------------------

TYPO = Problem("InvalidConfig", "spec.config.lora_rnak: unknown argument (did you mean lora_rank?)", True)


def job_deciding(condition: str, reason: str, message: str = "", *, stopped: bool = False) -> dict[str, Any]:
    """A Job whose controller has decided (FailureTarget) and, once every pod stopped, concluded."""
    decided = job()
    decided["status"]["conditions"] = [
        {"type": condition, "status": "True", "reason": reason, "message": message}
    ]
    if stopped:
        decided["status"]["conditions"].append(
            {"type": "Failed", "status": "True", "reason": reason, "message": message}
        )
    return decided


DISRUPTION = "Pod t/ner-a1-0-abcde has condition DisruptionTarget matching FailJob rule at index 0"


def test_a_spec_refused_while_an_attempt_runs_keeps_it_running() -> None:
    status = compute(observation(job=job(), pods=RUNNING, problems=[TYPO]))
    assert (status["phase"], status["reason"]) == ("Running", "Training")
    assert "completionTime" not in status
    spec_valid = condition(status, "SpecValid")
    assert (spec_valid["status"], spec_valid["reason"]) == ("False", "InvalidConfig")
    assert "spec.config.lora_rnak" in spec_valid["message"]
    assert "keeps running" in spec_valid["message"]
    assert condition(status, "Failed")["status"] == "False"
    # kstatus (Flux) reads the first True of Reconciling and Stalled: the applied spec is refused.
    assert [condition(status, t)["status"] for t in ("Ready", "Reconciling", "Stalled")] == [
        "False",
        "False",
        "True",
    ]
    assert condition(status, "Stalled")["reason"] == "InvalidConfig"
    assert not ttl_expired(status, 0, NOW)


def test_a_missing_reference_while_an_attempt_runs_keeps_it_running_and_reconciling() -> None:
    missing = Problem("MissingConfigMap", "ConfigMap ds not found (for spec.dataset.configMapRef)", False)
    status = compute(observation(job=job(), pods=RUNNING, problems=[missing]))
    assert status["phase"] == "Running"
    assert condition(status, "SpecValid")["status"] == "False"
    assert condition(status, "Stalled")["status"] == "False"
    assert condition(status, "Reconciling")["status"] == "True"


def test_a_refused_spec_is_announced_once_by_an_event_naming_the_field() -> None:
    running = compute(observation(job=job(), pods=RUNNING))
    refused = compute(observation(job=job(), pods=RUNNING, problems=[TYPO], previous=running))
    events = transitions(running, refused)
    assert [(e.type, e.reason) for e in events] == [("Warning", "InvalidConfig")]
    assert "spec.config.lora_rnak" in events[0].message
    again = compute(observation(job=job(), pods=RUNNING, problems=[TYPO], previous=refused))
    assert transitions(refused, again) == []


def test_spec_valid_is_true_without_problems() -> None:
    assert condition(compute(observation(job=job(), pods=RUNNING)), "SpecValid")["status"] == "True"


def test_a_spec_refused_before_it_ran_never_expires() -> None:
    status = compute(observation(problems=[TYPO]))
    assert status["phase"] == "Failed"
    assert "completionTime" not in status
    assert not ttl_expired(status, 0, NOW)


def test_ttl_expires_a_training_that_ran_and_ended() -> None:
    done = compute(observation(job=job(complete=True)))
    assert ttl_expired(done, 0, NOW)
    assert not ttl_expired(done, 10**9, NOW)
    assert not ttl_expired(done, None, NOW)


def test_a_failure_is_seen_at_the_jobs_failure_target() -> None:
    """The Job controller decided; its Failed waits for the other pods' grace period, the status not."""
    failing = job_deciding("FailureTarget", "BackoffLimitExceeded", "Job has reached the backoff limit")
    status = compute(
        observation(
            job=failing,
            pods=[terminated(1, 137, "OOMKilled"), pod(0, "Running", deleting=True)],
            max_restarts=0,
        )
    )
    assert (status["phase"], status["reason"]) == ("Failed", "AttemptFailed")
    assert "node rank 1" in status["message"] and "exited with code 137 (OOMKilled)" in status["message"]
    assert attempt_end(failing) == AttemptEnd.FAILED
    assert not job_stopped(failing)


def test_a_failure_with_restarts_left_waits_for_the_pods_to_stop() -> None:
    failing = job_deciding("FailureTarget", "BackoffLimitExceeded")
    status = compute(observation(job=failing, pods=[terminated(0, 1, "Error", "bad dataset")]))
    assert (status["phase"], status["reason"]) == ("Pending", "Restarting")
    assert "exited with code 1 (Error): bad dataset" in status["message"]
    assert "once its pods have stopped" in status["message"]


def test_a_disruption_uses_up_no_restart() -> None:
    disrupted = job_deciding("FailureTarget", "PodFailurePolicy", DISRUPTION, stopped=True)
    assert attempt_end(disrupted) == AttemptEnd.DISRUPTED
    status = compute(observation(job=disrupted, max_restarts=0))
    assert (status["phase"], status["reason"]) == ("Pending", "Disrupted")
    assert "not counted as a restart" in status["message"]
    assert status["restarts"] == 0


def test_a_pod_failure_policy_failure_that_is_not_a_disruption_counts() -> None:
    other = job_deciding("Failed", "PodFailurePolicy", "Container trainer for pod x failed with exit code 3")
    assert attempt_end(other) == AttemptEnd.FAILED


def test_deadline_exceeded_seen_at_failure_target() -> None:
    assert attempt_end(job_deciding("FailureTarget", "DeadlineExceeded")) == AttemptEnd.DEADLINE_EXCEEDED


def attempt_job(attempt: int, *conditions: tuple[str, str, str]) -> dict[str, Any]:
    found = job()
    found["metadata"]["labels"]["kubetune.io/attempt"] = str(attempt)
    found["status"]["conditions"] = [
        {"type": type_, "status": "True", "reason": reason, "message": message}
        for type_, reason, message in conditions
    ]
    return found


def test_history_counts_failures_and_disruptions_of_earlier_attempts_only() -> None:
    jobs = [
        attempt_job(1, ("Failed", "BackoffLimitExceeded", "")),
        attempt_job(2, ("Failed", "PodFailurePolicy", DISRUPTION)),
        attempt_job(3, ("FailureTarget", "BackoffLimitExceeded", "")),
    ]
    assert history(jobs, 3, {}) == History(restarts=1, disruptions=1)
    assert history(jobs, 4, {}) == History(restarts=2, disruptions=1)
    # A Job deleted by hand does not hand its restart back.
    assert history(jobs[1:], 3, {"restarts": 1}) == History(restarts=1, disruptions=1)


@pytest.mark.parametrize(
    ("end", "restarts", "max_restarts", "allowed"),
    [
        (AttemptEnd.FAILED, 0, 1, True),
        (AttemptEnd.FAILED, 1, 1, False),
        (AttemptEnd.DISRUPTED, 5, 0, True),
        (AttemptEnd.DEADLINE_EXCEEDED, 0, 5, False),
        (AttemptEnd.SUCCEEDED, 0, 5, False),
        (None, 0, 5, False),
    ],
)
def test_next_attempt_allowed(
    end: AttemptEnd | None, restarts: int, max_restarts: int, allowed: bool
) -> None:
    assert next_attempt_allowed(end, History(restarts=restarts), max_restarts) is allowed


def test_children_are_recognised_by_their_owners_uid() -> None:
    ours = {"metadata": {"ownerReferences": [{"uid": "new-uid"}]}}
    orphaned = {"metadata": {"labels": {"kubetune.io/finetunejob": "ner"}}}
    assert owned_by(ours, "new-uid")
    assert not owned_by(ours, "old-uid")
    assert not owned_by(orphaned, "new-uid")


# --- issue 10, point 4: a pod that cannot start says why --------------------------------------------


def test_init_container_crash_loop_is_reported_with_its_last_exit() -> None:
    crashing = pod(
        0,
        init_containers=[
            {
                "name": "fetch-model",
                "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                "lastState": {
                    "terminated": {"exitCode": 1, "reason": "Error", "message": "401 Unauthorized"}
                },
            }
        ],
    )
    status = compute(observation(job=job(), pods=[crashing, pod(1)]))
    assert (status["phase"], status["reason"]) == ("Pending", "CrashLoopBackOff")
    for part in ("init container fetch-model", "exited with code 1 (Error): 401 Unauthorized", "4 times"):
        assert part in status["message"]


def test_a_failed_init_container_is_named_in_the_failure() -> None:
    failed = pod(
        0,
        "Failed",
        init_containers=[
            {"name": "fetch-model", "state": {"terminated": {"exitCode": 2, "reason": "Error"}}}
        ],
        containers=[{"name": "trainer", "state": {"waiting": {"reason": "PodInitializing"}}}],
    )
    status = compute(observation(job=job(failed="BackoffLimitExceeded"), pods=[failed], max_restarts=0))
    assert "init container fetch-model exited with code 2 (Error)" in status["message"]


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (
            'pods "ner-a1-0-x" is forbidden: violates PodSecurity "restricted:latest": runAsNonRoot != true',
            "PodsRefused",
        ),
        ('pods "ner-a1-0-x" is forbidden: exceeded quota: gpus, requested: pods=1', "PodsRefused"),
    ],
)
def test_pods_the_job_cannot_create_are_reported_not_starting_forever(event: str, reason: str) -> None:
    status = compute(observation(job=job(), pods=[], failed_create=event))
    assert (status["phase"], status["reason"]) == ("Pending", reason)
    assert event in status["message"]
    assert [e.type for e in transitions({}, status)] == ["Warning"]


def test_a_stale_failed_create_is_ignored_once_the_pods_exist() -> None:
    status = compute(observation(job=job(), pods=RUNNING, failed_create="exceeded quota"))
    assert status["phase"] == "Running"


# --- issue 12: storage.path stays on the claim and apart from other jobs -----------------------------


@pytest.mark.parametrize(
    ("path", "normalized"),
    [("runs/a", "runs/a"), ("runs//a/./b/", "runs/a/b"), ("./out", "out")],
)
def test_output_path_is_normalised(path: str, normalized: str) -> None:
    assert check_output_path(path) == normalized
    assert output_path_of(path, "ns", "job") == normalized


@pytest.mark.parametrize("path", ["../other-team", "runs/../../etc", "runs/..", ".", "./", "a/.."])
def test_output_path_may_not_leave_the_claim_or_be_its_root(path: str) -> None:
    with pytest.raises(ValueError, match=r"storage\.path"):
        check_output_path(path)


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ("runs/ns/a", "runs/ns/a", True),
        ("runs/ns", "runs/ns/a", True),
        ("runs/ns/a/x", "runs/ns/a", True),
        ("runs/ns/a", "runs/ns/ab", False),
        ("runs/ns/a", "runs/other/a", False),
    ],
)
def test_output_paths_overlap(a: str, b: str, overlap: bool) -> None:
    assert paths_overlap(a, b) is overlap


@pytest.mark.parametrize(
    ("path", "owner"),
    [
        ("runs/ns/other", "other"),
        ("runs/ns/other/sub", "other"),
        ("runs/ns/job/sub", None),  # its own default path: harmless
        ("runs/ns", "*"),
        ("runs", "*"),
        ("runs/other-ns/x", None),
        ("experiments/ner", None),
    ],
)
def test_a_set_path_may_not_touch_another_jobs_default_path(path: str, owner: str | None) -> None:
    assert default_path_owner(path, "ns", "job") == owner
