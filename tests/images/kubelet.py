"""What a kubelet does with a pod of a fake node, done here with podman: the pod as the API server has it,
its token volume projected, the in-cluster service variables; and the images' names as the chart has them."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from kubernetes import client

from tests.chart.install import CHART
from tests.cluster import localcluster
from tests.images.podman import PodContainer
from tests.kube import wait_for_running_pods

CHART_VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
OPERATOR_IMAGE = "{repository}:{tag}".format(
    repository=CHART_VALUES["image"]["repository"],
    tag=CHART_VALUES["image"]["tag"] or yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"],
)
TRAINER_IMAGE = CHART_VALUES["trainer"]["image"]
# The real-node tier's stand-in for vLLM's CPU image (images/vllm-cpu: the pinned serve environment).
VLLM_CPU_IMAGE = OPERATOR_IMAGE.replace("/operator:", "/vllm-cpu:")


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except OSError:
        return 0


def running_pod(api: client.ApiClient, namespace: str, selector: str, what: str) -> dict[str, Any]:
    """The first Running pod matching `selector`, as the API server has it (on a fake node: KWOK runs
    nothing)."""
    core = client.CoreV1Api(api)
    pods = wait_for_running_pods(core, namespace, selector, what, timeout=90)
    return api.sanitize_for_serialization(pods[0])


def as_the_kubelet(cluster: localcluster.ClusterInfo, pod: dict[str, Any], workdir: Path) -> PodContainer:
    """The pod's first container as a kubelet would start it: the in-cluster service variables, and the token
    volume projected (a token bound to the pod, the cluster's CA, the namespace). The caller adds the other
    volumes it has (mounts); emptyDirs are made."""
    token_dir = workdir / "token"
    token_dir.mkdir(parents=True)
    token = localcluster.kubectl(
        cluster, "create", "token", pod["spec"]["serviceAccountName"], "-n", pod["metadata"]["namespace"],
        "--bound-object-kind=Pod", f"--bound-object-name={pod['metadata']['name']}", "--duration=1h",
    ).strip()  # fmt: skip
    (token_dir / "token").write_text(token)
    (token_dir / "ca.crt").write_bytes((Path(cluster.state_dir) / "pki" / "ca.crt").read_bytes())
    (token_dir / "namespace").write_text(pod["metadata"]["namespace"])
    for path in (token_dir, *token_dir.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    server = urlparse(cluster.server)
    container = PodContainer(
        pod,
        workdir,
        extra_env={
            "KUBERNETES_SERVICE_HOST": server.hostname or "",
            "KUBERNETES_SERVICE_PORT": str(server.port),
        },
    )
    container.mounts[container.token_volume()] = token_dir
    return container
