"""Leader election on a coordination.k8s.io Lease: with several operator replicas, exactly one reconciles.

The contract is client-go's (and controller-runtime's): a candidate takes the Lease when it is free or its
record has not changed for `lease_seconds` of the candidate's own clock (the holder's timestamps are
never compared with this machine's: two machines' clocks differ); the leader renews it every
`retry_seconds`; a leader that cannot renew within `renew_deadline_seconds` has lost it and exits at once
(`on_lost`), so that two replicas never act together (the Deployment starts it again, as a candidate).
Every write carries the Lease's resourceVersion: of two candidates racing for a free Lease, one wins and
the other sees a conflict. The leader renews from the Lease its own last write returned, without reading
it first (client-go's fast path): one request every `retry_seconds` instead of two, and anyone else's write
since makes it a conflict, after which the Lease is read as a candidate reads it.

Every call has a timeout that ends before the deadline does, and the renewal loop treats any error as a
failed renewal: a connection that answers nothing, or refuses, cannot keep a leader past its deadline.
Should the loop itself ever stop, the leader exits too.

Why not kopf's peering: replicas of one Deployment have the same priority, and kopf pauses every replica
when it sees peers of equal priority; and the operator's resync loop runs outside kopf's control, so it
would go on in paused replicas. A replica that is not the leader here runs nothing at all.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes.client.rest import ApiException

from kubetune import rfc3339
from kubetune.config import LeaderElection
from kubetune.kube import Kube

log = logging.getLogger("kubetune.leader")
MIN_CALL_SECONDS = 0.5


@dataclass
class Observed:
    """The Lease's record as this replica last saw it change, and when (this replica's monotonic clock)."""

    record: tuple[Any, ...]
    at: float


class LeaderElector:
    def __init__(
        self,
        kube: Kube,
        election: LeaderElection,
        on_lost: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.kube = kube
        self.namespace, self.name, self.identity = election.namespace, election.lease, election.identity
        self.lease_seconds = election.lease_seconds
        self.renew_deadline_seconds = election.renew_deadline_seconds
        self.retry_seconds = election.retry_seconds
        self.on_lost = on_lost or (lambda: os._exit(1))
        self.clock, self.sleep = clock, sleep
        self.observed: Observed | None = None
        # The Lease as this replica's last write of it returned it, while that write made it the holder.
        self.held: dict[str, Any] | None = None

    def _timeout(self, budget: float) -> float:
        """A call's whole time, connecting included (urllib3's total), at most what is left of `budget`."""
        return max(MIN_CALL_SECONDS, budget)

    def _spec(self, acquired: str | None, transitions: int) -> dict[str, Any]:
        now = rfc3339.now_micro()
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.lease_seconds)),
            "acquireTime": acquired or now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    def _expired(self, spec: dict[str, Any]) -> bool:
        """The holder stopped renewing: its record has not changed for a lease duration of our clock."""
        record = (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("leaseTransitions"))
        now = self.clock()
        if self.observed is None or self.observed.record != record:
            self.observed = Observed(record, now)
        duration = spec.get("leaseDurationSeconds") or self.lease_seconds
        return now - self.observed.at > duration

    def try_acquire_or_renew(self, budget: float | None = None) -> bool:
        """One attempt within `budget` seconds in all; True when this process holds the Lease afterwards."""
        started = self.clock()

        def timeout() -> float:
            left = (budget if budget is not None else self.renew_deadline_seconds) - (self.clock() - started)
            return self._timeout(left)

        held, self.held = self.held, None  # kept again only by this try's own successful write
        if held is not None:
            renewal = {
                **held,
                "spec": self._spec((held.get("spec") or {}).get("acquireTime"), _transitions(held)),
            }
            try:
                self.held = self.kube.replace(renewal, timeout=timeout())
                return True
            except ApiException as conflict:
                if conflict.status != 409:
                    raise
                # Written since (another holder, or our own renewal whose reply was lost): read it.
        lease = self.kube.get("Lease", self.namespace, self.name, timeout=timeout())
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(None, 0),
            }
            try:
                self.held = self.kube.create(body, timeout=timeout())
            except ApiException as conflict:
                if conflict.status == 409:
                    return False  # another candidate created it first
                raise
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        ours = holder == self.identity
        if holder and not ours and not self._expired(spec):
            return False
        transitions = _transitions(lease) + (0 if ours else 1)
        lease["spec"] = self._spec(spec.get("acquireTime") if ours else None, transitions)
        lease.setdefault("apiVersion", "coordination.k8s.io/v1")
        lease.setdefault("kind", "Lease")
        # resourceVersion in the body: a concurrent writer makes this a 409, not a second leader. A 409 is
        # raised, not taken as a loss: our own renewal may have landed with its reply lost; the next try
        # reads who holds the Lease.
        self.held = self.kube.replace(lease, timeout=timeout())
        return True

    def wait_until_leader(self) -> None:
        log.info("waiting to lead (Lease %s/%s, identity %s)", self.namespace, self.name, self.identity)
        while True:
            try:
                if self.try_acquire_or_renew(budget=self.retry_seconds + self.renew_deadline_seconds):
                    log.info("became the leader: this replica reconciles")
                    return
            except Exception as error:  # any failure is a try that did not win: try again
                log.warning("leader election: %s", _short(error))
            self.sleep(self.retry_seconds)

    def renew_until_lost(self) -> None:
        """Renews every `retry_seconds`; returns once the Lease is lost or cannot be renewed in time."""
        last = self.clock()  # the last successful renewal
        wait = self.retry_seconds
        while True:
            self.sleep(max(0.0, min(wait, self.renew_deadline_seconds - (self.clock() - last))))
            left = self.renew_deadline_seconds - (self.clock() - last)
            if left <= 0:
                log.error("could not renew the Lease for %.0fs: exiting", self.renew_deadline_seconds)
                return
            started = self.clock()
            try:
                renewed = self.try_acquire_or_renew(budget=left)
            except Exception as error:  # refused, reset, timed out, a conflict, anything: not renewed
                log.warning("could not renew the Lease (will retry): %s", _short(error))
                wait = self.retry_seconds
                continue
            if not renewed:
                log.error("lost the Lease to another replica: exiting")
                return
            last = self.clock()
            wait = max(0.0, self.retry_seconds - (last - started))

    def keep_renewing(self) -> threading.Thread:
        """Renews in the background; calls `on_lost` when the Lease is lost, and if the loop ever ends."""

        def loop() -> None:
            try:
                self.renew_until_lost()
            except BaseException:
                log.exception("the Lease's renewal stopped: exiting")
            finally:
                self.on_lost()

        thread = threading.Thread(target=loop, name="leader-renew", daemon=True)
        thread.start()
        return thread


def _transitions(lease: dict[str, Any]) -> int:
    return (lease.get("spec") or {}).get("leaseTransitions") or 0


def _short(error: Exception) -> str:
    if isinstance(error, ApiException):
        return f"{error.status} {error.reason}"
    return f"{type(error).__name__}: {error}"
