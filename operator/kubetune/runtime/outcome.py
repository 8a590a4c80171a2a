"""What a reconcile of either kind hands back to the runtime."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple


class Key(NamedTuple):
    """A resource the work queue holds: the kind (FineTuneJob or ModelServe), its namespace and name."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class Outcome:
    status: dict[str, Any]  # as the reconcile decided it
    changed: bool  # the status was written (a new job's first status may wait: handlers/finetunejob.py)
    # Look again in this many seconds even if nothing changes (a deadline, a state nobody reports).
    requeue_after: float | None = None
