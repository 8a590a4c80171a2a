"""FineTuneJobs as deployed: the chart's operator (on the real node) renders the Job, the real kubelet runs
its pods from the built trainer image (the claim a hostPath volume, the ConfigMap, the launcher's token
projected), LLaMA-Factory trains the tiny model on the CPU, and the status tells what happened: Succeeded
with its progress, or the container the kernel killed for memory."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from kubernetes import client

from tests.cluster import realnode
from tests.images.test_trainer_image import IMAGE_UID, build_tiny_model
from tests.integration.finetunejobs import FineTuneJobs
from tests.node.conftest import FIGURES
from tests.worker.fixtures import SAMPLE_NER
from tests.worker.pod import finetunejob_body

pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="session")
def tiny_model(trainer_image: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/worker's tiny model, built once by the trainer image's own torch and transformers."""
    root = tmp_path_factory.mktemp("tiny-model")
    os.chown(root, IMAGE_UID, IMAGE_UID)  # the image's user writes it
    build_tiny_model(root)
    return root / "models" / "tiny"


@pytest.fixture
def trainer_claim(claim: tuple[str, Path], tiny_model: Path) -> Path:
    """The claim as a FineTuneJob finds it: the tiny model and the sample data, the image's user's."""
    _, root = claim
    shutil.copytree(tiny_model, root / "models" / "tiny")
    (root / "datasets").mkdir()
    shutil.copyfile(SAMPLE_NER, root / "datasets" / SAMPLE_NER.name)
    for path in (root, *root.rglob("*")):
        os.chown(path, IMAGE_UID, IMAGE_UID)
    return root


def on_the_real_node(**resources: object) -> dict:
    return {"nodes": 1, "gpusPerNode": 0, **realnode.PLACEMENT, **resources}


def trainer_pods(api: client.ApiClient, namespace: str, name: str) -> list[client.V1Pod]:
    return (
        client.CoreV1Api(api)
        .list_namespaced_pod(namespace, label_selector=f"kubetune.io/finetunejob={name}")
        .items
    )


def test_trains_the_tiny_model_to_succeeded(
    operator_pod: client.V1Pod, namespace: str, trainer_claim: Path, api: client.ApiClient
) -> None:
    ftjs = FineTuneJobs(api, namespace)
    started = time.monotonic()
    ftjs.create(finetunejob_body("tiny", resources=on_the_real_node()))
    status = ftjs.wait_phase("tiny", "Succeeded", timeout=900)
    FIGURES["finetunejob_to_succeeded_s"] = round(time.monotonic() - started, 1)
    assert status["progress"]["step"] == status["progress"]["totalSteps"] == 4
    (pod,) = trainer_pods(api, namespace, "tiny")
    assert pod.spec.node_name == realnode.NODE_NAME
    assert pod.status.container_statuses[0].state.terminated.exit_code == 0
    outputs = [p for p in trainer_claim.rglob("adapter_config.json")]
    assert outputs and json.loads(outputs[0].read_text())["r"] == 8
    assert outputs[0].stat().st_uid == IMAGE_UID


def test_a_trainer_killed_for_memory_is_reported_oomkilled(
    operator_pod: client.V1Pod, namespace: str, trainer_claim: Path, api: client.ApiClient
) -> None:
    ftjs = FineTuneJobs(api, namespace)
    # torch alone outgrows this limit: the kernel kills the trainer in its memory cgroup.
    ftjs.create(finetunejob_body("oom", resources=on_the_real_node(memory="200Mi"), maxRestarts=0))
    status = ftjs.wait_phase("oom", "Failed", timeout=300)
    assert "OOMKilled" in json.dumps(status), status
    (pod,) = trainer_pods(api, namespace, "oom")
    assert pod.status.container_statuses[0].state.terminated.reason == "OOMKilled"


def test_a_two_pod_cpu_rehearsal_trains_as_one_job_through_the_headless_service(
    operator_pod: client.V1Pod, namespace: str, trainer_claim: Path, api: client.ApiClient
) -> None:
    """Two node ranks, one pod each, both on the real node: node rank 1 reaches node rank 0 at the headless
    Service's DNS name (torchrun's MASTER_ADDR), and they train as one DDP job."""
    [sample] = json.loads(SAMPLE_NER.read_text())
    records = [{**sample, "input": sample["input"][: 10 + i]} for i in range(16)]
    (trainer_claim / "datasets" / SAMPLE_NER.name).write_text(json.dumps(records, ensure_ascii=False))
    ftjs = FineTuneJobs(api, namespace)
    body = finetunejob_body("ddp", {"max_samples": 16, "save_steps": 4}, resources=on_the_real_node(nodes=2))
    started = time.monotonic()
    ftjs.create(body)
    status = ftjs.wait_phase("ddp", "Succeeded", timeout=900)
    FIGURES["rehearsal_to_succeeded_s"] = round(time.monotonic() - started, 1)
    pods = trainer_pods(api, namespace, "ddp")
    assert len(pods) == 2 and {p.spec.node_name for p in pods} == {realnode.NODE_NAME}
    master = {e.name: e.value for e in pods[0].spec.containers[0].env}["MASTER_ADDR"]
    assert master.endswith(f".{namespace}.svc"), master  # a name the cluster's DNS answers, not an address
    # 16 records, 2 a step per process: one epoch in 4 steps only when both ranks took their share.
    assert status["progress"]["step"] == 4 and status["progress"]["epoch"] == pytest.approx(1.0)
