"""Installing the Helm chart into the local control plane, and acting as its ServiceAccount."""

from __future__ import annotations

import json
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
    token = localcluster.kubectl(
        cluster, "create", "token", RELEASE, "-n", NAMESPACE, "--duration=2h"
    ).strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {
                    "server": cluster.server,
                    "certificate-authority": str(Path(cluster.state_dir) / "pki" / "ca.crt"),
                },
            }
        ],
        "users": [{"name": "kubetune-operator", "user": {"token": token}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "kubetune-operator"}}],
        "current-context": "local",
    }
    path.write_text(json.dumps(config))
    return path
