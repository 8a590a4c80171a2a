"""The real-node tier: the built images run by a real kubelet (containerd, runc, CNI, kube-proxy, CoreDNS)
on a node beside the fake GPU nodes (tests/cluster/realnode.py).

It runs in a pytest session of its own, on a cluster of its own (`make test-node` sets KUBETUNE_CLUSTER_DIR
and KUBETUNE_REAL_NODE): its operator is the chart's Deployment on the real node, and bringing the node up
must not restart the cluster the other tiers use.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.chart.install import NAMESPACE, RELEASE, helm, install_chart
from tests.cluster import localcluster, realnode
from tests.images.kubelet import OPERATOR_IMAGE, TRAINER_IMAGE, VLLM_CPU_IMAGE
from tests.images.podman import require_image
from tests.kube import wait_for_running_pods

FIGURES: dict[str, object] = {}


@pytest.fixture(scope="session")
def cluster() -> Iterator[localcluster.ClusterInfo]:
    if not os.environ.get("KUBETUNE_CLUSTER_DIR") or os.environ.get("KUBETUNE_REAL_NODE") != "1":
        pytest.fail(
            "tests/node runs on a cluster of its own with a real node: `make test-node`", pytrace=False
        )
    if missing := realnode.missing_prerequisites():
        pytest.fail(f"the real node needs {', '.join(missing)} (make node-tools)", pytrace=False)
    reused = localcluster.reusable(real_node=True)
    started = time.monotonic()
    info = localcluster.up(real_node=True)
    if reused is None:
        FIGURES["cluster_up_s"] = round(time.monotonic() - started, 1)
    FIGURES["node_bring_up_s"] = info.real_node["timings"]
    os.environ["KUBECONFIG"] = info.kubeconfig
    yield info
    FIGURES["memory_mib"] = {k: round(v) for k, v in realnode.memory_mib(info).items()}
    (Path(info.state_dir).parent / "node-figures.json").write_text(json.dumps(FIGURES, indent=2))
    if reused is None and os.environ.get("KUBETUNE_KEEP_CLUSTER") != "1":
        localcluster.down()


def _in_the_node(cluster: localcluster.ClusterInfo, image: str) -> None:
    """`image`, from the local containers storage into the node's containerd (once: containerd's images are
    kept across clusters); skipped when it was not built here (failed when make built it for this run)."""
    require_image(image)
    for name, took in realnode.import_images(cluster, [image]).items():
        FIGURES[f"import_s {name}"] = None if took is None else round(took, 1)


@pytest.fixture(scope="session")
def operator_image(cluster: localcluster.ClusterInfo) -> None:
    _in_the_node(cluster, OPERATOR_IMAGE)


@pytest.fixture(scope="session")
def trainer_image(cluster: localcluster.ClusterInfo) -> None:
    """The trainer image, for the FineTuneJobs' tests alone: `make test` builds it only when its inputs
    changed, and the operator's tests need only theirs."""
    _in_the_node(cluster, TRAINER_IMAGE)


@pytest.fixture(scope="session")
def vllm_image(cluster: localcluster.ClusterInfo) -> None:
    """The stand-in for vLLM's CPU image (images/vllm-cpu), for the ModelServe's tests alone."""
    _in_the_node(cluster, VLLM_CPU_IMAGE)


@pytest.fixture(scope="session")
def operator_pod(
    cluster: localcluster.ClusterInfo, crds: None, operator_image: None, api: client.ApiClient
) -> Iterator[client.V1Pod]:
    """The chart installed with the built operator image, its Deployment's pod Running on the real node."""
    started = time.monotonic()
    install_chart(cluster, *realnode.chart_values())
    FIGURES["helm_install_to_ready_s"] = round(time.monotonic() - started, 1)
    core = client.CoreV1Api(api)
    pods = wait_for_running_pods(
        core, NAMESPACE, f"app.kubernetes.io/instance={RELEASE}", "the operator's pod Running"
    )
    yield pods[0]
    helm(cluster, "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait")
