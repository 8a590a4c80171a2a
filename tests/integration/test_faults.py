"""The operator's API connection broken as networks break it (tests/faultproxy.py), with one replica and two.

A dead connection is the hard case: a lost node or load balancer leaves every connection open and silent.
Without timeouts a worker waits on it for good (its resource is never reconciled again), a watch hears
nothing forever, and a leader's renewal never reaches its deadline while another replica takes the Lease.

The operator runs with short timeouts here (`KUBETUNE_WATCH_SECONDS`, `KUBETUNE_API_TIMEOUT_SECONDS`) so
that the scenarios are quick; the waits below are bounds for conditions, several times those timeouts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from kubernetes import client

from tests.cluster import localcluster
from tests.faultproxy import FaultProxy, proxied_kubeconfig, upstream
from tests.integration.finetunejobs import FineTuneJobs
from tests.integration.test_leader_election import Replica, as_chart, lease_name
from tests.integration.test_modelserve import ModelServes
from tests.kube import wait_until
from tests.operator_fixtures import OperatorProcess
from tests.specs import finetunejob, modelserve

FAST = {
    "KUBETUNE_WATCH_SECONDS": "5",
    "KUBETUNE_API_CONNECT_SECONDS": "2",
    "KUBETUNE_API_TIMEOUT_SECONDS": "5",
}


@pytest.fixture
def proxies(operator: OperatorProcess) -> Iterator[list[FaultProxy]]:
    """Fault proxies in front of the API server; the session's operator steps aside meanwhile."""
    made: list[FaultProxy] = []
    operator.stop()

    def make() -> FaultProxy:
        made.append(FaultProxy(*upstream(operator.kubeconfig)))
        return made[-1]

    try:
        yield make  # type: ignore[misc]
    finally:
        for proxy in made:
            proxy.close()
        operator.start()


def through(
    proxy: FaultProxy, operator: OperatorProcess, cluster: localcluster.ClusterInfo, tmp_path: Path
) -> OperatorProcess:
    """One operator replica (not started) whose API connection goes through `proxy`, short timeouts."""
    kubeconfig = proxied_kubeconfig(operator.kubeconfig, proxy, tmp_path / "kubeconfig")
    return OperatorProcess(cluster, tmp_path / "operator.log", kubeconfig, env=FAST)


def jobs_of(batch: client.BatchV1Api, namespace: str, name: str) -> list[str]:
    return [
        j.metadata.name
        for j in batch.list_namespaced_job(namespace).items
        if j.metadata.name.startswith(f"{name}-")
    ]


def test_one_replica_recovers_from_a_dead_connection(
    proxies, operator: OperatorProcess, cluster: localcluster.ClusterInfo, namespace: str,
    claim: tuple[str, Path], api: client.ApiClient, batch: client.BatchV1Api, tmp_path: Path,
) -> None:  # fmt: skip
    proxy = proxies()
    replica = through(proxy, operator, cluster, tmp_path)
    ftjs, serves = FineTuneJobs(api, namespace), ModelServes(api, namespace)
    try:
        replica.start()
        # An adapter that never loads keeps this ModelServe coming back every 5 s, each pass reading the
        # adapter report through the API: a worker is in a call when the connection dies.
        serves.create(modelserve("serve", adapters=[{"name": "a", "path": "adapters/a"}]))
        serves.wait("serve", lambda s: s.get("observedGeneration") == 1, "the ModelServe's first status")
        ftjs.create(finetunejob("before"))
        wait_until(lambda: jobs_of(batch, namespace, "before"), "the first Job", timeout=60)

        proxy.dead()
        ftjs.create(finetunejob("during"))
        serves.patch("serve", {"spec": {"adapters": [{"name": "b", "path": "adapters/b"}]}})
        # The operator notices: a call gives up on its timeout, or a silent watch is dropped, and it dials
        # again (into the same dead end, until the connection comes back).
        wait_until(lambda: proxy.dialled_while_dead >= 2, "the operator to give up on a dead call", 60)
        assert replica.alive()

        proxy.restore()
        restored = time.monotonic()
        wait_until(
            lambda: jobs_of(batch, namespace, "during"), "the Job of the resource created meanwhile", 60
        )
        serves.wait(
            "serve", lambda s: s.get("observedGeneration") == 2, "the ModelServe edited meanwhile", timeout=60
        )
        print(f"recovered {time.monotonic() - restored:.1f}s after the connection came back")
    finally:
        replica.stop()


@pytest.mark.parametrize("fault", ["reset", "slow"])
def test_one_replica_goes_on_through_resets_and_a_slow_connection(
    proxies, operator: OperatorProcess, cluster: localcluster.ClusterInfo, namespace: str,
    claim: tuple[str, Path], api: client.ApiClient, batch: client.BatchV1Api, tmp_path: Path, fault: str,
) -> None:  # fmt: skip
    proxy = proxies()
    replica = through(proxy, operator, cluster, tmp_path)
    ftjs = FineTuneJobs(api, namespace)
    try:
        replica.start()
        ftjs.create(finetunejob("before"))
        wait_until(lambda: jobs_of(batch, namespace, "before"), "the first Job", timeout=60)
        if fault == "reset":
            for index in range(3):
                proxy.reset()
                ftjs.create(finetunejob(f"after-{index}"))
        else:
            proxy.slow(0.3)
            ftjs.create(finetunejob("after-0"))
        names = ["after-0", "after-1", "after-2"] if fault == "reset" else ["after-0"]
        for name in ["before", *names]:
            # Its Job, then the status that follows the Job's pods to the end (KWOK runs them 2 s).
            wait_until(lambda n=name: jobs_of(batch, namespace, n), f"the Job of {name}", timeout=90)
            ftjs.wait_phase(name, "Succeeded", timeout=90)
        assert replica.alive()
    finally:
        replica.stop()


def _logged_at(log: str, words: str) -> datetime:
    for line in log.splitlines():
        if words in line:
            return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    raise AssertionError(f"{words!r} not in the log:\n{log[-3000:]}")


def test_a_leader_cut_off_stops_before_another_takes_over(
    proxies, operator: OperatorProcess, cluster: localcluster.ClusterInfo, namespace: str,
    claim: tuple[str, Path], api: client.ApiClient, batch: client.BatchV1Api, tmp_path: Path,
) -> None:  # fmt: skip
    from tests.chart.install import NAMESPACE as CHART_NAMESPACE

    lease_namespace = CHART_NAMESPACE if as_chart() else namespace
    replicas, proxy_of = {}, {}
    for pod in ("kubetune-a", "kubetune-b"):
        proxy_of[pod] = proxies()
        kubeconfig = proxied_kubeconfig(operator.kubeconfig, proxy_of[pod], tmp_path / f"{pod}.kubeconfig")
        replicas[pod] = Replica(cluster, tmp_path / f"{pod}.log", pod, lease_namespace, kubeconfig, env=FAST)
    coordination = client.CoordinationV1Api(api)
    try:
        for replica in replicas.values():
            replica.start()
        holder = wait_until(
            lambda: coordination.read_namespaced_lease(lease_name(), lease_namespace).spec.holder_identity,
            "a replica to take the Lease",
            timeout=30,
        )
        leader, other = replicas[holder], next(r for p, r in replicas.items() if p != holder)
        ftjs = FineTuneJobs(api, namespace)
        ftjs.create(finetunejob("first"))
        wait_until(lambda: jobs_of(batch, namespace, "first"), "the first Job", timeout=60)

        proxy_of[leader.pod].dead()
        # The old leader must stop on its own, its connection still dead: it never acts again.
        wait_until(lambda: leader.process.poll() is not None, "the cut-off leader to exit", timeout=60)
        wait_until(
            lambda: (
                coordination.read_namespaced_lease(lease_name(), lease_namespace).spec.holder_identity
                == other.pod
            ),
            "the other replica to take the Lease",
            timeout=60,
        )
        gave_up = _logged_at(leader.log(), ": exiting")
        took_over = _logged_at(other.log(), "became the leader")
        assert gave_up < took_over, (
            f"two leaders: {other.pod} led at {took_over}, {leader.pod} until {gave_up}"
        )
        print(f"handover: {(took_over - gave_up).total_seconds():.1f}s after the old leader stopped")

        ftjs.create(finetunejob("second"))
        wait_until(lambda: jobs_of(batch, namespace, "second"), "the second Job, from the new leader", 60)
        proxy_of[leader.pod].restore()
    finally:
        for replica in replicas.values():
            replica.stop()
        client.CoordinationV1Api(api).delete_namespaced_lease(lease_name(), lease_namespace)
