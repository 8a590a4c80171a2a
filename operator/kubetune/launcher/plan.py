"""What the launcher will run, decided from the mounted files and the pod's environment (pure)."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune.api import llamafactory

# Files LLaMA-Factory (via transformers) leaves as a finished model or adapter in output_dir.
FINAL_WEIGHTS = (
    "adapter_model.safetensors",
    "adapter_model.bin",
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# The HF Trainer writes this last into a checkpoint: without it, the save was cut short.
COMPLETE_MARKER = "trainer_state.json"


@dataclass(frozen=True)
class PodEnvironment:
    """The environment the operator gives every trainer pod (see render/finetunejob.py)."""

    config_dir: Path
    output_dir: Path
    nnodes: int = 1
    node_rank: int = 0
    nproc_per_node: int = 1
    gpus_per_node: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    attempt: int = 1
    finetunejob: str | None = None
    namespace: str | None = None
    metrics_port: int = 9400
    progress_interval: float = 15.0
    termination_log: Path = Path("/dev/termination-log")
    finetunejob_uid: str | None = None
    continue_finished: bool = False
    # Where compiled DeepSpeed ops are kept on the claim (keyed by image; see compiled_ops.py).
    torch_extensions: Path | None = None
    # Seconds a node waits for the others at the rendezvous (None: torchrun's own, 600).
    rendezvous_timeout: int | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PodEnvironment:
        env = os.environ if env is None else env
        return cls(
            config_dir=Path(env.get("KUBETUNE_CONFIG_DIR", "/etc/kubetune")),
            output_dir=Path(env["KUBETUNE_OUTPUT_DIR"]),
            nnodes=int(env.get("NNODES", "1")),
            node_rank=int(env.get("NODE_RANK", "0") or 0),
            nproc_per_node=int(env.get("NPROC_PER_NODE", "1")),
            gpus_per_node=int(env.get("KUBETUNE_GPUS_PER_NODE", env.get("NPROC_PER_NODE", "0"))),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", "29500")),
            attempt=int(env.get("KUBETUNE_ATTEMPT", "1")),
            finetunejob=env.get("KUBETUNE_FINETUNEJOB"),
            namespace=env.get("KUBETUNE_NAMESPACE"),
            metrics_port=int(env.get("KUBETUNE_METRICS_PORT", "9400")),
            progress_interval=float(env.get("KUBETUNE_PROGRESS_INTERVAL", "15")),
            termination_log=Path(env.get("KUBETUNE_TERMINATION_LOG", "/dev/termination-log")),
            finetunejob_uid=env.get("KUBETUNE_FINETUNEJOB_UID"),
            continue_finished=env.get("KUBETUNE_CONTINUE_FINISHED", "").lower() == "true",
            torch_extensions=_path(env.get("KUBETUNE_TORCH_EXTENSIONS")),
            rendezvous_timeout=int(env["KUBETUNE_RENDEZVOUS_TIMEOUT"])
            if env.get("KUBETUNE_RENDEZVOUS_TIMEOUT")
            else None,
        )

    @property
    def is_leader(self) -> bool:
        """Node rank 0: reports progress, serves the job's metrics, runs the post-training steps."""
        return self.node_rank == 0

    def distributed(self, deepspeed: bool = False) -> bool:
        """Whether to run under torchrun: GPUs, several nodes or processes, or DeepSpeed (which refuses a
        process that torchrun did not start)."""
        return self.gpus_per_node > 0 or self.nnodes > 1 or self.nproc_per_node > 1 or deepspeed


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """Complete `checkpoint-N` directories, oldest first (one cut short by a dying node is skipped)."""
    if not output_dir.is_dir():
        return []
    found = []
    for entry in output_dir.iterdir():
        match = _CHECKPOINT.match(entry.name)
        if match and entry.is_dir() and (entry / COMPLETE_MARKER).is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


@dataclass(frozen=True)
class ResumeDecision:
    resume_from: Path | None
    note: str
    error: str | None = None


# Written into the output path when a FineTuneJob starts training there: whose work a finished output is.
OWNER_FILE = ".kubetune-finetunejob.json"
# LLaMA-Factory saves these (trainer.save_metrics) once a training has run to its end.
FINISHED_MARKERS = ("train_results.json", "all_results.json")


def finished_by_another(output_dir: Path, owner_uid: str | None) -> bool:
    """The output holds a training that ran to its end, and not for this FineTuneJob (or nobody says)."""
    if not any((output_dir / name).is_file() for name in FINISHED_MARKERS):
        return False
    try:
        owner = json.loads((output_dir / OWNER_FILE).read_text()).get("uid")
    except (OSError, ValueError, AttributeError):
        owner = None
    return owner_uid is None or owner != owner_uid


def decide_resume(
    output_dir: Path, attempt: int, owner_uid: str | None = None, continue_finished: bool = False
) -> ResumeDecision:
    """Resume from the newest checkpoint in the output path, whatever the attempt.

    The output path belongs to this FineTuneJob (runs/<namespace>/<name> by default), so what is there is
    this job's earlier work: attempt 2 and later continue it, and so does attempt 1 of a FineTuneJob
    re-created under the same name (after a deletion, say) while that training had not finished. A training
    that finished for another FineTuneJob (another uid) is refused unless the spec says to continue it, and
    so are finished weights without any checkpoint: nothing on the claim is deleted unless asked.
    """
    if not continue_finished and finished_by_another(output_dir, owner_uid):
        return ResumeDecision(
            None,
            "",
            error=(
                f"config error: {output_dir} holds a training that already finished (train_results.json), "
                "from an earlier FineTuneJob of this name: set spec.continueFinished: true to continue from "
                "its newest checkpoint, or spec.storage.path to a new directory (nothing was deleted)"
            ),
        )
    found = checkpoints(output_dir)
    if found:
        step, newest = found[-1]
        return ResumeDecision(newest, f"attempt {attempt}: resuming from {newest.name} (step {step})")
    finished = [name for name in FINAL_WEIGHTS if (output_dir / name).is_file()]
    if finished:
        return ResumeDecision(
            None,
            "",
            error=(
                f"config error: {output_dir} already holds finished weights ({finished[0]}) and no "
                "checkpoint to resume from; set spec.storage.path to a new directory (nothing was deleted)"
            ),
        )
    return ResumeDecision(None, f"attempt {attempt}: starting from scratch")


def training_config(base: dict[str, Any], decision: ResumeDecision) -> dict[str, Any]:
    config = dict(base)
    if decision.resume_from is not None and config.get("do_train", True):
        config["resume_from_checkpoint"] = str(decision.resume_from)
    return config


def child_environment(
    env: PodEnvironment, base: Mapping[str, str], ops_key: str | None = None
) -> dict[str, str]:
    """What `llamafactory-cli` would set, plus sane NCCL behaviour and the compiled ops' directory on the
    claim (`ops_key`: this pod's, see compiled_ops.py); the user's own values win."""
    defaults = {
        "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
        "TORCH_NCCL_AVOID_RECORD_STREAMS": "1",
        # A hung collective fails the attempt (and the operator restarts it) instead of hanging forever.
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
        "NCCL_DEBUG": "WARN",
        "TENSORBOARD_LOGGING_DIR": str(env.output_dir / "runs"),
        "PYTHONUNBUFFERED": "1",
    }
    if env.torch_extensions is not None and ops_key:
        defaults["TORCH_EXTENSIONS_DIR"] = str(env.torch_extensions / ops_key)
    return {**defaults, **base}


# One LLaMA-Factory process: what `python -m llamafactory.launcher CONFIG` runs (see rank.py).
RANK_MODULE = "kubetune.launcher.rank"


def training_command(
    env: PodEnvironment, config_path: Path, python: str = sys.executable, *, deepspeed: bool = False
) -> list[str]:
    """torchrun over LLaMA-Factory's training (`kubetune.launcher.rank`: its launcher module's, with an exit
    that cannot abort a finished rank), or one process on one CPU node without DeepSpeed."""
    if not env.distributed(deepspeed):
        return [python, "-m", RANK_MODULE, str(config_path)]
    return [
        python, "-m", "torch.distributed.run",
        "--nnodes", str(env.nnodes),
        "--node_rank", str(env.node_rank),
        "--nproc_per_node", str(env.nproc_per_node),
        "--master_addr", env.master_addr,
        "--master_port", str(env.master_port),
        *(["--rdzv_conf", f"timeout={env.rendezvous_timeout}"] if env.rendezvous_timeout else []),
        "-m", RANK_MODULE, str(config_path),
    ]  # fmt: skip


def export_config(train: dict[str, Any], output_dir: Path, merge: dict[str, Any]) -> dict[str, Any]:
    """`llamafactory-cli export`: the adapter merged into the base model, into <output>/<dir>."""
    config = {
        "model_name_or_path": train["model_name_or_path"],
        "adapter_name_or_path": str(output_dir),
        "finetuning_type": llamafactory.finetuning_type(train),
        "export_dir": str(output_dir / merge.get("dir", "merged")),
        "export_size": merge.get("exportSize", 5),
        "export_device": merge.get("exportDevice", "cpu"),
        "export_legacy_format": False,
    }
    # Without `spec.model.template` training used LLaMA-Factory's default (the tokenizer's chat template):
    # so do these passes.
    if train.get("template") is not None:
        config["template"] = train["template"]
    if train.get("trust_remote_code"):
        config["trust_remote_code"] = True
    return config


def predict_config(train: dict[str, Any], output_dir: Path, predict: dict[str, Any]) -> dict[str, Any]:
    """A generation pass over the evaluation datasets, with LLaMA-Factory's ROUGE/BLEU metrics."""
    config: dict[str, Any] = {
        "model_name_or_path": train["model_name_or_path"],
        "finetuning_type": llamafactory.finetuning_type(train),
        "stage": "sft",
        "do_predict": True,
        "predict_with_generate": True,
        "dataset_dir": train["dataset_dir"],
        "eval_dataset": ",".join(predict["datasets"]),
        "output_dir": str(output_dir / predict.get("dir", "predict")),
        "per_device_eval_batch_size": predict.get("batchSize", 1),
        "max_new_tokens": predict.get("maxNewTokens", 128),
        "report_to": "none",
    }
    if llamafactory.trains_adapter(config):
        config["adapter_name_or_path"] = str(output_dir)
    else:  # full and freeze save the whole trained model in the output directory
        config["model_name_or_path"] = str(output_dir)
    for key in ("template", "cutoff_len", "trust_remote_code", "bf16", "fp16", "use_cpu"):
        if key in train:
            config[key] = train[key]
    if predict.get("maxSamples") is not None:
        config["max_samples"] = predict["maxSamples"]
    return config
