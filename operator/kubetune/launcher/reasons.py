"""A failed run's log tail -> one line that says why, for /dev/termination-log (and so the status).

Kubernetes shows a container's termination message in its status; the operator puts it into the
FineTuneJob's Failed condition. A traceback is for the logs; this line is for the person reading
`kubectl get ftj`.

Under torchrun the log holds the training processes' output, each line of a process that set up
torch.distributed prefixed `[rankN]: `, and then torchrun's own report: its traceback ending in
`ChildFailedError`, and a summary naming the first failed rank, its exit code and the signal that killed it.
The report says only that a child failed; the line that says why is in the child's output before it.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterable
from dataclasses import dataclass

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
    ("NCCL failure", re.compile(r"ProcessGroupNCCL.*(timeout|error)", re.I)),
    # gloo (CPU) or NCCL's socket to another process broke: that process (or its node) failed first.
    (
        "lost a peer (another rank failed first?)",
        re.compile(r"Connection (reset|closed) by peer|Broken pipe", re.I),
    ),
    (
        "rendezvous failure",
        re.compile(r"DistNetworkError|DistStoreError|RendezvousError|RendezvousTimeoutError", re.I),
    ),
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
# What a process that set up torch.distributed prefixes to each line it writes to stderr.
_RANK_PREFIX = re.compile(r"^\[rank(\d+)\]:\s?")
_CHILD_FAILED = "torch.distributed.elastic.multiprocessing.errors.ChildFailedError"
# torchrun's own exception when the pod (and so torchrun) got a signal.
_AGENT_SIGNAL = re.compile(r"SignalException: Process \d+ got signal: (\d+)")
_ROOT_CAUSE = re.compile(r"Root Cause \(first observed failure\)")
_REPORT_FIELD = re.compile(r"^\s*(rank|exitcode|traceback)\s*:\s*(.*)$")


@dataclass(frozen=True)
class RootCause:
    """The first failed rank as torchrun's report names it."""

    rank: int | None
    exit_code: int | None


def _text(line: str) -> str:
    """A line without the `[rankN]: ` prefix of a training process."""
    return _RANK_PREFIX.sub("", line, count=1)


_DIRECT_CAUSE = "The above exception was the direct cause of the following exception"


def _exception_at(lines: list[str]) -> int | None:
    return next((i for i in range(len(lines) - 1, -1, -1) if _EXCEPTION_LINE.match(_text(lines[i]))), None)


def _last_exception(lines: list[str]) -> str | None:
    """The last exception line, with the exception it was raised from (`raise ... from e`) when there is
    one: a wrapper such as `OSError: Failed to load tokenizer.` names no path, its cause does."""
    at = _exception_at(lines)
    if at is None:
        return None
    line = lines[at].strip()
    start = next((i for i in range(at, -1, -1) if _text(lines[i]).startswith("Traceback (most recent")), 0)
    if start > 0 and _DIRECT_CAUSE in lines[start - 1]:
        cause = _exception_at(lines[: start - 1])
        if cause is not None:
            line += f" (from {_text(lines[cause]).strip()})"
    return line


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _killed(number: int) -> str:
    hint = " (out of host memory?)" if number == signal.SIGKILL else ""
    return f"killed by {_signal_name(number)}{hint}"


def split_torchrun_report(lines: list[str]) -> tuple[list[str], RootCause | None]:
    """The training processes' output, and torchrun's root cause when it reported a failed child.

    torchrun's report starts with its own traceback (unprefixed, ending in ChildFailedError): everything
    from that traceback on is torchrun's, everything before it the processes' (and torchrun's log lines).
    """
    failed_at = next((i for i in range(len(lines) - 1, -1, -1) if _CHILD_FAILED in lines[i]), None)
    if failed_at is None:
        return lines, None
    start = next(
        (i for i in range(failed_at, -1, -1) if lines[i].startswith("Traceback (most recent call last)")),
        failed_at,
    )
    fields: dict[str, str] = {}
    root = next((i for i in range(failed_at, len(lines)) if _ROOT_CAUSE.search(lines[i])), None)
    for line in lines[root:] if root is not None else []:
        match = _REPORT_FIELD.match(line)
        if match and match.group(1) not in fields:
            fields[match.group(1)] = match.group(2)
    rank = re.match(r"-?\d+", fields.get("rank", ""))
    code = re.match(r"-?\d+", fields.get("exitcode", ""))
    cause = RootCause(int(rank.group()) if rank else None, int(code.group()) if code else None)
    return lines[:start], cause


def _categorised(lines: list[str]) -> str | None:
    exception = _last_exception(lines)
    for category, pattern in _PATTERNS:
        telling = next((line for line in reversed(lines) if pattern.search(line)), None)
        if telling is not None:
            # Prefer the exception line when it is the same kind of failure.
            detail = exception if exception and pattern.search(exception) else telling.strip()
            return f"{category}: {detail}"
    return None


def termination_reason(log_tail: Iterable[str], exit_code: int) -> str:
    """One line: `<category>: <the most telling log line>` (at most 1000 characters)."""
    lines = [line.rstrip() for line in log_tail if line.strip()]
    lines, cause = split_torchrun_report(lines)
    if cause is not None and cause.exit_code is not None and cause.exit_code < 0:
        # A training process killed (the kernel's OOM killer, a kill -9): it wrote nothing about it.
        return f"rank {cause.rank}: {_killed(-cause.exit_code)}"[:1000]
    agent_signal = next((m for m in map(_AGENT_SIGNAL.search, reversed(lines)) if m), None)
    if agent_signal is not None:  # torchrun itself got the signal (a drain) and stopped its processes
        return _killed(int(agent_signal.group(1)))
    reason = _categorised(lines)
    if reason is not None:
        return reason[:1000]
    if exit_code < 0 or exit_code > 128:
        return _killed(-exit_code if exit_code < 0 else exit_code - 128)
    exception = _last_exception(lines)
    if exception:
        return exception[:1000]
    if cause is not None:
        return f"rank {cause.rank} exited with code {cause.exit_code}"
    return f"exited with code {exit_code}: {lines[-1][:900] if lines else 'no output'}"
