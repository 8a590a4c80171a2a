"""Leader election on a coordination.k8s.io Lease: with several operator replicas, exactly one reconciles.

The contract is client-go's (and controller-runtime's): a candidate takes the Lease when it is free or its
holder stopped renewing it for `lease_seconds`; the leader renews it every `retry_seconds`; a leader that
cannot renew within `renew_deadline_seconds` has lost it and exits at once, so that two replicas never act
together (the Deployment starts it again, as a candidate). Every write carries the Lease's
resourceVersion: of two candidates racing for a free Lease, one wins and the other sees a conflict.

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
from datetime import UTC, datetime

from kubernetes import client
from kubernetes.client.rest import ApiException

from kubetune.config import LeaderElection

log = logging.getLogger("kubetune.leader")


def _now() -> datetime:
    return datetime.now(UTC)


class LeaderElector:
    def __init__(
        self, api: client.ApiClient, election: LeaderElection, on_lost: Callable[[], None] | None = None
    ):
        self.coordination = client.CoordinationV1Api(api)
        self.namespace, self.name, self.identity = election.namespace, election.lease, election.identity
        self.lease_seconds = election.lease_seconds
        self.renew_deadline_seconds = election.renew_deadline_seconds
        self.retry_seconds = election.retry_seconds
        self.on_lost = on_lost or (lambda: os._exit(1))

    def _spec(self, acquired: datetime | None, transitions: int) -> client.V1LeaseSpec:
        return client.V1LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=int(self.lease_seconds),
            acquire_time=acquired or _now(),
            renew_time=_now(),
            lease_transitions=transitions,
        )

    def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this process holds the Lease afterwards."""
        try:
            lease = self.coordination.read_namespaced_lease(self.name, self.namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                spec=self._spec(None, 0),
            )
            try:
                self.coordination.create_namespaced_lease(self.namespace, body)
            except ApiException as conflict:
                if conflict.status == 409:
                    return False  # another candidate created it first
                raise
            return True
        spec = lease.spec or client.V1LeaseSpec()
        holder = spec.holder_identity
        renewed = spec.renew_time or spec.acquire_time
        duration = spec.lease_duration_seconds or self.lease_seconds
        expired = renewed is None or (_now() - renewed).total_seconds() > duration
        if holder and holder != self.identity and not expired:
            return False
        ours = holder == self.identity
        transitions = (spec.lease_transitions or 0) + (0 if ours else 1)
        lease.spec = self._spec(spec.acquire_time if ours else None, transitions)
        try:
            # resourceVersion in the body: a concurrent writer makes this a 409, not a second leader.
            self.coordination.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as conflict:
            if conflict.status == 409:
                return False
            raise
        return True

    def wait_until_leader(self) -> None:
        log.info("waiting to lead (Lease %s/%s, identity %s)", self.namespace, self.name, self.identity)
        while True:
            try:
                if self.try_acquire_or_renew():
                    log.info("became the leader: this replica reconciles")
                    return
            except (ApiException, OSError) as error:
                log.warning("leader election: %s", error)
            time.sleep(self.retry_seconds)

    def keep_renewing(self) -> threading.Thread:
        """Renews in the background; calls `on_lost` when the Lease cannot be renewed in time."""

        def loop() -> None:
            last = time.monotonic()
            while True:
                time.sleep(self.retry_seconds)
                try:
                    if self.try_acquire_or_renew():
                        last = time.monotonic()
                        continue
                    log.error("lost the Lease to another replica: exiting")
                except (ApiException, OSError) as error:
                    if time.monotonic() - last < self.renew_deadline_seconds:
                        log.warning("could not renew the Lease (will retry): %s", error)
                        continue
                    log.error("could not renew the Lease for %.0fs: exiting", self.renew_deadline_seconds)
                self.on_lost()
                return

        thread = threading.Thread(target=loop, name="leader-renew", daemon=True)
        thread.start()
        return thread
