"""The runner both reconcile tables share (tests/unit/test_reconcile_finetunejob.py and
test_reconcile_modelserve.py); the rows, and what a cluster looks like for them, stay with each kind.

A row sets up a cluster in the in-memory client (tests/fakekube.py) and runs one reconcile. It says the phase
and reason the status reports, the conditions it sets, every write the pass makes (so, also, the ones it
must not make), the Events, and when it wants to look again. A second pass on the state the first one left
must change nothing, and, once nothing is waiting on the API server's answer, write nothing at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import BaseModel

from kubetune.runtime.outcome import Outcome
from tests.fakekube import Call, FakeKube
from tests.schema import undeclared


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
    # A second pass writes nothing at all; False where it asks again (a conflict waits on someone else).
    settled: bool = True
    full: bool = False  # the pass the periodic resync makes (it also prunes)
    exists: dict[tuple[str, str], bool] = field(default_factory=dict)  # (kind, name) -> there after the pass
    adapters: dict[str, Any] = field(default_factory=dict)  # a ModelServe's adapters ConfigMap, {name: path}


@dataclass(frozen=True)
class Table:
    """One kind's table: how to run its reconcile on the fake, and its status write and schema."""

    reconcile: Callable[[FakeKube, bool], Outcome]  # (fake, full) -> outcome
    status_write: tuple[str, str, str]
    status_model: type[BaseModel]
    namespace: str


def conditions(status: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status.get("conditions") or []}


def run(table: Table, row: Row) -> tuple[FakeKube, Outcome]:
    """One pass on the row's cluster, checked against the row."""
    fake = FakeKube()
    row.given(fake)
    fake.forget_calls()
    events_before = len(fake.events())

    outcome = table.reconcile(fake, row.full)

    status = outcome.status
    assert (status["phase"], status["reason"]) == (row.phase, row.reason), status["message"]
    assert not undeclared(status, table.status_model), "computed but not in the CRD's status schema"
    assert fake.writes() == [Call(*w) for w in row.writes]
    assert fake.events()[events_before:] == row.events
    assert {t: conditions(status).get(t) for t in row.conditions} == row.conditions
    assert {k: status.get(k) for k in row.status} == row.status
    assert outcome.changed == (table.status_write in row.writes)
    if row.requeue_after is None:
        assert outcome.requeue_after is None
    else:
        assert outcome.requeue_after == pytest.approx(row.requeue_after, abs=5)
    for (kind, name), there in row.exists.items():
        assert (fake.get_quietly(kind, table.namespace, name) is not None) == there, (kind, name)
    return fake, outcome


def run_twice(table: Table, row: Row) -> None:
    """A second pass on the state the first one left changes nothing (and, settled, writes nothing)."""
    fake = FakeKube()
    row.given(fake)
    first = table.reconcile(fake, row.full)
    fake.forget_calls()
    events_before = len(fake.events())

    second = table.reconcile(fake, row.full)

    assert fake.changes() == []
    assert fake.events()[events_before:] == []
    assert not second.changed and second.status == first.status
    if row.settled:
        assert fake.writes() == []
