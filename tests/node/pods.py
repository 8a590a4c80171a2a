"""One-shot pods on the real node: a command in a built image, its output read back through the kubelet."""

from __future__ import annotations

import uuid

from kubernetes import client

from tests.cluster import realnode
from tests.kube import wait_until


def run_pod(
    core: client.CoreV1Api, namespace: str, image: str, command: list[str], timeout: float = 120
) -> tuple[str, str]:
    """Runs `command` in `image` on the real node to its end; returns its phase and its log."""
    name = f"run-{uuid.uuid4().hex[:6]}"
    core.create_namespaced_pod(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                **realnode.PLACEMENT,
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "containers": [
                    {"name": "run", "image": image, "imagePullPolicy": "IfNotPresent", "command": command}
                ],
            },
        },
    )
    phase = wait_until(
        lambda: (
            (p := core.read_namespaced_pod(name, namespace).status.phase) in ("Succeeded", "Failed") and p
        ),
        f"pod {name} to finish",
        timeout=timeout,
    )
    return phase, core.read_namespaced_pod_log(name, namespace)
