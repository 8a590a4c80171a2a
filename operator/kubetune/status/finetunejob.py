"""What was observed of a FineTuneJob's children -> its status. One pure function, `compute`.

The operator never derives the phase from `progress` (the launcher's report); only from the Job and its
pods. `progress` and `metrics` belong to the launcher and are left out of what this computes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubetune.api.finetunejob import Phase
from kubetune.api.validation import Problem
from kubetune.status import curves

CONDITION_TYPES = ("Created", "Running", "Succeeded", "Failed", "Suspended")
# kstatus' abnormal-true conditions and Ready, which Flux's health checks and `kubectl wait` read: Ready once
# trained, Reconciling while it is on its way (or paused), Stalled when it failed.
KSTATUS_TYPES = ("Ready", "Reconciling", "Stalled")


@dataclass(frozen=True)
class Observation:
    """Everything the status is computed from."""

    generation: int
    now: str  # RFC 3339, injected so the function stays pure
    previous: dict[str, Any]  # the current .status
    nodes: int = 1
    gpus_per_node: int = 1
    max_restarts: int = 0
    suspend: bool = False
    queue_name: str | None = None
    attempt: int = 1
    problems: list[Problem] = field(default_factory=list)
    job: dict[str, Any] | None = None  # the current attempt's Job
    pods: list[dict[str, Any]] = field(default_factory=list)  # the current attempt's pods
    output: dict[str, Any] | None = None
    overfitting_patience: int = curves.DEFAULT_PATIENCE


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


# --- reading Kubernetes objects --------------------------------------------------------------------


def _condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == type_ and condition.get("status") == "True":
            return condition
    return None


def job_finished(job: dict[str, Any] | None) -> str | None:
    """`Complete`, `Failed`, or None while the Job runs."""
    if _condition(job, "Complete") or _condition(job, "SuccessCriteriaMet"):
        return "Complete"
    if _condition(job, "Failed"):
        return "Failed"
    return None


def job_failure_reason(job: dict[str, Any] | None) -> str | None:
    """The reason of a Job's Failed condition (BackoffLimitExceeded, DeadlineExceeded, ...)."""
    condition = _condition(job, "Failed")
    return None if condition is None else condition.get("reason")


def _pod_rank(pod: dict[str, Any]) -> str:
    annotations = pod.get("metadata", {}).get("annotations") or {}
    return annotations.get("batch.kubernetes.io/job-completion-index", "?")


def pod_failure(pod: dict[str, Any]) -> str | None:
    """`pod x (node rank 0) exited with code 137 (OOMKilled): <termination message>` for a failed pod."""
    status = pod.get("status") or {}
    if status.get("phase") != "Failed":
        return None
    name = pod.get("metadata", {}).get("name", "?")
    for container in status.get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated")
        if terminated and terminated.get("exitCode", 0) != 0:
            code = terminated.get("exitCode")
            reason = terminated.get("reason") or "Error"
            message = (terminated.get("message") or "").strip().splitlines()
            detail = f": {message[-1]}" if message else ""
            return f"pod {name} (node rank {_pod_rank(pod)}) exited with code {code} ({reason}){detail}"
    reason = status.get("reason") or "Failed"
    return f"pod {name} (node rank {_pod_rank(pod)}) failed ({reason}): {status.get('message', '')}".rstrip(
        ": "
    )


_WAITING_PROBLEMS = {
    "ErrImagePull": "ImagePullError",
    "ImagePullBackOff": "ImagePullError",
    "InvalidImageName": "ImagePullError",
    "CreateContainerConfigError": "ContainerConfigError",
    "CreateContainerError": "ContainerConfigError",
}


def pod_pending_reason(pod: dict[str, Any]) -> tuple[str, str] | None:
    """Why a pod is not running yet, in words a person can act on; None when nothing is wrong yet."""
    status = pod.get("status") or {}
    name = pod.get("metadata", {}).get("name", "?")
    for condition in status.get("conditions") or []:
        unscheduled = condition.get("type") == "PodScheduled" and condition.get("status") == "False"
        if unscheduled and condition.get("reason") == "Unschedulable":
            return "Unschedulable", f"pod {name} cannot be scheduled: {condition.get('message', '')}"
    for container in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason in _WAITING_PROBLEMS:
            return _WAITING_PROBLEMS[reason], f"pod {name}: {reason}: {waiting.get('message', '')}".rstrip(
                ": "
            )
    return None


# --- the status ------------------------------------------------------------------------------------


@dataclass
class _Verdict:
    phase: Phase
    reason: str
    message: str
    created: bool = False
    running: bool = False
    suspended: bool = False


def has_finished(status: dict[str, Any]) -> bool:
    """Whether training ran and ended (Succeeded, or Failed after running): a verdict that stands.

    A FineTuneJob refused for its spec never ran: once the spec is fixed, it proceeds.
    """
    created = any(
        c.get("type") == "Created" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    return created and status.get("phase") in (Phase.SUCCEEDED, Phase.FAILED)


def _verdict(obs: Observation) -> _Verdict:
    previous_phase = obs.previous.get("phase")
    job = obs.job
    finished = job_finished(job)
    # What already happened is not overturned by a later spec edit or a newer operator's checks.
    if finished == "Complete":
        return _Verdict(Phase.SUCCEEDED, "Completed", f"attempt {obs.attempt} completed", created=True)
    if has_finished(obs.previous) and job is None:
        # Finished earlier, and the Job is gone (deleted by hand or by TTL): the verdict stands.
        return _Verdict(Phase(previous_phase), _previous_reason(obs), _previous_message(obs), created=True)
    terminal = [p for p in obs.problems if p.terminal]
    if terminal:
        return _Verdict(Phase.FAILED, terminal[0].reason, "; ".join(p.message for p in terminal))
    if finished == "Failed":
        failed_condition = _condition(job, "Failed") or {}
        failures = [f for f in (pod_failure(p) for p in obs.pods) if f]
        detail = "; ".join(failures) or failed_condition.get("message") or "the training Job failed"
        if job_failure_reason(job) == "DeadlineExceeded":
            return _Verdict(
                Phase.FAILED,
                "DeadlineExceeded",
                f"attempt {obs.attempt} ran past activeDeadlineSeconds",
                True,
            )
        restarts = obs.attempt - 1
        if restarts >= obs.max_restarts:
            return _Verdict(
                Phase.FAILED,
                "RestartLimitExceeded" if obs.max_restarts else "AttemptFailed",
                f"attempt {obs.attempt} failed: {detail} (restarts used: {restarts} of {obs.max_restarts})",
                created=True,
            )
        # The handler starts the next attempt; until its Job shows up, say so.
        return _Verdict(Phase.PENDING, "Restarting", f"attempt {obs.attempt} failed: {detail}", created=True)

    waiting = [p for p in obs.problems if not p.terminal]
    if waiting:
        return _Verdict(Phase.PENDING, waiting[0].reason, "; ".join(p.message for p in waiting))
    if job is None:
        return _Verdict(Phase.PENDING, "Creating", "creating the training Job")
    if (job.get("spec") or {}).get("suspend"):
        if obs.suspend:
            return _Verdict(
                Phase.SUSPENDED, "Suspended", "suspended: spec.suspend is true", True, suspended=True
            )
        if obs.queue_name:
            return _Verdict(
                Phase.PENDING, "Queued", f"waiting for Kueue to admit it from queue {obs.queue_name}", True
            )
        return _Verdict(Phase.PENDING, "Resuming", "resuming the training Job", created=True)

    live = [p for p in obs.pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    # A pod that already finished still counts: the Job is about to complete.
    running = [p for p in live if (p.get("status") or {}).get("phase") in ("Running", "Succeeded")]
    if len(running) >= obs.nodes:
        return _Verdict(
            Phase.RUNNING,
            "Training",
            f"attempt {obs.attempt}: {len(running)} of {obs.nodes} node(s) running",
            created=True,
            running=True,
        )
    for pod in live:
        pending = pod_pending_reason(pod)
        if pending:
            return _Verdict(Phase.PENDING, pending[0], pending[1], created=True)
    return _Verdict(
        Phase.PENDING,
        "Starting",
        f"attempt {obs.attempt}: {len(running)} of {obs.nodes} node(s) running",
        created=True,
    )


def _previous_condition(obs: Observation, type_: str) -> dict[str, Any]:
    for condition in obs.previous.get("conditions") or []:
        if condition.get("type") == type_:
            return condition
    return {}


def _previous_reason(obs: Observation) -> str:
    return obs.previous.get("reason") or "Finished"


def _previous_message(obs: Observation) -> str:
    return obs.previous.get("message") or ""


def _conditions(obs: Observation, verdict: _Verdict) -> list[dict[str, Any]]:
    wanted = {
        "Created": (verdict.created, "ChildrenCreated" if verdict.created else verdict.reason),
        "Running": (verdict.running, verdict.reason),
        "Succeeded": (verdict.phase == Phase.SUCCEEDED, verdict.reason),
        "Failed": (verdict.phase == Phase.FAILED, verdict.reason),
        "Suspended": (verdict.suspended, verdict.reason),
        "Ready": (verdict.phase == Phase.SUCCEEDED, verdict.reason),
        "Reconciling": (verdict.phase not in (Phase.SUCCEEDED, Phase.FAILED), verdict.reason),
        "Stalled": (verdict.phase == Phase.FAILED, verdict.reason),
    }
    conditions = []
    for type_ in CONDITION_TYPES + KSTATUS_TYPES:
        is_true, reason = wanted[type_]
        status = "True" if is_true else "False"
        previous = _previous_condition(obs, type_)
        # lastTransitionTime moves only when the status flips.
        since = previous.get("lastTransitionTime") if previous.get("status") == status else None
        conditions.append(
            {
                "type": type_,
                "status": status,
                "reason": reason,
                "message": verdict.message,
                "lastTransitionTime": since or obs.now,
                "observedGeneration": obs.generation,
            }
        )
    return conditions


def compute(obs: Observation) -> dict[str, Any]:
    """The FineTuneJob's status (the fields the operator owns)."""
    verdict = _verdict(obs)
    previous = obs.previous
    job_status = (obs.job or {}).get("status") or {}
    status: dict[str, Any] = {
        "phase": verdict.phase.value,
        "reason": verdict.reason,
        "message": verdict.message,
        "conditions": _conditions(obs, verdict),
        "observedGeneration": obs.generation,
        "attempt": obs.attempt,
        "restarts": obs.attempt - 1,
        "shape": f"{obs.nodes}x{obs.gpus_per_node}",
    }
    start = previous.get("startTime")
    if not start and verdict.running:
        start = obs.now
    if not start and verdict.phase in (Phase.SUCCEEDED, Phase.FAILED):
        start = job_status.get("startTime")
    if start:
        status["startTime"] = start
    if verdict.phase in (Phase.SUCCEEDED, Phase.FAILED):
        status["completionTime"] = (
            previous.get("completionTime") or job_status.get("completionTime") or obs.now
        )
    if obs.output is not None:
        status["output"] = obs.output
    _add_curves(obs, status)
    return status


def _add_curves(obs: Observation, status: dict[str, Any]) -> None:
    """From the launcher's loss history: the Overfitting condition and the best checkpoint (status.curves)."""
    points = curves.history(obs.previous.get("progress"))
    path = (obs.output or {}).get("path")
    overfitting = curves.condition(
        points, path, _previous_condition(obs, curves.CONDITION), obs.now, obs.generation,
        obs.overfitting_patience,
    )  # fmt: skip
    if overfitting is not None:
        status["conditions"].append(overfitting)
    best = curves.best_checkpoint(points, path) if path else None
    if best:
        status["output"] = {**status["output"], "bestCheckpoint": best}


def transitions(previous: dict[str, Any], current: dict[str, Any]) -> list[Event]:
    """The Events to record for a change of phase, reason or attempt."""
    events: list[Event] = []
    if current.get("attempt", 1) > (previous.get("attempt") or 1):
        events.append(
            Event(
                "Warning", "Restarting", f"starting attempt {current['attempt']} from the newest checkpoint"
            )
        )
    old_phase, new_phase = previous.get("phase"), current.get("phase")
    old_reason, new_reason = previous.get("reason"), current.get("reason")
    if (old_phase, old_reason) != (new_phase, new_reason):
        message = current.get("message", "")
        failing = new_phase == Phase.FAILED or new_reason in {
            "Unschedulable",
            "ImagePullError",
            "ContainerConfigError",
            "Restarting",
        }
        events.append(Event("Warning" if failing else "Normal", new_reason or str(new_phase), message))
    overfitted = curves.became_overfitted(previous.get("conditions") or [], current.get("conditions") or [])
    if overfitted is not None:
        events.append(Event("Warning", curves.CONDITION, overfitted))
    return events
