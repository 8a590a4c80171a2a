"""The chart's operator as deployed: its Deployment's pod on the real node, from the built image, its probes
answered as the kubelet asks them, its metrics scraped through its Service by name, the Lease taken."""

from __future__ import annotations

from kubernetes import client

from tests.chart.install import NAMESPACE, RELEASE
from tests.cluster import localcluster, realnode
from tests.images.kubelet import OPERATOR_IMAGE
from tests.kube import wait_until
from tests.node.pods import run_pod


def test_runs_on_the_real_node_ready_with_its_probes_answered(
    operator_pod: client.V1Pod, cluster: localcluster.ClusterInfo
) -> None:
    assert operator_pod.spec.node_name == realnode.NODE_NAME
    assert operator_pod.spec.containers[0].image == OPERATOR_IMAGE
    (status,) = operator_pod.status.container_statuses
    assert status.ready and status.restart_count == 0
    # The kubelet's own count of the probes it ran against the pod, read through the API server (which dials
    # the kubelet with its client certificate). The liveness probe starts after its initial delay.
    pod = operator_pod.metadata.name

    def probed(probe: str) -> bool:
        metrics = localcluster.kubectl(
            cluster, "get", "--raw", f"/api/v1/nodes/{realnode.NODE_NAME}/proxy/metrics/probes"
        )
        return any(
            line.startswith("prober_probe_total{") and f'probe_type="{probe}"' in line
            and f'pod="{pod}"' in line and 'result="successful"' in line and not line.endswith(" 0")
            for line in metrics.splitlines()
        )  # fmt: skip

    for probe in ("Readiness", "Liveness"):
        wait_until(lambda probe=probe: probed(probe), f"a successful {probe} probe of {pod}", timeout=60)


def test_its_metrics_are_scraped_through_its_service(
    operator_pod: client.V1Pod, namespace: str, api: client.ApiClient
) -> None:
    service = f"http://{RELEASE}-metrics.{NAMESPACE}.svc.cluster.local:8080/metrics"
    scrape = f"import urllib.request; print(urllib.request.urlopen({service!r}, timeout=10).read().decode())"
    phase, log = run_pod(client.CoreV1Api(api), namespace, OPERATOR_IMAGE, ["python", "-c", scrape])
    assert phase == "Succeeded", log
    assert "kubetune_" in log, log[-2000:]


def test_takes_the_lease(operator_pod: client.V1Pod, api: client.ApiClient) -> None:
    coordination = client.CoordinationV1Api(api)
    holder = wait_until(
        lambda: coordination.read_namespaced_lease(RELEASE, NAMESPACE).spec.holder_identity,
        "the Lease to be held",
        timeout=60,
    )
    assert operator_pod.metadata.name in holder, holder
