"""The operator image, run as the chart's Deployment runs it: the chart's args and environment (the downward
API filled in from the chart's pod), uid 65532 with a read-only root filesystem and no capabilities, the
ServiceAccount token where the kubelet projects it and the in-cluster service variables, on the host's
network against the local control plane. Its probes answer, it takes the Lease, and it reconciles a
FineTuneJob and a ModelServe (KWOK's fake GPU nodes move their pods).
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

from kubernetes import client

from tests.chart.install import NAMESPACE, RELEASE
from tests.cluster import localcluster
from tests.images.kubelet import http_status
from tests.images.podman import PodContainer
from tests.integration.finetunejobs import FineTuneJobs, KubetuneResources
from tests.kube import wait_until
from tests.specs import finetunejob, modelserve


class ModelServes(KubetuneResources):
    plural = "modelserves"


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
