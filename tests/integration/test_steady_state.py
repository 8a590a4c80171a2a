"""A quiet cluster costs the API server nothing: a settled ModelServe makes no request, resyncs or not; a
sidecar's report reaches the status through the watch of the report ConfigMaps, not a poll; and a child
changed or deleted by hand is written back at once, not at the next resync."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster import localcluster
from tests.integration.test_modelserve import ModelServes, report_as_the_sidecars
from tests.kube import wait_until
from tests.operator_fixtures import OperatorProcess
from tests.specs import modelserve

QUIET_SECONDS = 10.0  # a window with nothing changing: no request may fall in it


NEVER = "3600"  # a resync that does not come during a test


@pytest.fixture
def quiet_operator(
    operator: OperatorProcess,
    cluster: localcluster.ClusterInfo,
    namespace: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[OperatorProcess]:
    """The session's operator steps aside for one with the resync interval the test asks (indirect
    parametrization; by default one that never comes during the test).

    It watches the test's namespace alone: other tests' resources, still finishing or being deleted in
    the shared cluster, would otherwise bring requests into the quiet window."""
    operator.stop()
    quiet = OperatorProcess(
        cluster,
        tmp_path / "operator.log",
        operator.kubeconfig,
        env={"KUBETUNE_RESYNC_SECONDS": getattr(request, "param", NEVER)},
        args=("--namespace", namespace),
    )
    quiet.start()
    try:
        yield quiet
    finally:
        quiet.stop()
        operator.start()


def counter(operator: OperatorProcess, name: str, **labels: str) -> float:
    """The sum of a counter's samples whose labels include `labels`."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(operator.metrics())
        for sample in family.samples
        if sample.name == name and sample.labels.items() >= labels.items()
    )


def requests_made(operator: OperatorProcess) -> float:
    """kubetune_api_requests_total, all verbs and resources together."""
    return counter(operator, "kubetune_api_requests_total")


def settle(operator: OperatorProcess) -> None:
    def quiet() -> bool:
        before = requests_made(operator)
        time.sleep(2)
        return requests_made(operator) == before

    wait_until(quiet, "the operator to settle", timeout=60)


def nothing_asked_for(operator: OperatorProcess, seconds: float = QUIET_SECONDS) -> None:
    before = requests_made(operator)
    time.sleep(seconds)
    assert requests_made(operator) == before, operator.metrics()


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

    settle(quiet_operator)
    nothing_asked_for(quiet_operator)

    # Someone's edit of a child, and someone's deletion of one: written back at once, with no resync.
    core = client.CoreV1Api(api)
    wanted = core.read_namespaced_config_map("qwen-adapters", namespace).data
    core.patch_namespaced_config_map("qwen-adapters", namespace, {"data": {"adapters.json": "{}"}})
    core.delete_namespaced_service("qwen-vllm", namespace)
    wait_until(
        lambda: core.read_namespaced_config_map("qwen-adapters", namespace).data == wanted,
        "the adapters ConfigMap written back",
    )
    wait_until(
        lambda: core.list_namespaced_service(namespace, field_selector="metadata.name=qwen-vllm").items,
        "the Service written back",
    )


@pytest.mark.parametrize("quiet_operator", ["1"], indirect=True)
def test_resyncs_ask_nothing_of_a_settled_modelserve(
    quiet_operator: OperatorProcess, namespace: str, claim: tuple[str, object], api: client.ApiClient
) -> None:
    """A resync every second: each pass finds every child as the operator wrote it, and writes nothing
    (it wrote all of them again, 17 requests a ModelServe a resync)."""
    serves = ModelServes(api, namespace)
    serves.create(modelserve("qwen"))
    serves.wait("qwen", lambda s: s.get("phase") == "Ready", "the ModelServe Ready", timeout=120)
    settle(quiet_operator)
    reconciles = counter(quiet_operator, "kubetune_reconciles_total", kind="ModelServe")
    nothing_asked_for(quiet_operator)
    assert counter(quiet_operator, "kubetune_reconciles_total", kind="ModelServe") >= reconciles + 3, (
        "the resyncs came, and passed over it"
    )
