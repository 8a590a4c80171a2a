"""The trainer image, run as a FineTuneJob's pod: the operator image renders the FineTuneJob's Job (its pod
lands on a fake node and is held there Running), and that pod is run from the trainer image as a kubelet
would run it: the claim's directory at the claim's mount path, the ConfigMap's files at theirs (read from
the API server), the launcher's token projected, the pod's environment and the image's own user. Through its
entrypoint (`kubetune launch`, LLaMA-Factory under torchrun) it trains the tiny model on the CPU to a saved
adapter and reports its progress into the FineTuneJob's status; released, the pod ends and the FineTuneJob
Succeeds.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from kubernetes import client

from tests.cluster import localcluster
from tests.images.kubelet import TRAINER_IMAGE, as_the_kubelet, running_pod
from tests.images.podman import PodContainer, podman, require_image
from tests.integration.finetunejobs import FineTuneJobs
from tests.specs import with_pod_annotations
from tests.worker.fixtures import SAMPLE_NER
from tests.worker.pod import finetunejob_body, trainer_log

REPO = Path(__file__).resolve().parents[2]
IMAGE_UID = 1000  # the trainer Dockerfile's USER


def build_tiny_model(claim: Path) -> None:
    """tests/worker's tiny model, built by the image's own torch and transformers into the claim."""
    command = (
        "import sys; sys.path.insert(0, '/repo');"
        "from tests.worker.tinymodel import build_tiny_model;"
        f"build_tiny_model('/claim/models/tiny', ['/repo/tests/data/reference/{SAMPLE_NER.name}'])"
    )
    result = podman(
        "run", "--rm", "--network", "none", "--entrypoint", "python",
        "--volume", f"{REPO / 'tests'}:/repo/tests:ro", "--volume", f"{claim}:/claim:rw",
        TRAINER_IMAGE, "-c", command,
        timeout=300,
    )  # fmt: skip
    assert (claim / "models" / "tiny" / "config.json").is_file(), result.stdout + result.stderr


def test_trains_the_tiny_model_to_an_adapter(
    operator_container: PodContainer,
    namespace: str,
    claim: tuple[str, Path],
    api: client.ApiClient,
    cluster: localcluster.ClusterInfo,
    tmp_path: Path,
) -> None:
    require_image(TRAINER_IMAGE)
    user = podman("image", "inspect", "--format", "{{.Config.User}}", TRAINER_IMAGE).stdout.strip()
    assert user == str(IMAGE_UID), "the pod runs as the image's user (runAsNonRoot, no runAsUser)"
    _, root = claim
    (root / "datasets").mkdir()
    shutil.copyfile(SAMPLE_NER, root / "datasets" / SAMPLE_NER.name)
    os.chown(root, IMAGE_UID, IMAGE_UID)  # a claim the trainer may write, as a fresh volume's root would be
    build_tiny_model(root)

    ftjs = FineTuneJobs(api, namespace)
    ftjs.create(with_pod_annotations(finetunejob_body("tiny"), **{"test.kubetune.io/hold": "true"}))
    pod = running_pod(api, namespace, "kubetune.io/finetunejob=tiny", "the FineTuneJob's pod")

    config_map = next(v["configMap"]["name"] for v in pod["spec"]["volumes"] if v["name"] == "config")
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    for name, content in client.CoreV1Api(api).read_namespaced_config_map(config_map, namespace).data.items():
        (config_dir / name).write_text(content)
    trainer = as_the_kubelet(cluster, pod, tmp_path / "pod")
    trainer.mounts.update({"claim": root, "config": config_dir})

    result = trainer.run(timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]

    env = trainer.env()
    output = root / Path(env["KUBETUNE_OUTPUT_DIR"]).relative_to("/mnt/claim")
    assert (output / "adapter_model.safetensors").is_file()
    assert json.loads((output / "adapter_config.json").read_text())["r"] == 8
    assert [r["current_steps"] for r in trainer_log(output) if "loss" in r] == [1, 2, 3, 4]
    assert (output / "adapter_model.safetensors").stat().st_uid == IMAGE_UID
    # Progress reached the FineTuneJob, sent with the launcher's own token.
    assert ftjs.status("tiny")["progress"]["step"] == 4

    # Released, the fake node ends the pod; the operator image sees the Job through.
    client.CoreV1Api(api).patch_namespaced_pod(
        pod["metadata"]["name"], namespace, {"metadata": {"annotations": {"test.kubetune.io/hold": None}}}
    )
    status = ftjs.wait_phase("tiny", "Succeeded", timeout=120)
    assert status["progress"]["totalSteps"] == 4


pytestmark = pytest.mark.timeout(1200)


# A CUDA kernel and a host function that launches it, built and linked as DeepSpeed's ops build (nvcc for the
# .cu, the C++ compiler links the shared object with -lcudart): no GPU is needed to build one.
KERNEL = """
__global__ void scale(float *x, float a) { x[threadIdx.x] *= a; }
extern "C" int launch(float *x) { scale<<<1, 32>>>(x, 2.0f); return (int)cudaGetLastError(); }
"""


def test_deepspeeds_ops_can_build_with_the_images_cuda_toolkit(tmp_path: Path) -> None:
    require_image(TRAINER_IMAGE)
    (tmp_path / "kernel.cu").write_text(KERNEL)
    tmp_path.chmod(0o777)
    build = (
        'cd /work && "$CUDA_HOME/bin/nvcc" -arch=sm_90 -Xcompiler -fPIC -c kernel.cu -o kernel.o'
        ' && c++ -shared kernel.o -o kernel.so -L"$CUDA_HOME/lib" -lcudart'
    )
    result = podman(
        "run", "--rm", "--network", "none", "--read-only", "--volume", f"{tmp_path}:/work:rw",
        "--entrypoint", "sh", TRAINER_IMAGE, "-c", build,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "kernel.so").is_file()
