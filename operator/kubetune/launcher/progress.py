"""LLaMA-Factory's trainer_log.jsonl -> the FineTuneJob's `status.progress`, and the reporter that sends it.

LLaMA-Factory appends one JSON object per logging step to `<output_dir>/trainer_log.jsonl`:
current_steps, total_steps, loss, lr, epoch, percentage, elapsed_time, remaining_time (`H:MM:SS`), and
throughput (tokens/s) when it counts tokens; at an evaluation step, a second record with eval_loss. Rank 0
of the job follows the file and patches the status with its pod's scoped token, at most every `interval`
seconds and once at the end: the newest values, and the loss curves as a bounded history
(`kubetune.status.curves`). Reporting is best effort: an error reading the log or reaching the API server
is logged and retried, never allowed to stop the training or to fail a finished one.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubetune import rfc3339
from kubetune.launcher.plan import checkpoints
from kubetune.status import curves

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
        # Rounded as `kubectl get ftj` shows them; trainer_log.jsonl on the claim keeps every digit.
        "loss": curves.significant(record.get("loss"), curves.LOSS_DIGITS),
        "evalLoss": curves.significant(record.get("eval_loss"), curves.LOSS_DIGITS),
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


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every complete record of trainer_log.jsonl, in order; none when the file is not there yet."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written right now
        if isinstance(record, dict) and "current_steps" in record:
            records.append(record)
    return records


def latest_state(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest state: each key from the newest record that has it (the final record has no loss)."""
    state: dict[str, Any] = {}
    for record in records:
        state.update({k: v for k, v in record.items() if v is not None})
    return state or None


def last_training_record(path: Path) -> dict[str, Any] | None:
    """The newest state of the log at `path`; None when the file is missing or holds no step yet."""
    return latest_state(read_records(path))


def with_curves(progress: dict[str, Any], records: list[dict[str, Any]], output_dir: Path) -> dict[str, Any]:
    """`progress` plus the best evaluation (from every record) and the thinned history."""
    points = curves.points_from_records(records)
    if not points:
        return progress
    best = curves.best_evaluation(points)
    if best is not None:
        progress = {
            **progress,
            "bestEvalLoss": curves.significant(best["evalLoss"], curves.LOSS_DIGITS),
            "bestEvalStep": best["step"],
        }
    on_claim = [step for step, _ in checkpoints(output_dir)]
    return {**progress, "history": curves.thin(curves.mark_checkpoints(points, on_claim))}


class Reporter:
    """Follows trainer_log.jsonl and calls `send(progress)` when it changed, rate-limited, in a thread.

    Nothing it does raises: the training must not stop, nor a finished one fail, because the log could not
    be read or the API server could not be reached. Each such error is logged, counted and retried.
    """

    def __init__(
        self,
        log_path: Path,
        send: Callable[[dict[str, Any]], None],
        interval: float = 15.0,
        on_record: Callable[[dict[str, Any]], None] | None = None,
        final_attempts: int = 4,
        retry_delay: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
        send_timeout: float = 30.0,
    ):
        self.log_path = log_path
        self.send = send
        self.interval = interval
        self.on_record = on_record
        self.final_attempts = final_attempts
        self.retry_delay = retry_delay
        self.sleep = sleep
        self.send_timeout = send_timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress-reporter", daemon=True)
        self._last_sent: dict[str, Any] | None = None
        self._pending = False  # the newest state has not reached the API server yet
        self.failures = 0

    def start(self) -> Reporter:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops the thread and sends the final state, retrying a few times; never raises."""
        self._stop.set()
        try:
            if self._thread.is_alive():
                self._thread.join(timeout=self.interval + 30)
            for attempt in range(self.final_attempts):
                self.report_once()
                if not self._pending:
                    return
                if attempt + 1 < self.final_attempts:
                    self.sleep(self.retry_delay * 2**attempt)
            log.warning("the final progress was not reported after %d attempts", self.final_attempts)
        except Exception as error:  # even a bug here must not fail a finished training
            log.warning("could not report the final progress: %s", error)

    def report_once(self) -> bool:
        """Reads the log and sends what changed; True when something was sent. Never raises."""
        try:
            records = read_records(self.log_path)
            state = latest_state(records)
            if state is None:
                return False
            self._observe(state)
            progress = with_curves(progress_from_record(state, rfc3339.now()), records, self.log_path.parent)
        except Exception as error:  # an unreadable log (permissions, a vanished claim): try again later
            self.failures += 1
            self._pending = True
            log.warning("could not read the training log (will retry): %s", error)
            return False
        comparable = {k: v for k, v in progress.items() if k != "updatedAt"}
        if comparable == self._last_sent:
            return False
        self._pending = True
        try:
            self._send_in_time(progress)
        except Exception as error:  # the API is unreachable, or the token expired: training goes on
            self.failures += 1
            log.warning("could not report progress (will retry): %s", error)
            return False
        self._last_sent = comparable
        self._pending = False
        return True

    def _send_in_time(self, progress: dict[str, Any]) -> None:
        """`send`, given up after `send_timeout`: an API server that never answers must not keep a finished
        training's pod from exiting (the call goes on in a daemon thread that dies with the process)."""
        outcome: dict[str, BaseException | None] = {}

        def call() -> None:
            try:
                self.send(progress)
                outcome["error"] = None
            except BaseException as error:
                outcome["error"] = error

        caller = threading.Thread(target=call, name="progress-send", daemon=True)
        caller.start()
        caller.join(self.send_timeout)
        if "error" not in outcome:
            raise TimeoutError(f"no answer from the API server in {self.send_timeout:g}s")
        if outcome["error"] is not None:
            raise outcome["error"]

    def _observe(self, state: dict[str, Any]) -> None:
        if self.on_record is None:
            return
        try:
            self.on_record(state)
        except Exception as error:  # the metrics are not worth losing the status report over
            log.warning("could not update the training metrics: %s", error)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.report_once()
