"""The serve tier: the real vLLM engine (its CPU build, `make vllm-venv`) and the real adapter-sync sidecar,
started with exactly the command, arguments and environment that the operator renders for a ModelServe's
pod, serving the tiny Qwen2 and adapters that the real LLaMA-Factory trained (`make trainer-venv`).

The operator runs against the local control plane as in the integration tier; KWOK's pod stands in for the
ModelServe's pod there, and this machine runs that pod's containers (tests/serve/pod.py). One engine process
per test module: it takes about a minute to start.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from tests.cluster import localcluster
from tests.kube import create_namespace, wait_until
from tests.serve.pod import vllm_bin
from tests.worker.fixtures import SAMPLE_NER, cpu_env
from tests.worker.pod import finetunejob_body, materialise

REPO = Path(__file__).resolve().parents[2]
TRAINER_PYTHON = Path.home() / ".cache" / "kubetune" / "trainer-venv" / "bin" / "python"


def trainer_python() -> Path:
    return Path(os.environ.get("KUBETUNE_TRAINER_PYTHON") or TRAINER_PYTHON)


@pytest.fixture(scope="module")
def environments() -> None:
    if not (vllm_bin() / "vllm").exists():
        pytest.skip(f"no vLLM at {vllm_bin()}: run `make vllm-venv`")
    if not trainer_python().exists():
        pytest.skip(f"no trainer environment at {trainer_python()}: run `make trainer-venv`")


def run_trainer_python(args: list[str], workdir: Path, timeout: float = 600) -> None:
    env = cpu_env(workdir / "home")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "operator"), str(REPO)])
    result = subprocess.run(
        [str(trainer_python()), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def build_tiny_model_here(dest: Path, workdir: Path) -> None:
    """tests/worker's tiny model at `dest`, built by the trainer environment's torch and transformers."""
    run_trainer_python(
        [
            "-c",
            "import sys; from pathlib import Path; from tests.worker.tinymodel import build_tiny_model; "
            "build_tiny_model(Path(sys.argv[1]), [Path(sys.argv[2])])",
            str(dest),
            str(SAMPLE_NER),
        ],
        workdir,
    )


@pytest.fixture(scope="module")
def serve_namespace(api: client.ApiClient, environments: None) -> Iterator[str]:
    core = client.CoreV1Api(api)
    name = create_namespace(core, f"t-serve-{os.urandom(3).hex()}")
    yield name
    core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture(scope="module")
def serve_claim(
    serve_namespace: str, api: client.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """The claim `shared`, on a directory of this machine: the tiny model at models/tiny, the dataset."""
    core = client.CoreV1Api(api)
    root = tmp_path_factory.mktemp("serve") / "claim"
    (root / "datasets").mkdir(parents=True)
    shutil.copyfile(SAMPLE_NER, root / "datasets" / "sample-ner.json")
    build_tiny_model_here(root / "models" / "tiny", root.parent)
    yield from bound_claim(core, serve_namespace, root)


def bound_claim(core: client.CoreV1Api, namespace: str, root: Path) -> Iterator[Path]:
    """The claim `shared` in `namespace`, bound to a volume on the directory `root` (deleted after)."""
    volume, claim = localcluster.shared_claim(namespace, root)
    core.create_persistent_volume(volume)
    core.create_namespaced_persistent_volume_claim(namespace, claim)
    wait_until(
        lambda: core.read_namespaced_persistent_volume_claim("shared", namespace).status.phase == "Bound",
        "the claim to bind",
        timeout=30,
    )
    yield root
    core.delete_persistent_volume(volume["metadata"]["name"])


def train_adapter(
    claim: Path, namespace: str, name: str, workdir: Path, body: dict | None = None, **config: object
) -> Path:
    """A LoRA trained by `kubetune launch` in the trainer pod's layout; its directory on the claim.

    `body`: the FineTuneJob to train (default: the tiny model's, with `config` over its settings).
    """
    body = body or finetunejob_body(name, config=dict(config))
    pod = materialise(body, namespace=namespace, uid=f"uid-{name}", claim=claim, workdir=workdir / name)
    pod.python = str(trainer_python())
    code = pod.run(workdir / f"{name}.log", timeout=900)
    log = (workdir / f"{name}.log").read_text(errors="replace")
    assert code == 0, f"training {name} failed ({code}): {pod.termination_message()}\n{log[-3000:]}"
    assert (pod.output_dir / "adapter_config.json").exists(), log[-3000:]
    return pod.output_dir
