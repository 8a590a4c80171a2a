"""DeepSpeed ZeRO on a GPU, as a FineTuneJob's pod runs it: `kubetune launch` with the pod's rendered
environment and files (tests/worker/pod.py), torchrun, the real LLaMA-Factory and DeepSpeed, NCCL.

One GPU, so one process: NCCL refuses two ranks on one device. The CPU tier (tests/worker/test_distributed.py)
shows the ranks finding each other and splitting the data; this tier shows what the CPU cannot: the NCCL
backend, bfloat16 on the GPU, ZeRO-3's partitioned parameters gathered back on save, and DeepSpeed's CPU Adam
compiled with the GPU build's flags onto the claim.

Each run's timings (seconds to the first step, steps a second after it, the GPU's peak memory) are written
to $KUBETUNE_GPU_BENCH (default build/bench-gpu.json): figures for docs/operations.md, never asserted.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("llamafactory")
if not torch.cuda.is_available():
    pytest.skip("no CUDA GPU here: the GPU tier runs only where there is one", allow_module_level=True)

from kubetune.launcher import compiled_ops  # noqa: E402
from tests.kube import wait_until  # noqa: E402
from tests.worker.pod import REPO, finetunejob_body, trainer_log  # noqa: E402
from tests.worker.ranks import Attempt, attempt, process_ranks  # noqa: E402

pytestmark = pytest.mark.timeout(900)

BENCH = Path(os.environ.get("KUBETUNE_GPU_BENCH", REPO / "build" / "bench-gpu.json"))
STEPS = 40
# What NCCL prints when it opens a communicator, with NCCL_DEBUG=INFO (torch's process group opens one at the
# first collective; DeepSpeed finds the group already made and does not name its backend).
_NCCL = re.compile(r"NCCL INFO .*NCCL version \d")


def gpu_body(name: str, preset: str | None, steps: int = STEPS, **config: Any) -> dict:
    """A FineTuneJob on one GPU: bfloat16, batches of 8 sequences of up to 256 tokens."""
    return finetunejob_body(
        name,
        {
            "use_cpu": False,
            "bf16": True,
            "max_samples": 256,
            "cutoff_len": 256,
            "per_device_train_batch_size": 8,
            "lora_rank": 16,
            "max_steps": steps,
            "save_steps": steps,
            **config,
        },
        resources={"nodes": 1, "gpusPerNode": 1},
        deepspeed={"preset": preset} if preset else None,
    )


def on_the_gpu(pods: Attempt) -> Attempt:
    """The pod's environment less the tiers' CPU-only setting: the container sees the node's GPU. NCCL says
    when it opens a communicator."""
    for rank in pods.ranks:
        rank.pod.env.pop("CUDA_VISIBLE_DEVICES", None)
        rank.pod.env.update(NCCL_DEBUG="INFO", NCCL_DEBUG_SUBSYS="INIT")
    return pods


class GpuMemory:
    """The GPU's peak memory in use while the run lasts, sampled by nvidia-smi every 200 ms."""

    def __init__(self) -> None:
        self.peak_mib = 0
        self._smi = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-lms", "200"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._smi.stdout:
            if line.strip().isdigit():
                self.peak_mib = max(self.peak_mib, int(line))

    def stop(self) -> int:
        self._smi.terminate()
        self._smi.wait()
        return self.peak_mib


def timed_run(name: str, pods: Attempt, timeout: float = 600) -> dict[str, Any]:
    """Run the attempt; record when its first and last steps were logged and the GPU's peak memory."""
    output = pods.leader.pod.output_dir
    memory = GpuMemory()
    started = time.monotonic()
    pods.start()
    first: dict[str, float] = {}

    def stepped() -> bool:
        steps = [r["current_steps"] for r in trainer_log(output) if "loss" in r]
        now = time.monotonic() - started
        if steps and "first" not in first:
            first.update(first=now, step=steps[0])
        if steps:
            first.update(last=now, last_step=steps[-1])
        return pods.ended()

    wait_until(stepped, f"{name} to end", timeout=timeout, interval=0.2)
    codes = pods.wait(timeout=60)
    wall = time.monotonic() - started
    peak = memory.stop()
    assert codes == [0], pods.logs(chars=20000)
    assert first, "the run logged no step"
    figures = {
        "seconds_to_first_step": round(first["first"], 1),
        "steps_per_second": round((first["last_step"] - first["step"]) / (first["last"] - first["first"]), 2)
        if first["last"] > first["first"]
        else None,
        "steps": first["last_step"],
        "wall_seconds": round(wall, 1),
        "gpu_peak_memory_mib": peak,
    }
    record(name, figures)
    return figures


def record(name: str, figures: dict[str, Any]) -> None:
    import torch

    BENCH.parent.mkdir(parents=True, exist_ok=True)
    bench = json.loads(BENCH.read_text()) if BENCH.exists() else {}
    bench["gpu"] = torch.cuda.get_device_name(0)
    bench["torch"] = torch.__version__
    bench.setdefault("runs", {})[name] = figures
    BENCH.write_text(json.dumps(bench, indent=2) + "\n")


def losses(output: Path) -> list[float]:
    return [r["loss"] for r in trainer_log(output) if "loss" in r]


def test_zero3_lora_trains_on_nccl_and_saves_the_whole_adapter(
    claim: Path, tmp_path: Path, gpu_model: Path
) -> None:
    pods = on_the_gpu(attempt(gpu_body("zero3-lora", "zero3"), claim=claim, workdir=tmp_path))
    timed_run("zero3_lora", pods)
    log = pods.logs(chars=10**7)
    assert _NCCL.search(log), "a communicator of NCCL's"
    assert process_ranks(log) == {(0, 1)}
    assert "device: cuda:0" in log
    trained = losses(pods.leader.pod.output_dir)
    assert len(trained) == STEPS and all(math.isfinite(x) for x in trained)

    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    output = pods.leader.pod.output_dir
    weights = load_file(output / "adapter_model.safetensors")
    lora_a = {name: t.shape for name, t in weights.items() if "lora_A" in name}
    # ZeRO-3 holds each parameter in partitions; the saved adapter is gathered to its full shape.
    assert lora_a and all(shape[0] == 16 and shape[1] in (2048, 5632) for shape in lora_a.values()), lora_a
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(gpu_model), output)
    assert model.peft_config["default"].r == 16


def test_the_same_lora_without_deepspeed(claim: Path, tmp_path: Path) -> None:
    """The baseline for the ZeRO-3 run's figures: the same job under torchrun alone (DDP on NCCL)."""
    pods = on_the_gpu(attempt(gpu_body("plain-lora", None), claim=claim, workdir=tmp_path))
    timed_run("plain_lora", pods)
    log = pods.logs(chars=10**7)
    assert "device: cuda:0" in log
    assert len(losses(pods.leader.pod.output_dir)) == STEPS


def test_zero2_lora_trains_on_nccl(claim: Path, tmp_path: Path) -> None:
    """ZeRO-2 partitions only gradients and optimizer state: the preset to try first for a model that fits."""
    pods = on_the_gpu(attempt(gpu_body("zero2-lora", "zero2"), claim=claim, workdir=tmp_path))
    timed_run("zero2_lora", pods)
    log = pods.logs(chars=10**7)
    assert _NCCL.search(log), "a communicator of NCCL's"
    assert len(losses(pods.leader.pod.output_dir)) == STEPS
    assert (pods.leader.pod.output_dir / "adapter_model.safetensors").is_file()


def test_zero3_full_fine_tuning_saves_the_whole_model(claim: Path, tmp_path: Path, gpu_model: Path) -> None:
    job = gpu_body("zero3-full", "zero3", steps=10, learning_rate=1.0e-4)
    for key in ("lora_target", "lora_rank"):
        job["spec"]["config"].pop(key)
    job["spec"]["config"]["finetuning_type"] = "full"
    pods = on_the_gpu(attempt(job, claim=claim, workdir=tmp_path))
    timed_run("zero3_full", pods)
    assert _NCCL.search(pods.logs(chars=10**7))

    import torch
    from transformers import AutoModelForCausalLM

    output = pods.leader.pod.output_dir
    trained = AutoModelForCausalLM.from_pretrained(output, dtype=torch.bfloat16).state_dict()
    base = AutoModelForCausalLM.from_pretrained(gpu_model, dtype=torch.bfloat16).state_dict()
    # Gathered from the partitions on save: every tensor at its full shape, and trained.
    assert {k: v.shape for k, v in trained.items()} == {k: v.shape for k, v in base.items()}
    assert any(not trained[k].equal(base[k]) for k in base)


def test_zero3_offload_builds_cpu_adam_onto_the_claim(claim: Path, tmp_path: Path) -> None:
    pods = on_the_gpu(
        attempt(gpu_body("zero3-offload", "zero3-offload", steps=6), claim=claim, workdir=tmp_path)
    )
    ops = Path(pods.leader.pod.env["KUBETUNE_TORCH_EXTENSIONS"]) / compiled_ops.current_key()
    timed_run("zero3_offload_lora_first_start", pods, timeout=900)
    assert (ops / "cpu_adam" / "cpu_adam.so").is_file(), "compiled into the claim's cache, kept for every pod"

    again = on_the_gpu(
        attempt(gpu_body("zero3-offload-2", "zero3-offload", steps=6), claim=claim, workdir=tmp_path / "2")
    )
    timed_run("zero3_offload_lora_ops_cached", again)
