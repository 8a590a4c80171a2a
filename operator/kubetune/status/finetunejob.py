"""What was observed of a FineTuneJob's children -> its status. One pure function, `compute`.

The operator never derives the phase from `progress` (the launcher's report); only from the Job and its
pods. `progress` and `metrics` belong to the launcher and are left out of what this computes.

The attempts' rules, which the reconcile acts on too, are in status/attempts.py: the handler and the status
agree by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubetune.api.common import Problem
from kubetune.api.finetunejob import Phase
from kubetune.status import conditions, curves
from kubetune.status.attempts import (
    DISRUPTION_CONDITION,
    AttemptEnd,
    History,
    attempt_end,
    has_finished,
    job_stopped,
    next_attempt_allowed,
)
from kubetune.status.pods import failed_container, pod_pending_reason, terminating

CONDITION_TYPES = ("Created", "Running", "Succeeded", "Failed", "Suspended")
# Only when spec.dataset.preprocess is enabled: whether the tokenized dataset is ready.
PREPROCESS_TYPES = ("Preprocessed",)
# Whether the spec as it is now could start an attempt; it never changes the phase of one that runs.
CHECK_TYPES = ("SpecValid",)
# kstatus' abnormal-true conditions and Ready, which Flux's health checks and `kubectl wait` read: Ready once
# trained, Reconciling while it is on its way (or paused), Stalled when it failed or its spec is refused.
# kstatus reads them in list order and stops at the first that is True, so Reconciling is False when
# Stalled is True.
KSTATUS_TYPES = ("Ready", "Reconciling", "Stalled")


@dataclass(frozen=True)
class PreprocessObservation:
    """The preprocessing Job (None until created) and its pods, for a spec that enables preprocessing."""

    job: dict[str, Any] | None = None
    pods: list[dict[str, Any]] = field(default_factory=list)


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
    restarts: int = 0  # earlier attempts that failed (they count against max_restarts)
    disruptions: int = 0  # earlier attempts ended by a disruption (they do not)
    problems: list[Problem] = field(default_factory=list)
    job: dict[str, Any] | None = None  # the current attempt's Job
    pods: list[dict[str, Any]] = field(default_factory=list)  # the current attempt's pods
    failed_create: str | None = None  # the Job controller's newest FailedCreate Event on that Job
    output: dict[str, Any] | None = None
    overfitting_patience: int = curves.DEFAULT_PATIENCE
    preprocess: PreprocessObservation | None = None  # None: the spec does not preprocess


# --- reading Kubernetes objects --------------------------------------------------------------------


def _pod_rank(pod: dict[str, Any]) -> str:
    annotations = pod.get("metadata", {}).get("annotations") or {}
    return annotations.get("batch.kubernetes.io/job-completion-index", "?")


def pod_failure(pod: dict[str, Any]) -> str | None:
    """`pod x (node rank 0) exited with code 137 (OOMKilled): <termination message>` for a failed pod."""
    status = pod.get("status") or {}
    if status.get("phase") != "Failed":
        return None
    name = pod.get("metadata", {}).get("name", "?")
    where = f"pod {name} (node rank {_pod_rank(pod)})"
    failed = failed_container(status, "trainer")
    if failed is not None:
        return f"{where}{failed}"
    disruption = conditions.true_of(pod, DISRUPTION_CONDITION)
    if disruption is not None:
        why = f"{disruption.get('reason')}): {disruption.get('message', '')}".rstrip(": ")
        return f"{where} was stopped ({why}"
    reason = status.get("reason") or "Failed"
    return f"{where} failed ({reason}): {status.get('message', '')}".rstrip(": ")


# Failed pods named in a status message or an Event: a wide attempt can fail on every one of its pods, and
# a line each (up to 4 KiB of termination message each) would outgrow what etcd stores for an object.
FAILURES_SHOWN = 3
FAILURE_CHARS = 1024  # of each: the pod, its exit code, and the end of its termination message


def _clip(text: str) -> str:
    if len(text) <= FAILURE_CHARS:
        return text
    return text[: FAILURE_CHARS // 4] + " [...] " + text[-(FAILURE_CHARS * 3 // 4) :]


def pod_failures(pods: list[dict[str, Any]]) -> str:
    """The failed pods in words, lowest node rank first (rank 0's error is most often the cause), at most
    FAILURES_SHOWN of them, then how many more failed; "" when none did."""

    def rank(pod: dict[str, Any]) -> tuple[int, str]:
        value = _pod_rank(pod)
        return (int(value) if value.isdigit() else 1 << 30, pod.get("metadata", {}).get("name", ""))

    failures = [f for f in (pod_failure(p) for p in sorted(pods, key=rank)) if f]
    shown = "; ".join(_clip(f) for f in failures[:FAILURES_SHOWN])
    more = len(failures) - FAILURES_SHOWN
    return f"{shown}; and {more} more pod(s) failed" if more > 0 else shown


def failed_create_message(event_message: str) -> tuple[str, str]:
    """The Job controller cannot create a pod: refused by admission (Pod Security, a quota, a webhook)."""
    # One reason for every refusal (as a ModelServe says it), the admission's own words in the message.
    return "PodsRefused", f"the training pods are refused: {event_message}"


# --- the status ------------------------------------------------------------------------------------


@dataclass
class _Verdict:
    phase: Phase
    reason: str
    message: str
    created: bool = False
    running: bool = False
    suspended: bool = False


def _verdict(obs: Observation) -> _Verdict:
    previous_phase = obs.previous.get("phase")
    job = obs.job
    end = attempt_end(job)
    # What already happened is not overturned by a later spec edit or a newer operator's checks.
    if end == AttemptEnd.SUCCEEDED:
        return _Verdict(Phase.SUCCEEDED, "Completed", f"attempt {obs.attempt} completed", created=True)
    if has_finished(obs.previous) and job is None:
        # Finished earlier, and the Job is gone (deleted by hand or by TTL): the verdict stands.
        return _Verdict(Phase(previous_phase), _previous_reason(obs), _previous_message(obs), created=True)
    if end is not None:
        return _ended(obs, end)
    if job is None:
        # No attempt in flight: what is wrong with the spec (or missing) is what holds it up.
        terminal = [p for p in obs.problems if p.terminal]
        if terminal:
            return _Verdict(Phase.FAILED, terminal[0].reason, "; ".join(p.message for p in terminal))
        waiting = [p for p in obs.problems if not p.terminal]
        if waiting:
            return _Verdict(Phase.PENDING, waiting[0].reason, "; ".join(p.message for p in waiting))
        if obs.preprocess is not None and not preprocessed(obs.preprocess.job):
            return _preprocessing(obs, obs.preprocess)
        return _Verdict(Phase.PENDING, "Creating", "creating the training Job")
    # An attempt is in flight: its Job and pods say how it goes. Problems with the spec as edited since
    # are reported by SpecValid; they would only apply to a next attempt.
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

    live = [p for p in obs.pods if not terminating(p)]
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
    if obs.failed_create and len(live) < obs.nodes:
        reason, message = failed_create_message(obs.failed_create)
        return _Verdict(Phase.PENDING, reason, message, created=True)
    return _Verdict(
        Phase.PENDING,
        "Starting",
        f"attempt {obs.attempt}: {len(running)} of {obs.nodes} node(s) running",
        created=True,
    )


def preprocessed(job: dict[str, Any] | None) -> bool:
    """Whether the preprocessing Job succeeded: only then is the training Job created."""
    return attempt_end(job) == AttemptEnd.SUCCEEDED


def preprocessing_failure(pre: PreprocessObservation) -> str | None:
    """`pod x exited with code 1 (Error): dataset error: ...` once the preprocessing Job failed."""
    end = attempt_end(pre.job)
    if end is None or end == AttemptEnd.SUCCEEDED:
        return None
    for pod in pre.pods:
        if (pod.get("status") or {}).get("phase") != "Failed":
            continue
        name = pod.get("metadata", {}).get("name", "?")
        failed = failed_container(pod.get("status") or {}, "preprocess")
        return f"pod {name}{failed}" if failed is not None else pod_failure(pod)
    condition = conditions.true_of(pre.job, "Failed") or conditions.true_of(pre.job, "FailureTarget") or {}
    return condition.get("message") or condition.get("reason") or "the preprocessing Job failed"


def _preprocessing(obs: Observation, pre: PreprocessObservation) -> _Verdict:
    """Before the training Job: the CPU-only preprocessing Job runs, waits, or failed."""
    failure = preprocessing_failure(pre)
    if failure is not None:
        # Final: the data or the config is wrong, and no GPU was held; retrying would fail the same way.
        return _Verdict(
            Phase.FAILED,
            "PreprocessingFailed",
            f"preprocessing failed (no training Job was created): {failure}",
            created=True,
        )
    job = pre.job
    if job is None:
        return _Verdict(Phase.PREPROCESSING, "Preprocessing", "creating the preprocessing Job")
    name = job["metadata"].get("name", "?")
    if (job.get("spec") or {}).get("suspend"):
        return _Verdict(Phase.SUSPENDED, "Suspended", "suspended: spec.suspend is true", True, suspended=True)
    for pod in pre.pods:
        pending = pod_pending_reason(pod)
        if pending:
            return _Verdict(Phase.PREPROCESSING, pending[0], f"preprocessing: {pending[1]}", created=True)
    return _Verdict(
        Phase.PREPROCESSING,
        "Preprocessing",
        f"tokenizing the datasets on CPU (Job {name}); the training Job follows once it succeeded",
        created=True,
    )


def _preprocessed_condition(pre: PreprocessObservation, verdict: _Verdict) -> tuple[bool, str, str]:
    if preprocessed(pre.job):
        return True, "Tokenized", "the tokenized dataset is ready on the claim"
    if verdict.reason == "PreprocessingFailed" or preprocessing_failure(pre) is not None:
        return False, "PreprocessingFailed", verdict.message
    return False, "Preprocessing", "tokenizing the datasets on CPU"


def _ended(obs: Observation, end: AttemptEnd) -> _Verdict:
    """The current attempt failed, was disrupted or ran out of time (seen at the Job's FailureTarget)."""
    condition = conditions.true_of(obs.job, "Failed") or conditions.true_of(obs.job, "FailureTarget") or {}
    detail = pod_failures(obs.pods) or condition.get("message") or "the training Job failed"
    attempt = obs.attempt
    if end == AttemptEnd.DEADLINE_EXCEEDED:
        return _Verdict(
            Phase.FAILED, "DeadlineExceeded", f"attempt {attempt} ran past activeDeadlineSeconds", True
        )
    used = History(restarts=obs.restarts, disruptions=obs.disruptions)
    if next_attempt_allowed(end, used, obs.max_restarts):
        # The handler starts the next attempt once this one's pods have stopped (two attempts never
        # write the same output directory); until its Job shows up, say so.
        then = f"attempt {attempt + 1} resumes from the newest checkpoint"
        if not job_stopped(obs.job):
            then += " once its pods have stopped"
        if end == AttemptEnd.DISRUPTED:
            return _Verdict(
                Phase.PENDING,
                "Disrupted",
                f"attempt {attempt} was disrupted (not counted as a restart): {detail}; {then}",
                created=True,
            )
        return _Verdict(
            Phase.PENDING, "Restarting", f"attempt {attempt} failed: {detail}; {then}", created=True
        )
    return _Verdict(
        Phase.FAILED,
        "RestartLimitExceeded" if obs.max_restarts else "AttemptFailed",
        f"attempt {attempt} failed: {detail} (restarts used: {obs.restarts} of {obs.max_restarts})",
        created=True,
    )


def _previous_condition(obs: Observation, type_: str) -> dict[str, Any]:
    return _status_condition(obs.previous, type_)


def _previous_reason(obs: Observation) -> str:
    return obs.previous.get("reason") or "Finished"


def _previous_message(obs: Observation) -> str:
    return obs.previous.get("message") or ""


def _spec_valid(obs: Observation) -> tuple[bool, str, str]:
    """SpecValid: whether the spec as it is now could start an attempt, and if not, why (naming the field)."""
    if not obs.problems:
        return True, "Valid", "the spec is valid"
    terminal = [p for p in obs.problems if p.terminal]
    shown = terminal or obs.problems
    message = "; ".join(p.message for p in shown)
    if obs.job is not None and attempt_end(obs.job) is None:
        message += f" (attempt {obs.attempt} keeps running with the spec it started with)"
    return False, shown[0].reason, message


def _stalled(obs: Observation, verdict: _Verdict) -> bool:
    """kstatus Stalled: it cannot get further without a change from a person."""
    if verdict.phase == Phase.FAILED:
        return True
    refused = any(p.terminal for p in obs.problems)
    return refused and verdict.phase != Phase.SUCCEEDED


def _conditions(obs: Observation, verdict: _Verdict) -> list[dict[str, Any]]:
    spec_valid, spec_reason, spec_message = _spec_valid(obs)
    stalled = _stalled(obs, verdict)
    finished = verdict.phase in (Phase.SUCCEEDED, Phase.FAILED)
    stalled_reason = verdict.reason if verdict.phase == Phase.FAILED else spec_reason
    wanted: dict[str, conditions.Wanted] = {
        "Created": (
            verdict.created,
            "ChildrenCreated" if verdict.created else verdict.reason,
            verdict.message,
        ),
        "Running": (verdict.running, verdict.reason, verdict.message),
        "Succeeded": (verdict.phase == Phase.SUCCEEDED, verdict.reason, verdict.message),
        "Failed": (verdict.phase == Phase.FAILED, verdict.reason, verdict.message),
        "Suspended": (verdict.suspended, verdict.reason, verdict.message),
        "SpecValid": (spec_valid, spec_reason, spec_message),
        "Ready": (verdict.phase == Phase.SUCCEEDED, verdict.reason, verdict.message),
        "Reconciling": (not finished and not stalled, verdict.reason, verdict.message),
        "Stalled": (
            stalled,
            stalled_reason if stalled else verdict.reason,
            (verdict.message if verdict.phase == Phase.FAILED else spec_message)
            if stalled
            else verdict.message,
        ),
    }
    types = CONDITION_TYPES
    if obs.preprocess is not None:
        wanted["Preprocessed"] = _preprocessed_condition(obs.preprocess, verdict)
        types += PREPROCESS_TYPES
    return conditions.build(
        wanted, types + CHECK_TYPES + KSTATUS_TYPES, obs.previous.get("conditions"), obs.now, obs.generation
    )


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
        "restarts": obs.restarts,
        "disruptions": obs.disruptions,
        "shape": f"{obs.nodes}x{obs.gpus_per_node}",
    }
    start = previous.get("startTime")
    if not start and verdict.running:
        start = obs.now
    ran_and_ended = verdict.created and verdict.phase in (Phase.SUCCEEDED, Phase.FAILED)
    if not start and ran_and_ended:
        start = job_status.get("startTime")
    if start:
        status["startTime"] = start
    # Only a training that ran and ended has a completion time (and so a TTL); a refused spec has none.
    if ran_and_ended:
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


def transitions(previous: dict[str, Any], current: dict[str, Any]) -> list[conditions.Event]:
    """The Events to record for a change of phase, reason or attempt, or a newly refused spec."""
    events: list[conditions.Event] = []
    # A new attempt after an earlier one (a first status may start above 1: an earlier FineTuneJob's Job
    # held the first names, and nothing restarts).
    if previous.get("attempt") and current.get("attempt", 1) > previous["attempt"]:
        events.append(
            conditions.Event(
                "Warning", "Restarting", f"starting attempt {current['attempt']} from the newest checkpoint"
            )
        )
    old_phase, new_phase = previous.get("phase"), current.get("phase")
    old_reason, new_reason = previous.get("reason"), current.get("reason")
    if (old_phase, old_reason) != (new_phase, new_reason):
        message = current.get("message", "")
        failing = new_phase == Phase.FAILED or new_reason in conditions.WARNING_REASONS | {
            "Restarting",
            "Disrupted",
        }
        events.append(
            conditions.Event("Warning" if failing else "Normal", new_reason or str(new_phase), message)
        )
    # A spec refused while an attempt runs changes no phase: its own Warning names the field.
    old_check, new_check = _status_condition(previous, "SpecValid"), _status_condition(current, "SpecValid")
    refused = new_check.get("status") == "False" and new_check.get("reason") != new_reason
    changed = (old_check.get("status"), old_check.get("message")) != ("False", new_check.get("message"))
    if refused and changed:
        reason = new_check.get("reason") or "InvalidSpec"
        events.append(conditions.Event("Warning", reason, new_check.get("message", "")))
    overfitted = curves.became_overfitted(previous.get("conditions") or [], current.get("conditions") or [])
    if overfitted is not None:
        events.append(conditions.Event("Warning", curves.CONDITION, overfitted))
    return events


def _status_condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return conditions.find(status.get("conditions"), type_)
