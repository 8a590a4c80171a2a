"""A trainer pod on this machine: the rendered ConfigMap and Job, materialised as a pod would see them.

The FineTuneJob is rendered with the real render code; the ConfigMap's files are written to a directory
(its mount), the claim is a temporary directory, and the container's environment is the Job's, with the
downward-API values filled in as the kubelet would. Paths under the fixed mount points are mapped onto
those directories, which is all a mount does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune.api.common import CLAIM_MOUNT_PATH
from kubetune.api.defaults import CONFIG_MOUNT_PATH, TrainerSettings
from kubetune.api.finetunejob import FineTuneJobSpec
from kubetune.render import finetunejob as render
from tests.specs import finetunejob
from tests.worker.fixtures import cpu_env

REPO = Path(__file__).resolve().parents[2]
SAMPLE_DATASET_INFO = {
    "sample_ner": {
        "file_name": "sample-ner.json",
        "formatting": "alpaca",
        "columns": {"prompt": "instruction", "query": "input", "response": "output"},
    }
}


def finetunejob_body(name: str, config: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    """A FineTuneJob training the tiny model (at models/tiny on the claim) on the sample data, on the CPU."""
    tiny: dict[str, Any] = dict(
        model={"source": "pvc://shared/models/tiny", "template": "qwen"},
        dataset={"names": ["sample_ner"], "dir": "datasets", "info": SAMPLE_DATASET_INFO},
        config={
            "stage": "sft",
            "do_train": True,
            "finetuning_type": "lora",
            "lora_target": "all",
            "lora_rank": 8,
            "cutoff_len": 128,
            "max_samples": 16,
            "overwrite_cache": True,
            "preprocessing_num_workers": 1,
            "dataloader_num_workers": 0,
            "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 1,
            "learning_rate": 1.0e-3,
            "max_steps": 4,
            "logging_steps": 1,
            "save_steps": 2,
            "bf16": False,
            "fp16": False,
            "use_cpu": True,
            "report_to": "none",
            "seed": 42,
            **(config or {}),
        },
        resources={"nodes": 1, "gpusPerNode": 0},
        deepspeed=None,
        maxRestarts=None,
    )
    return finetunejob(name, **{**tiny, **spec})


@dataclass
class TrainerPod:
    claim: Path
    config_dir: Path
    env: dict[str, str]
    output_dir: Path
    termination_log: Path
    working_dir: Path  # the container's workingDir, on the claim
    python: str = sys.executable  # the trainer environment's interpreter
    command: str = "launch"  # `preprocess` for the preprocessing Job's pod

    def start(self, log_path: Path) -> subprocess.Popen:
        out = open(log_path, "ab")  # noqa: SIM115 - the child owns it until it exits
        return subprocess.Popen(
            [self.python, "-m", "kubetune.cli", self.command],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=self.working_dir,
        )

    def run(self, log_path: Path, timeout: float = 600) -> int:
        process = self.start(log_path)
        return process.wait(timeout=timeout)

    def termination_message(self) -> str:
        return self.termination_log.read_text() if self.termination_log.exists() else ""


def materialise(
    body: dict[str, Any],
    *,
    namespace: str,
    uid: str,
    claim: Path,
    workdir: Path,
    attempt: int = 1,
    kubeconfig: Path | None = None,
    metrics_port: int = 0,
    progress_interval: float = 1.0,
    preprocessed: bool = False,
    preprocess_pod: bool = False,
    node_rank: int = 0,
    settings: TrainerSettings | None = None,
) -> TrainerPod:
    """The trainer pod of `attempt` with completion index `node_rank` (`preprocessed`: its preprocessing
    Job succeeded), or with `preprocess_pod` the preprocessing Job's pod. `settings`: the installation's
    (the rendezvous port)."""
    spec = FineTuneJobSpec.model_validate(body["spec"])
    target = render.FineTuneJobTarget(
        name=body["metadata"]["name"],
        namespace=namespace,
        uid=uid,
        spec=spec,
        attempt=attempt,
        dataset_info=dict(spec.dataset.info or {}),
        preprocessed=preprocessed,
        settings=settings or TrainerSettings(),
    )
    config_dir = workdir / f"config-a{attempt}"
    config_dir.mkdir(parents=True, exist_ok=True)

    def mapped(text: str) -> str:
        return text.replace(CLAIM_MOUNT_PATH, str(claim)).replace(CONFIG_MOUNT_PATH, str(config_dir))

    for file_name, content in render.config_map(target)["data"].items():
        (config_dir / file_name).write_text(mapped(content))

    child = render.preprocess_job(target) if preprocess_pod else render.job(target)
    container = child["spec"]["template"]["spec"]["containers"][0]
    env = cpu_env(workdir / "home")
    for variable in container["env"]:
        if "value" in variable:
            env[variable["name"]] = mapped(variable["value"])
        else:  # the downward API, as the kubelet fills it: the namespace, the completion index
            field = variable["valueFrom"]["fieldRef"]["fieldPath"]
            env[variable["name"]] = namespace if field == "metadata.namespace" else str(node_rank)
    if "MASTER_ADDR" in env:  # the Service's DNS name of pod 0: this machine, as cluster DNS would say
        env["MASTER_ADDR"] = "127.0.0.1"
    working_dir = Path(mapped(container["workingDir"]))
    working_dir.mkdir(parents=True, exist_ok=True)  # as the container runtime does
    termination_log = workdir / f"termination-log-a{attempt}-r{node_rank}"
    env.update(
        {
            "KUBETUNE_TERMINATION_LOG": str(termination_log),
            "KUBETUNE_PROGRESS_INTERVAL": str(progress_interval),
            "KUBETUNE_METRICS_PORT": str(metrics_port),
            # This checkout's kubetune first, then whatever the interpreter was given (packages installed
            # beside it with --target, say).
            "PYTHONPATH": os.pathsep.join(
                [str(REPO / "operator"), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
        }
    )
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    else:
        env.pop("KUBECONFIG", None)
        env.pop("KUBETUNE_FINETUNEJOB", None)  # no API to report to
    return TrainerPod(
        claim=claim,
        config_dir=config_dir,
        env=env,
        output_dir=Path(env["KUBETUNE_OUTPUT_DIR"]),
        termination_log=termination_log,
        working_dir=working_dir,
        command=container["args"][0],
    )


def trainer_log(output_dir: Path) -> list[dict[str, Any]]:
    path = output_dir / "trainer_log.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


GROUP, VERSION, PLURAL = "kubetune.io", "v1alpha1", "finetunejobs"


def scoped_kubeconfig(
    cluster: Any, api: Any, namespace: str, body: dict[str, Any], path: Path
) -> tuple[dict, Path]:
    """Creates the FineTuneJob and its launcher RBAC, and a kubeconfig with that ServiceAccount's token
    (what every trainer pod of the job holds)."""
    from kubernetes import client

    from tests.cluster import localcluster

    custom = client.CustomObjectsApi(api)
    created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    target = render.FineTuneJobTarget(
        name=body["metadata"]["name"],
        namespace=namespace,
        uid=created["metadata"]["uid"],
        spec=FineTuneJobSpec.model_validate(body["spec"]),
    )
    for manifest in (render.service_account(target), render.role(target), render.role_binding(target)):
        localcluster.kubectl(cluster, "apply", "-f", "-", input=json.dumps(manifest))
    localcluster.token_kubeconfig(cluster, namespace, target.names.service_account, path, duration="1h")
    return created, path
