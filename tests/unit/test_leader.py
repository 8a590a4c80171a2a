"""The Lease election (runtime/leader.py) on an in-memory Lease and a clock the test moves.

Each call's time is the clock's: a call that hangs moves it by the timeout the elector gave that call, so a
test sees whether the elector could have overrun its deadline without waiting for one.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import urllib3
from kubernetes.client.rest import ApiException

from kubetune.config import LeaderElection
from kubetune.runtime.leader import MIN_CALL_SECONDS, LeaderElector

LEASE, NAMESPACE = "kubetune-operator", "ops"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


class Refused(Exception):
    """What a dead connection raises: urllib3's MaxRetryError, neither an ApiException nor an OSError."""


class LeaseStore:
    """One Lease with the API server's resourceVersion rules, and a connection the test can break."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.fault: str | None = None  # "refused" | "hang" | "slow"
        self.timeouts: list[float] = []

    def _connection(self, timeout: float | None) -> None:
        assert timeout is not None, "every call to the API server has a timeout"
        self.timeouts.append(timeout)
        if self.fault == "refused":
            raise urllib3.exceptions.MaxRetryError(None, "/leases", "Connection refused")  # type: ignore[arg-type]
        if self.fault == "slow":  # answers, late: within the timeout
            self.clock.now += min(3.0, timeout / 2)
        if self.fault == "hang":
            self.clock.now += timeout  # the whole call's time, connecting included
            raise urllib3.exceptions.ReadTimeoutError(None, "/leases", "Read timed out")  # type: ignore[arg-type]

    def get(self, kind: str, namespace: str, name: str, timeout: Any = None) -> dict[str, Any] | None:
        self._connection(timeout)
        return copy.deepcopy(self.lease)

    def create(self, manifest: dict[str, Any], timeout: Any = None) -> dict[str, Any]:
        self._connection(timeout)
        if self.lease is not None:
            raise ApiException(status=409, reason="AlreadyExists")
        return self._store(manifest)

    def replace(self, manifest: dict[str, Any], timeout: Any = None) -> dict[str, Any]:
        self._connection(timeout)
        assert self.lease is not None
        if manifest["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        return self._store(manifest)

    def _store(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.lease = copy.deepcopy(manifest)
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(self.lease)

    def holder(self) -> str | None:
        return (self.lease or {}).get("spec", {}).get("holderIdentity")


def elector(store: LeaseStore, clock: Clock, identity: str, lost: list[str]) -> LeaderElector:
    election = LeaderElection(
        lease=LEASE, namespace=NAMESPACE, identity=identity,
        lease_seconds=15, renew_deadline_seconds=10, retry_seconds=2,
    )  # fmt: skip
    return LeaderElector(
        store,  # type: ignore[arg-type]
        election,
        on_lost=lambda: lost.append(identity),
        clock=clock,
        sleep=clock.sleep,
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> LeaseStore:
    return LeaseStore(clock)


@pytest.mark.parametrize("fault", ["refused", "hang"])
def test_a_leader_whose_connection_dies_gives_up_within_its_deadline(
    store: LeaseStore, clock: Clock, fault: str
) -> None:
    lost: list[str] = []
    leader = elector(store, clock, "a", lost)
    leader.wait_until_leader()
    assert store.holder() == "a"
    renewed_at = clock.now
    store.fault = fault
    leader.keep_renewing().join(timeout=30)
    assert lost == ["a"], "the renewal loop ended without giving up the lead"
    # Stopped before the Lease could pass to another replica (15 s after the last renewal).
    assert clock.now - renewed_at <= leader.renew_deadline_seconds + MIN_CALL_SECONDS
    assert clock.now - renewed_at < leader.lease_seconds


def test_a_slow_renewal_that_succeeds_keeps_the_lead(store: LeaseStore, clock: Clock) -> None:
    lost: list[str] = []
    leader = elector(store, clock, "a", lost)
    leader.wait_until_leader()
    store.fault = "slow"
    for _ in range(3):
        clock.now += leader.retry_seconds
        assert leader.try_acquire_or_renew(budget=leader.renew_deadline_seconds)
    assert lost == [] and store.holder() == "a"


def test_every_call_of_a_renewal_ends_before_the_deadline_does(store: LeaseStore, clock: Clock) -> None:
    leader = elector(store, clock, "a", [])
    leader.wait_until_leader()
    store.timeouts.clear()
    leader.try_acquire_or_renew(budget=3.0)
    assert store.timeouts and all(t <= 3.0 for t in store.timeouts)


def test_a_candidate_takes_the_lease_only_after_it_saw_no_renewal_for_a_lease_duration(
    store: LeaseStore, clock: Clock
) -> None:
    first, second = elector(store, clock, "a", []), elector(store, clock, "b", [])
    first.wait_until_leader()
    # The holder's clock is far behind: its renewTime looks old, but the record is new to this candidate.
    store.lease["spec"]["renewTime"] = "2001-01-01T00:00:00.000000Z"  # type: ignore[index]
    assert not second.try_acquire_or_renew()
    clock.now += 14
    assert not second.try_acquire_or_renew()
    clock.now += 2  # 16 s of this candidate's clock without a change
    assert second.try_acquire_or_renew()
    assert store.holder() == "b"
    assert store.lease["spec"]["leaseTransitions"] == 1  # type: ignore[index]


def test_a_renewed_lease_is_never_taken(store: LeaseStore, clock: Clock) -> None:
    first, second = elector(store, clock, "a", []), elector(store, clock, "b", [])
    first.wait_until_leader()
    for _ in range(20):
        clock.now += 2
        assert first.try_acquire_or_renew()
        assert not second.try_acquire_or_renew()
    assert store.holder() == "a"


def test_a_leader_that_sees_another_holder_exits(store: LeaseStore, clock: Clock) -> None:
    lost: list[str] = []
    leader = elector(store, clock, "a", lost)
    leader.wait_until_leader()
    taken = copy.deepcopy(store.lease) or {}
    taken["spec"]["holderIdentity"] = "b"
    taken["spec"]["renewTime"] = "2001-01-01T00:00:00.000000Z"
    store.replace(taken, timeout=1.0)  # b's write: a new resourceVersion
    leader.keep_renewing().join(timeout=30)
    assert lost == ["a"]
    assert store.holder() == "b", "a wrote over b's Lease"


def test_a_leader_renews_with_one_request_and_a_candidate_looks_with_one(
    store: LeaseStore, clock: Clock
) -> None:
    """client-go's fast path: the leader writes from its last write's reply, without a read first."""
    first, second = elector(store, clock, "a", []), elector(store, clock, "b", [])
    first.wait_until_leader()
    store.timeouts.clear()
    for _ in range(5):
        clock.now += 2
        assert first.try_acquire_or_renew()
        assert not second.try_acquire_or_renew()
    assert len(store.timeouts) == 10  # a request per renewal, and a request per look


def test_a_conflict_on_its_own_renewal_is_retried_not_taken_as_lost(store: LeaseStore, clock: Clock) -> None:
    lost: list[str] = []
    leader = elector(store, clock, "a", lost)
    leader.wait_until_leader()
    # Our last renewal landed but its reply was lost: the next write carries a stale resourceVersion once.
    real_replace, conflicts = store.replace, []

    def replace_once_stale(manifest: dict[str, Any], timeout: Any = None) -> dict[str, Any]:
        if not conflicts:
            conflicts.append(1)
            raise ApiException(status=409, reason="Conflict")
        if len(conflicts) == 1:
            conflicts.append(2)
            store.fault = "refused"  # then the connection dies: the loop must end by the deadline
        return real_replace(manifest, timeout)

    store.replace = replace_once_stale  # type: ignore[method-assign]
    leader.keep_renewing().join(timeout=30)
    assert len(conflicts) == 2, "the conflict ended the lead instead of a retry"
    assert lost == ["a"]


def test_two_candidates_racing_for_a_free_lease_make_one_leader(store: LeaseStore, clock: Clock) -> None:
    first, second = elector(store, clock, "a", []), elector(store, clock, "b", [])
    assert first.try_acquire_or_renew()
    assert not second.try_acquire_or_renew()
    assert store.holder() == "a"


def test_waiting_survives_any_error(store: LeaseStore, clock: Clock) -> None:
    candidate = elector(store, clock, "a", [])
    calls = []
    real_get = store.get

    def flaky_get(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise urllib3.exceptions.MaxRetryError(None, "/leases", "refused")  # type: ignore[arg-type]
        if len(calls) == 2:
            raise ValueError("a reply that is not JSON")
        return real_get(*args, **kwargs)

    store.get = flaky_get  # type: ignore[method-assign]
    candidate.wait_until_leader()
    assert store.holder() == "a" and len(calls) == 3


def test_the_lost_callback_runs_even_if_the_loop_breaks(store: LeaseStore, clock: Clock) -> None:
    lost: list[str] = []
    leader = elector(store, clock, "a", lost)
    leader.wait_until_leader()

    def broken_sleep(seconds: float) -> None:
        raise RuntimeError("a bug in the loop")

    leader.sleep = broken_sleep  # type: ignore[method-assign]
    leader.keep_renewing().join(timeout=30)
    assert lost == ["a"]
