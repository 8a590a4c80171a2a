"""Standard conditions, for both kinds: reading them from Kubernetes objects, and writing a resource's own
(type, status, reason, message, lastTransitionTime, observedGeneration), where lastTransitionTime moves
only when the status flips."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# Reasons that get a Warning Event when a resource of either kind enters them: a pod that cannot start
# (status.pods.WAITING_PROBLEMS and Unschedulable), a child's name taken by someone else's object, pods
# refused by admission.
WARNING_REASONS = frozenset(
    {"Unschedulable", "ImagePullError", "ContainerConfigError", "CrashLoopBackOff", "ChildConflict"}
    | {"PodsRefused", "FineTuneJobFailed"}
)


@dataclass(frozen=True)
class Event:
    """An Event to record about a resource, of either kind, on a status transition."""

    type: str  # Normal or Warning
    reason: str
    message: str


# (status, reason, message) of one condition; status as a bool or as `True`/`False`/`Unknown`.
Wanted = tuple[bool | str, str, str]


def find(conditions: Iterable[dict[str, Any]] | None, type_: str) -> dict[str, Any]:
    """The condition of that type in a list, whatever its status; {} when there is none."""
    return next((c for c in conditions or [] if c.get("type") == type_), {})


def of(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    """An object's condition of that type (`.status.conditions`), whatever its status; {} when none."""
    return find(((obj or {}).get("status") or {}).get("conditions"), type_)


def true_of(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    """An object's condition of that type when its status is True; None otherwise."""
    condition = of(obj, type_)
    return condition if condition.get("status") == "True" else None


def _status(value: bool | str) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return value


def condition(
    type_: str,
    wanted: Wanted,
    previous: dict[str, Any] | None,
    now: str,
    generation: int,
) -> dict[str, Any]:
    """One condition as the resource's status carries it; `previous` is the same type's as it was."""
    status = _status(wanted[0])
    previous = previous or {}
    since = previous.get("lastTransitionTime") if previous.get("status") == status else None
    return {
        "type": type_,
        "status": status,
        "reason": wanted[1],
        "message": wanted[2],
        "lastTransitionTime": since or now,
        "observedGeneration": generation,
    }


def build(
    wanted: Mapping[str, Wanted],
    types: Iterable[str],
    previous: Iterable[dict[str, Any]] | None,
    now: str,
    generation: int,
) -> list[dict[str, Any]]:
    """The conditions of `types`, in that order, each from `wanted` and the previous list."""
    before = list(previous or [])
    return [condition(t, wanted[t], find(before, t), now, generation) for t in types]
