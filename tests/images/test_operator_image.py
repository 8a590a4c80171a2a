"""The operator image, run as the chart's Deployment runs it: the chart's args and environment (the downward
API filled in from the chart's pod), uid 65532 with a read-only root filesystem and no capabilities, the
ServiceAccount token where the kubelet projects it and the in-cluster service variables, on the host's
network against the local control plane. Its probes answer, it takes the Lease, and it reconciles a
FineTuneJob and a ModelServe (KWOK's fake GPU nodes move their pods).
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from kubernetes import client

from tests.chart.install import CHART, NAMESPACE, RELEASE, helm, install_chart
from tests.cluster import localcluster
from tests.images.podman import PodContainer, require_image
from tests.integration.finetunejobs import FineTuneJobs, KubetuneResources
from tests.kube import wait_until
from tests.specs import finetunejob, modelserve


class ModelServes(KubetuneResources):
    plural = "modelserves"


def chart_image() -> str:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    return f"{values['image']['repository']}:{values['image']['tag'] or chart['appVersion']}"


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except OSError:
        return 0


def projected_service_account(
    cluster: localcluster.ClusterInfo, pod: dict[str, Any], directory: Path
) -> Path:
    """What the kubelet projects at /var/run/secrets/kubernetes.io/serviceaccount: a token bound to the pod,
    the cluster's CA and the namespace."""
    directory.mkdir(parents=True)
    token = localcluster.kubectl(
        cluster, "create", "token", pod["spec"]["serviceAccountName"], "-n", pod["metadata"]["namespace"],
        "--bound-object-kind=Pod", f"--bound-object-name={pod['metadata']['name']}", "--duration=1h",
    ).strip()  # fmt: skip
    (directory / "token").write_text(token)
    (directory / "ca.crt").write_bytes((Path(cluster.state_dir) / "pki" / "ca.crt").read_bytes())
    (directory / "namespace").write_text(pod["metadata"]["namespace"])
    for path in (directory, *directory.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return directory


@pytest.fixture(scope="module")
def operator_container(
    cluster: localcluster.ClusterInfo,
    crds: None,
    api: client.ApiClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PodContainer]:
    require_image(chart_image())
    workdir = tmp_path_factory.mktemp("operator-image")
    liveness_port, metrics_port = localcluster.free_port(), localcluster.free_port()
    install_chart(cluster, "--set", f"livenessPort={liveness_port}", "--set", f"metrics.port={metrics_port}")
    core = client.CoreV1Api(api)
    selector = f"app.kubernetes.io/instance={RELEASE}"
    # The chart's pod as the API server has it (on a fake node: nothing runs it but this test).
    pods = wait_until(
        lambda: core.list_namespaced_pod(NAMESPACE, label_selector=selector).items,
        "the chart's pod",
        timeout=60,
    )
    pod = api.sanitize_for_serialization(pods[0])
    server = urlparse(cluster.server)
    container = PodContainer(
        pod,
        workdir,
        extra_env={
            "KUBERNETES_SERVICE_HOST": server.hostname or "",
            "KUBERNETES_SERVICE_PORT": str(server.port),
        },
    )
    container.mounts[container.token_volume()] = projected_service_account(cluster, pod, workdir / "token")
    container.start()
    yield container
    container.remove()
    helm(cluster, "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait")


def answers(container: PodContainer, url: str) -> bool:
    if not container.running():
        raise AssertionError(f"the operator container exited; its log:\n{container.logs()}")
    return http_status(url) == 200


def probe_url(container: PodContainer, probe: str) -> str:
    spec = container.container
    get = spec[probe]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
    return f"http://127.0.0.1:{ports.get(get['port'], get['port'])}{get['path']}"


def test_runs_as_the_chart_says_and_its_probes_answer(operator_container: PodContainer) -> None:
    for probe in ("livenessProbe", "readinessProbe"):
        url = probe_url(operator_container, probe)
        wait_until(lambda url=url: answers(operator_container, url), f"the {probe} at {url}", timeout=90)
    inside = operator_container.exec("sh", "-c", "id -u; id -g; touch /probe 2>&1 || echo read-only")
    uid, gid, *rest = inside.stdout.split("\n")
    assert (uid, gid) == ("65532", "65532")
    assert "read-only" in "\n".join(rest), inside.stdout
    # The image's entrypoint is what the chart's args follow: `kubetune run`.
    command = operator_container.exec("cat", "/proc/1/cmdline").stdout.split("\0")
    assert command[1:3] == ["/usr/local/bin/kubetune", "run"] or command[:2] == ["kubetune", "run"], command


def test_reconciles_a_finetunejob_and_a_modelserve(
    operator_container: PodContainer,
    namespace: str,
    claim: tuple[str, Path],
    api: client.ApiClient,
    cluster: localcluster.ClusterInfo,
) -> None:
    ftjs, serves = FineTuneJobs(api, namespace), ModelServes(api, namespace)
    ftjs.create(finetunejob("clue-ner"))
    serves.create(modelserve("qwen"))
    ftjs.wait_phase("clue-ner", "Succeeded", timeout=120)
    serves.wait("qwen", lambda s: s.get("phase") == "Ready", "the ModelServe to be Ready", timeout=120)
    # The leader is this container: the Lease names the chart's pod.
    lease = client.CoordinationV1Api(api).read_namespaced_lease(RELEASE, NAMESPACE)
    assert (
        lease.spec.holder_identity
        and operator_container.pod["metadata"]["name"] in lease.spec.holder_identity
    )
    env = operator_container.env()
    with urllib.request.urlopen(f"http://127.0.0.1:{env['KUBETUNE_METRICS_PORT']}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    assert "kubetune_" in metrics
    printed = localcluster.kubectl(cluster, "get", "ftj", "clue-ner", "-n", namespace)
    assert "Succeeded" in printed
