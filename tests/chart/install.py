"""Installing the Helm chart into the local control plane, and acting as its ServiceAccount."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.cluster import localcluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kubetune"
RELEASE, NAMESPACE = "kubetune", "kubetune-system"


def helm(cluster: localcluster.ClusterInfo, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [cluster.helm, "--kubeconfig", cluster.kubeconfig, *args], capture_output=True, text=True, check=False
    )


def install_chart(cluster: localcluster.ClusterInfo, *values: str) -> None:
    result = helm(
        cluster, "upgrade", "--install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
        "--wait", "--timeout", "120s", *values,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"helm install failed:\n{result.stdout}\n{result.stderr}")


def service_account_kubeconfig(cluster: localcluster.ClusterInfo, path: Path) -> Path:
    """A kubeconfig that authenticates as the chart's ServiceAccount (a bound token, like a pod's)."""
    return localcluster.token_kubeconfig(cluster, NAMESPACE, RELEASE, path)
