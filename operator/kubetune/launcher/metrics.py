"""The training's Prometheus metrics, served by node rank 0 of a FineTuneJob on KUBETUNE_METRICS_PORT."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, start_http_server

log = logging.getLogger("kubetune.metrics")


def duration_seconds(text: Any) -> int | None:
    """`1:02:03` or `2 days, 1:02:03` (Python's timedelta, as LLaMA-Factory logs it) -> seconds."""
    match = re.fullmatch(r"(?:(\d+) days?, )?(\d+):(\d{2}):(\d{2})", str(text or "").strip())
    if not match:
        return None
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


class TrainingMetrics:
    """Gauges fed from each trainer_log.jsonl record; GPU memory read from nvidia-smi when there is one."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        gauge = lambda name, doc: Gauge(name, doc, registry=self.registry)  # noqa: E731
        self.step = gauge("kubetune_training_step", "Optimizer steps done.")
        self.total_steps = gauge("kubetune_training_total_steps", "Optimizer steps planned.")
        self.loss = gauge("kubetune_training_loss", "Training loss at the last logging step.")
        self.eval_loss = gauge("kubetune_training_eval_loss", "Eval loss at the last evaluation.")
        self.eta = gauge("kubetune_training_eta_seconds", "Time left, as LLaMA-Factory estimates it.")
        self.learning_rate = gauge(
            "kubetune_training_learning_rate", "Learning rate at the last logging step."
        )
        self.epoch = gauge("kubetune_training_epoch", "Epochs done (fractional).")
        self.throughput = gauge(
            "kubetune_training_tokens_per_second", "Input tokens per second, when logged."
        )
        self.gpu_memory = Gauge(
            "kubetune_gpu_memory_used_bytes", "GPU memory in use, per GPU.", ["gpu"], registry=self.registry
        )
        self._nvidia_smi = shutil.which("nvidia-smi")

    @classmethod
    def serve(cls, port: int) -> TrainingMetrics:
        metrics = cls()
        try:
            start_http_server(port, registry=metrics.registry)
        except OSError as error:  # a port in use must not stop the training
            log.warning("metrics not served on :%d: %s", port, error)
        return metrics

    def observe(self, record: dict[str, Any]) -> None:
        for gauge, key in (
            (self.step, "current_steps"),
            (self.total_steps, "total_steps"),
            (self.loss, "loss"),
            (self.eval_loss, "eval_loss"),
            (self.learning_rate, "lr"),
            (self.epoch, "epoch"),
            (self.throughput, "throughput"),
        ):
            value = record.get(key)
            if isinstance(value, int | float):
                gauge.set(value)
        eta = duration_seconds(record.get("remaining_time"))
        if eta is not None:
            self.eta.set(eta)
        self._observe_gpus()

    def _observe_gpus(self) -> None:
        if not self._nvidia_smi:
            return
        try:
            out = subprocess.run(
                [self._nvidia_smi, "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=5, check=True,
            ).stdout  # fmt: skip
        except (subprocess.SubprocessError, OSError):
            return
        for line in out.splitlines():
            index, _, used = line.partition(",")
            if used.strip().isdigit():
                self.gpu_memory.labels(index.strip()).set(int(used) * 1024 * 1024)
