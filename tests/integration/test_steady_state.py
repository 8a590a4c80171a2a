"""A quiet cluster costs the API server nothing: with no resync due, a settled ModelServe makes no request,
and a sidecar's report reaches the status through the watch of the report ConfigMaps, not a poll."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.cluster import localcluster
from tests.integration.test_modelserve import ModelServes, report_as_the_sidecars
from tests.kube import wait_until
from tests.operator_fixtures import OperatorProcess
from tests.specs import modelserve

QUIET_SECONDS = 10.0  # a window with nothing changing: no request may fall in it


@pytest.fixture
def quiet_operator(
    operator: OperatorProcess, cluster: localcluster.ClusterInfo, namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """The session's operator steps aside for one whose resync never comes during the test.

    It watches the test's namespace alone: other tests' resources, still finishing or being deleted in
    the shared cluster, would otherwise bring requests into the quiet window."""
    operator.stop()
    quiet = OperatorProcess(
        cluster,
        tmp_path / "operator.log",
        operator.kubeconfig,
        env={"KUBETUNE_RESYNC_SECONDS": "3600"},
        args=("--namespace", namespace),
    )
    quiet.start()
    try:
        yield quiet
    finally:
        quiet.stop()
        operator.start()


def requests_made(operator: OperatorProcess) -> float:
    """kubetune_api_requests_total, all verbs and resources together."""
    return sum(
        float(value)
        for value in re.findall(r"^kubetune_api_requests_total\{[^}]*\} (\S+)$", operator.metrics(), re.M)
    )


def test_a_report_wakes_the_modelserve_and_a_settled_one_asks_nothing(
    quiet_operator: OperatorProcess, namespace: str, claim: tuple[str, object], api: client.ApiClient,
    cluster: localcluster.ClusterInfo, tmp_path: Any,
) -> None:  # fmt: skip
    serves = ModelServes(api, namespace)
    serves.create(modelserve("qwen", [{"name": "a", "path": "runs/a"}]))

    def adapter_loading() -> bool:
        status = serves.get("qwen").get("status") or {}
        return any(a.get("reason") == "Loading" for a in status.get("adapters") or [])

    wait_until(adapter_loading, "the adapter Loading (no sidecar has reported)", timeout=60)
    wait_until(
        lambda: any(
            p.status.phase == "Running" for p in client.CoreV1Api(api).list_namespaced_pod(namespace).items
        ),
        "KWOK to run the pod",
        timeout=60,
    )
    report_as_the_sidecars(cluster, api, namespace, "qwen", tmp_path)
    # No poll and no resync: only the report's watch event can bring this.
    serves.wait("qwen", lambda s: (s.get("adapters") or [{}])[0].get("ready") is True, "the adapter ready")

    def quiet() -> bool:
        before = requests_made(quiet_operator)
        time.sleep(2)
        return requests_made(quiet_operator) == before

    wait_until(quiet, "the operator to settle", timeout=60)
    before = requests_made(quiet_operator)
    time.sleep(QUIET_SECONDS)
    assert requests_made(quiet_operator) == before, quiet_operator.metrics()
