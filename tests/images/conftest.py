"""The image tier: the built images (make images) run as containers, as a kubelet would run them.

It runs in a pytest session of its own (make test-images): the other tiers' session runs the operator on the
host, which would reconcile this tier's resources too. Here the operator is the operator image, run as the
chart's Deployment's pod (on a fake node, so nothing else runs it); a FineTuneJob's trainer pod is run from
the trainer image the same way.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from tests.chart.install import NAMESPACE, RELEASE, helm, install_chart
from tests.cluster import localcluster
from tests.images.kubelet import OPERATOR_IMAGE, as_the_kubelet, running_pod
from tests.images.podman import PodContainer, require_image


@pytest.fixture(scope="session")
def operator_container(
    cluster: localcluster.ClusterInfo,
    crds: None,
    api: client.ApiClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PodContainer]:
    """The operator image running as the chart's Deployment's pod; the chart is installed for its pod."""
    require_image(OPERATOR_IMAGE)
    liveness_port, metrics_port = localcluster.free_port(), localcluster.free_port()
    install_chart(cluster, "--set", f"livenessPort={liveness_port}", "--set", f"metrics.port={metrics_port}")
    pod = running_pod(api, NAMESPACE, f"app.kubernetes.io/instance={RELEASE}", "the chart's pod")
    container = as_the_kubelet(cluster, pod, tmp_path_factory.mktemp("operator-image"))
    container.start()
    yield container
    container.remove()
    helm(cluster, "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait")
