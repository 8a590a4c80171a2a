"""A failed run's log tail -> one line that says why, for /dev/termination-log (and so the status).

Kubernetes shows a container's termination message in its status; the operator puts it into the
FineTuneJob's Failed condition. A traceback is for the logs; this line is for the person reading
`kubectl get ftj`.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterable

# (category, what it looks like in the log), most specific first.
_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    (
        "out of GPU memory",
        re.compile(r"CUDA out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED", re.I),
    ),
    (
        "NCCL failure",
        re.compile(r"NCCL (error|timeout)|ncclInternalError|ncclSystemError|Watchdog caught", re.I),
    ),
    ("NCCL failure", re.compile(r"ProcessGroupNCCL.*(timeout|error)|DistNetworkError|rendezvous", re.I)),
    (
        "dataset error",
        re.compile(
            r"Undefined dataset|Cannot find valid samples|dataset_info\.json|Cannot open .*dataset|"
            r"File .* not found|No such file or directory: .*\.(json|jsonl|csv|parquet|arrow)",
            re.I,
        ),
    ),
    (
        "config error",
        re.compile(
            r"Some keys are not used by the HfArgumentParser|not supported|Please (set|specify|use|check)|"
            r"Unknown template|ValueError|argument .*: invalid choice",
            re.I,
        ),
    ),
]

_EXCEPTION_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(Error|Exception|Interrupt)|AssertionError)\b:?(.*)$")


def _last_exception(lines: list[str]) -> str | None:
    for line in reversed(lines):
        match = _EXCEPTION_LINE.match(line)
        if match:
            return line.strip()
    return None


def termination_reason(log_tail: Iterable[str], exit_code: int) -> str:
    """One line: `<category>: <the most telling log line>` (at most 1000 characters)."""
    lines = [line.rstrip() for line in log_tail if line.strip()]
    exception = _last_exception(lines)
    for category, pattern in _PATTERNS:
        telling = next((line for line in reversed(lines) if pattern.search(line)), None)
        if telling is not None:
            # Prefer the exception line when it is the same kind of failure.
            detail = exception if exception and pattern.search(exception) else telling.strip()
            return f"{category}: {detail}"[:1000]
    if exit_code < 0 or exit_code > 128:
        number = -exit_code if exit_code < 0 else exit_code - 128
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        hint = " (out of host memory?)" if number == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    if exception:
        return exception[:1000]
    return f"exited with code {exit_code}: {lines[-1][:900] if lines else 'no output'}"
