"""Check `vllm serve` arguments with vLLM's own parser (the pinned release, on CPU), from any test.

    from tests.vllm import parse_vllm_args, require_vllm

    def test_rendered_args_parse() -> None:
        require_vllm()                                    # skips without `make vllm-venv`
        [answer] = parse_vllm_args([container["args"]])
        assert answer["ok"], answer["error"]
        assert answer["args"]["max_lora_rank"] == 64

Each argument list is what follows `vllm serve` (the model path first); a leading "vllm", "serve" is dropped,
so a container's whole command line can be passed. Each answer is scripts/vllm_args.py's: {"ok": true,
"args": {model, served_model_name, enable_lora, max_lora_rank, max_loras, max_cpu_loras, tensor_parallel_size,
max_model_len, gpu_memory_utilization, dtype, host, port, lora_modules}, "deprecated": [...], "warnings":
[...]} or {"ok": false, "error": "<argparse's message>"}.

The interpreter is the vllm venv's (`make vllm-venv`: vLLM's CPU build, scripts/serve_env.py), or
KUBETUNE_VLLM_PYTHON. Importing vLLM takes about 15 s, so one parser process is started on first use and
kept for the whole session; each later list is answered in about a millisecond.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "vllm_args.py"
DEFAULT_VLLM_PYTHON = Path.home() / ".cache" / "kubetune" / "vllm-venv" / "bin" / "python"


def vllm_python() -> Path:
    return Path(os.environ.get("KUBETUNE_VLLM_PYTHON") or DEFAULT_VLLM_PYTHON)


def require_vllm() -> Path:
    """The vllm venv's interpreter; skips the calling test when there is none."""
    python = vllm_python()
    if not python.exists():
        pytest.skip(f"no vllm venv at {python}: run `make vllm-venv` (or set KUBETUNE_VLLM_PYTHON)")
    return python


class _Parser:
    """One long-lived `scripts/vllm_args.py --lines` process: a JSON argument list in, a JSON answer out."""

    def __init__(self, python: Path) -> None:
        # vLLM's log lines, shown when the process fails; open as long as the process runs.
        self.log: IO[str] = tempfile.TemporaryFile("w+")  # noqa: SIM115
        # The answers must not depend on the caller's vLLM settings (plugins, resolver directories, ...).
        env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
        self.proc = subprocess.Popen(
            [str(python), str(SCRIPT), "--lines"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            bufsize=1,
        )
        self.lock = threading.Lock()

    def ask(self, argv: list[str]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with self.lock:
            try:
                self.proc.stdin.write(json.dumps(argv) + "\n")
                self.proc.stdin.flush()
            except BrokenPipeError:
                pass
            line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{SCRIPT.name} exited ({self.proc.poll()}):\n{self._log_tail()}")
        return json.loads(line)

    def _log_tail(self) -> str:
        self.log.seek(0)
        return self.log.read()[-4000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


_parsers: dict[Path, _Parser] = {}
_parsers_lock = threading.Lock()


def _parser() -> _Parser:
    python = require_vllm()
    with _parsers_lock:
        parser = _parsers.get(python)
        if parser is None or parser.proc.poll() is not None:
            parser = _parsers[python] = _Parser(python)
            atexit.register(parser.close)
    return parser


def _strip_command(argv: Sequence[str]) -> list[str]:
    argv = [str(a) for a in argv]
    return argv[2:] if argv[:2] == ["vllm", "serve"] else argv


def parse_vllm_args(arg_lists: Sequence[Sequence[str]]) -> list[dict[str, Any]]:
    """Parse each argument list with the real `vllm serve` parser; one answer per list, in order.

    Skips the calling test when the vllm venv is missing (`make vllm-venv`).
    """
    if isinstance(arg_lists, str) or any(isinstance(a, str) for a in arg_lists):
        raise TypeError(
            "parse_vllm_args takes a list of argument lists, e.g. [['/models/m', '--enable-lora']]"
        )
    parser = _parser()
    return [parser.ask(_strip_command(argv)) for argv in arg_lists]
