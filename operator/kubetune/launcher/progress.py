"""LLaMA-Factory's trainer_log.jsonl -> the FineTuneJob's `status.progress`, and the reporter that sends it.

LLaMA-Factory appends one JSON object per logging step to `<output_dir>/trainer_log.jsonl`:
current_steps, total_steps, loss, lr, epoch, percentage, elapsed_time, remaining_time (`H:MM:SS`), and
throughput (tokens/s) when it counts tokens. Rank 0 of the job follows the file and patches the status
with its pod's scoped token, at most every `interval` seconds and once at the end. Reporting is best
effort: a lost API connection is logged and retried, never allowed to stop the training.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("kubetune.progress")

TRAINER_LOG = "trainer_log.jsonl"


def duration_words(text: str | None) -> str | None:
    """`1:02:03` or `2 days, 1:02:03` (Python's timedelta) -> `1h2m3s`."""
    if not text:
        return None
    match = re.fullmatch(r"(?:(\d+) days?, )?(\d+):(\d{2}):(\d{2})", text.strip())
    if not match:
        return text
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    hours += 24 * days
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes or hours else "", f"{seconds}s"]
    return "".join(parts)


def progress_from_record(record: dict[str, Any], now: str) -> dict[str, Any]:
    """One trainer_log.jsonl record -> `status.progress` (camelCase, unknown values left out)."""
    step, total = record.get("current_steps"), record.get("total_steps")
    progress: dict[str, Any] = {
        "step": step,
        "totalSteps": total,
        "epoch": record.get("epoch"),
        "loss": record.get("loss"),
        "learningRate": record.get("lr"),
        "percent": record.get("percentage"),
        "eta": duration_words(record.get("remaining_time")),
        "tokensPerSecond": record.get("throughput"),
        "updatedAt": now,
    }
    if step is not None and total:
        shown = f"{step}/{total} {progress['percent'] if progress['percent'] is not None else 0:.0f}%"
        if progress["eta"]:
            shown += f" eta {progress['eta']}"
        progress["display"] = shown
    return {k: v for k, v in progress.items() if v is not None}


def last_training_record(path: Path) -> dict[str, Any] | None:
    """The newest state: each key from the newest record that has it (the final record has no loss).

    None when the file is missing or holds no step yet.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    state: dict[str, Any] = {}
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written right now
        if isinstance(record, dict) and "current_steps" in record:
            state.update({k: v for k, v in record.items() if v is not None})
    return state or None


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Reporter:
    """Follows trainer_log.jsonl and calls `send(progress)` when it changed, rate-limited, in a thread."""

    def __init__(
        self,
        log_path: Path,
        send: Callable[[dict[str, Any]], None],
        interval: float = 15.0,
        on_record: Callable[[dict[str, Any]], None] | None = None,
    ):
        self.log_path = log_path
        self.send = send
        self.interval = interval
        self.on_record = on_record
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress-reporter", daemon=True)
        self._last_sent: dict[str, Any] | None = None
        self.failures = 0

    def start(self) -> Reporter:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops the thread and sends the final state once."""
        self._stop.set()
        self._thread.join(timeout=self.interval + 30)
        self.report_once()

    def report_once(self) -> bool:
        record = last_training_record(self.log_path)
        if record is None:
            return False
        if self.on_record:
            self.on_record(record)
        progress = progress_from_record(record, now_rfc3339())
        comparable = {k: v for k, v in progress.items() if k != "updatedAt"}
        if comparable == self._last_sent:
            return False
        try:
            self.send(progress)
        except Exception as error:  # the API is unreachable, or the token expired: training goes on
            self.failures += 1
            log.warning("could not report progress (will retry): %s", error)
            return False
        self._last_sent = comparable
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.report_once()
