"""Two operator replicas with leader election: exactly one reconciles, and a killed leader is replaced."""

from __future__ import annotations

import os
import time
from pathlib import Path

from kubernetes import client

from tests.cluster import localcluster
from tests.integration.finetunejobs import FineTuneJobs
from tests.kube import wait_until
from tests.operator_fixtures import OperatorProcess
from tests.specs import finetunejob


def as_chart() -> bool:
    """`make test-chart-rbac`: the replicas run as the chart's ServiceAccount, with the chart's Lease Role."""
    return os.environ.get("KUBETUNE_OPERATOR_AS") == "chart"


def lease_name() -> str:
    from tests.chart.install import RELEASE

    return RELEASE if as_chart() else "kubetune-operator"


class Replica(OperatorProcess):
    """`kubetune run` as one replica of the chart's Deployment (its pod name, the Lease's namespace)."""

    def __init__(
        self,
        cluster: localcluster.ClusterInfo,
        log_path: Path,
        pod: str,
        namespace: str,
        kubeconfig: str,
        env: dict[str, str] | None = None,
    ):
        super().__init__(
            cluster,
            log_path,
            kubeconfig,
            env={
                "KUBETUNE_LEADER_ELECTION": lease_name(),
                "POD_NAME": pod,
                "POD_NAMESPACE": namespace,
                "KUBETUNE_LEASE_SECONDS": "6",
                "KUBETUNE_RENEW_DEADLINE_SECONDS": "4",
                "KUBETUNE_LEASE_RETRY_SECONDS": "1",
                **(env or {}),
            },
        )
        self.pod = pod
        self.namespace = namespace

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def test_one_replica_reconciles_and_a_killed_leader_is_replaced(
    operator: OperatorProcess,
    cluster: localcluster.ClusterInfo,
    namespace: str,
    claim: tuple[str, Path],
    api: client.ApiClient,
    batch: client.BatchV1Api,
    tmp_path: Path,
) -> None:
    from tests.chart.install import NAMESPACE as CHART_NAMESPACE

    operator.stop()  # the session's single operator steps aside while the two replicas run
    lease_namespace = CHART_NAMESPACE if as_chart() else namespace
    replicas = {
        pod: Replica(cluster, tmp_path / f"{pod}.log", pod, lease_namespace, operator.kubeconfig)
        for pod in ("kubetune-a", "kubetune-b")
    }
    try:
        for replica in replicas.values():
            replica.start()  # healthy while waiting: the liveness probe answers
        coordination = client.CoordinationV1Api(api)
        holder = wait_until(
            lambda: coordination.read_namespaced_lease(lease_name(), lease_namespace).spec.holder_identity,
            "a replica to take the Lease",
            timeout=30,
        )
        leader, other = replicas[holder], next(r for p, r in replicas.items() if p != holder)

        ftjs = FineTuneJobs(api, namespace)
        started = time.monotonic()
        ftjs.create(finetunejob("first"))
        wait_until(lambda: batch.list_namespaced_job(namespace).items, "the first Job", timeout=10)
        assert time.monotonic() - started < 10
        assert "kubetune operator started" in leader.log()
        assert "waiting to lead" in other.log() and "kubetune operator started" not in other.log()

        leader.kill()
        started = time.monotonic()
        ftjs.create(finetunejob("second"))
        wait_until(
            lambda: any(
                j.metadata.name.startswith("second") for j in batch.list_namespaced_job(namespace).items
            ),
            "the second Job, from the new leader",
            timeout=30,
        )
        handover = time.monotonic() - started
        lease = coordination.read_namespaced_lease(lease_name(), lease_namespace)
        assert lease.spec.holder_identity == other.pod
        assert "became the leader" in other.log()
        assert handover < 20, f"the new leader took {handover:.0f}s"
    finally:
        for replica in replicas.values():
            replica.stop()
        client.CoordinationV1Api(api).delete_namespaced_lease(lease_name(), lease_namespace)
        operator.start()
