"""Tokenize once, on CPU, before the GPUs are held (spec.dataset.preprocess), on the local control plane
with the real operator process: the CPU-only Job lands on a node without GPUs, the training Job appears
only after it succeeded, and a failing preprocessing leaves no training Job."""

from __future__ import annotations

import time

import pytest
import yaml
from kubernetes import client

from tests.cluster import localcluster
from tests.integration.finetunejobs import FineTuneJobs, job_condition, jobs_of
from tests.kube import wait_until
from tests.specs import finetunejob

pytestmark = pytest.mark.usefixtures("operator")

CPU_POOL = {"kubetune.io/test-pool": "cpu"}
PREPROCESS_LABEL = "kubetune.io/preprocess-of"
RESYNC_SECONDS = 5  # the operator fixture's KUBETUNE_RESYNC_SECONDS


class CpuNodes:
    """A fake node without GPUs (the cluster's own pool advertises nvidia.com/gpu on every node)."""

    def manifests(self) -> list[dict]:
        pool = localcluster.NodePool(count=1, name_prefix="cpu-node", labels=CPU_POOL)
        node = pool.node(0)
        for resources in (node["status"]["capacity"], node["status"]["allocatable"]):
            resources.pop(pool.gpu_resource, None)
        node["metadata"]["labels"] = {
            k: v for k, v in node["metadata"]["labels"].items() if not k.startswith("nvidia.com/")
        }
        return [node]


@pytest.fixture(scope="module")
def cpu_node(cluster: localcluster.ClusterInfo) -> str:
    [name] = localcluster.add_nodes(cluster, CpuNodes())  # type: ignore[arg-type]
    return name


def preprocessing(name: str, **pod_annotations: str) -> dict:
    body = finetunejob(name)
    body["spec"]["dataset"]["preprocess"] = {
        "enabled": True,
        "resources": {"cpu": "4", "memory": "8Gi"},
        "nodeSelector": CPU_POOL,
    }
    if pod_annotations:
        body["spec"]["podMetadata"] = {"annotations": pod_annotations}
    return body


def preprocess_pods(core: client.CoreV1Api, namespace: str, name: str) -> list[client.V1Pod]:
    return core.list_namespaced_pod(namespace, label_selector=f"{PREPROCESS_LABEL}={name}").items


def condition_of(status: dict, type_: str) -> dict:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


def test_the_cpu_job_runs_on_a_node_without_gpus_and_the_training_job_follows_it(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, core: client.CoreV1Api,
    batch: client.BatchV1Api, cpu_node: str,
) -> None:  # fmt: skip
    ftjs = FineTuneJobs(api, namespace)
    # Every pod of the job runs 6 s on its fake node, then succeeds.
    ftjs.create(preprocessing("tok", **{"test.kubetune.io/run-duration": "6s"}))

    status = ftjs.wait_phase("tok", "Preprocessing", timeout=30)
    assert condition_of(status, "Preprocessed")["status"] == "False"
    [pod] = wait_until(
        lambda: [p for p in preprocess_pods(core, namespace, "tok") if p.spec.node_name],
        "the preprocessing pod to be scheduled",
        timeout=30,
    )
    assert pod.spec.node_name == cpu_node
    node = core.read_node(cpu_node)
    assert "nvidia.com/gpu" not in (node.status.allocatable or {})
    [container] = pod.spec.containers
    assert container.args == ["preprocess"]
    assert "nvidia.com/gpu" not in (container.resources.limits or {})
    assert container.resources.requests == {"cpu": "4", "memory": "8Gi"}
    assert jobs_of(batch, namespace, "tok") == [], "no training Job while preprocessing"

    [training] = wait_until(lambda: jobs_of(batch, namespace, "tok"), "the training Job", timeout=60)
    preprocess_job = batch.read_namespaced_job("tok-preprocess", namespace)
    assert job_condition(preprocess_job, "Complete") is not None, "the training Job came after success"
    assert (
        training.metadata.creation_timestamp >= job_condition(preprocess_job, "Complete").last_transition_time
    )
    config = yaml.safe_load(
        core.read_namespaced_config_map("tok-config", namespace).data["llamafactory.yaml"]
    )
    assert config["tokenized_path"] == "/mnt/claim/runs/" + namespace + "/tok/.kubetune/tokenized"

    status = ftjs.wait_phase("tok", "Succeeded", timeout=60)
    preprocessed = condition_of(status, "Preprocessed")
    assert (preprocessed["status"], preprocessed["reason"]) == ("True", "Tokenized")


def test_a_failing_preprocessing_leaves_no_training_job(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, core: client.CoreV1Api,
    batch: client.BatchV1Api, cpu_node: str,
) -> None:  # fmt: skip
    ftjs = FineTuneJobs(api, namespace)
    ftjs.create(preprocessing("bad-data", **{"test.kubetune.io/exit-code": "1"}))

    status = ftjs.wait_phase("bad-data", "Failed", timeout=60)
    assert status["reason"] == "PreprocessingFailed"
    assert "exited with code 1 (Error)" in status["message"]
    assert "no training Job was created" in status["message"]
    assert condition_of(status, "Preprocessed")["reason"] == "PreprocessingFailed"
    assert status["restarts"] == 0
    time.sleep(2 * RESYNC_SECONDS + 1)  # two resyncs: nothing follows
    assert jobs_of(batch, namespace, "bad-data") == []
    assert ftjs.status("bad-data")["phase"] == "Failed"
    assert [p.spec.node_name for p in preprocess_pods(core, namespace, "bad-data")] == [cpu_node]
