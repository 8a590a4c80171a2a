"""A FineTuneJob's attempts, decided once for the reconcile and the status alike: how an attempt (one Job)
ended (`attempt_end`), what the earlier ones used up (`history`), whether another follows
(`next_attempt_allowed`), whether the training has finished for good (`has_finished`) and when a finished
one expires (`ttl_expired`). Pure functions of Kubernetes objects and the status."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from kubetune import rfc3339
from kubetune.api import label_names
from kubetune.api.common import Problem
from kubetune.api.finetunejob import Phase
from kubetune.status import conditions

# The Job's podFailurePolicy fails the attempt on this pod condition (eviction, preemption, a lost node);
# the Job controller names it in the message of its FailureTarget and Failed conditions.
DISRUPTION_CONDITION = "DisruptionTarget"


class AttemptEnd(StrEnum):
    """How an attempt (one Job) ended."""

    SUCCEEDED = "Succeeded"
    FAILED = "Failed"  # counts against maxRestarts
    DISRUPTED = "Disrupted"  # a pod evicted, preempted or lost with its node: does not count
    DEADLINE_EXCEEDED = "DeadlineExceeded"  # activeDeadlineSeconds: not retried


def attempt_of(job: dict[str, Any]) -> int:
    try:
        return int(job["metadata"]["labels"][label_names.ATTEMPT])
    except (KeyError, TypeError, ValueError):
        return 0


def attempt_end(job: dict[str, Any] | None) -> AttemptEnd | None:
    """How the Job's attempt ended, as soon as the Job controller decided; None while it runs.

    The Job controller sets `FailureTarget` (or `SuccessCriteriaMet`) the moment it decides, and `Failed`
    (`Complete`) only once every pod has stopped, which can take the pods' whole termination grace period.
    """
    if conditions.true_of(job, "Complete") or conditions.true_of(job, "SuccessCriteriaMet"):
        return AttemptEnd.SUCCEEDED
    failed = conditions.true_of(job, "Failed") or conditions.true_of(job, "FailureTarget")
    if failed is None:
        return None
    if failed.get("reason") == "DeadlineExceeded":
        return AttemptEnd.DEADLINE_EXCEEDED
    if failed.get("reason") == "PodFailurePolicy" and DISRUPTION_CONDITION in (failed.get("message") or ""):
        return AttemptEnd.DISRUPTED
    return AttemptEnd.FAILED


def job_stopped(job: dict[str, Any] | None) -> bool:
    """Whether the Job is finished and none of its pods runs any more (its `Complete` or `Failed`)."""
    return bool(conditions.true_of(job, "Complete") or conditions.true_of(job, "Failed"))


@dataclass(frozen=True)
class History:
    """What the attempts before the current one used up."""

    restarts: int = 0
    disruptions: int = 0


def history(jobs: list[dict[str, Any]], attempt: int, previous: dict[str, Any]) -> History:
    """Counted from the FineTuneJob's own Jobs before `attempt`; never less than the status already said
    (a Job deleted by hand does not hand its restart back)."""
    ends = [attempt_end(j) for j in jobs if attempt_of(j) < attempt]
    return History(
        restarts=max(ends.count(AttemptEnd.FAILED), previous.get("restarts") or 0),
        disruptions=max(ends.count(AttemptEnd.DISRUPTED), previous.get("disruptions") or 0),
    )


JOB_DELETED = "JobDeleted"


def job_deleted_while_running(previous: dict[str, Any], attempt: int) -> bool:
    """The status said this attempt ran, and its Job is gone: deleted by hand (a finished attempt's Job
    may go, a running one's may not come back under the same name)."""
    ran = previous.get("phase") == Phase.RUNNING.value or previous.get("reason") == JOB_DELETED
    return previous.get("attempt") == attempt and ran


def job_deleted_problem(attempt: int, pods: int) -> Problem:
    return Problem(
        JOB_DELETED,
        f"the Job of attempt {attempt} was deleted while {pods} of its pods still run: the next attempt "
        f"starts once they have stopped (they may still write checkpoints into the output path)",
        terminal=False,
    )


def next_attempt_allowed(end: AttemptEnd | None, used: History, max_restarts: int) -> bool:
    """Whether an attempt that ended this way is followed by another (from the newest checkpoint)."""
    if end == AttemptEnd.DISRUPTED:
        return True
    return end == AttemptEnd.FAILED and used.restarts < max_restarts


def ttl_expired(status: dict[str, Any], ttl_seconds: int | None, now: str) -> bool:
    """ttlSecondsAfterFinished: only a training that ran and ended expires, never one that runs, and never
    a spec refused before it ran (it proceeds once fixed)."""
    remaining = ttl_remaining(status, ttl_seconds, now)
    return remaining is not None and remaining <= 0


def ttl_remaining(status: dict[str, Any], ttl_seconds: int | None, now: str) -> float | None:
    """Seconds until ttlSecondsAfterFinished deletes the FineTuneJob; None when it never will (as it is)."""
    if ttl_seconds is None or not has_finished(status) or not status.get("completionTime"):
        return None
    finished = rfc3339.parse(status["completionTime"])
    return ttl_seconds - (rfc3339.parse(now) - finished).total_seconds()


def has_finished(status: dict[str, Any]) -> bool:
    """Whether training ran and ended (Succeeded, or Failed after running): a verdict that stands.

    A FineTuneJob refused for its spec never ran: once the spec is fixed, it proceeds.
    """
    created = any(
        c.get("type") == "Created" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    return created and status.get("phase") in (Phase.SUCCEEDED, Phase.FAILED)
