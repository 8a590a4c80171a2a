"""Parse `vllm serve` arguments with vLLM's own parser, on a machine without a GPU.

Run with the serve environment's python (`make vllm-venv`: vLLM's CPU build, see scripts/serve_env.py):

    echo '["/models/m", "--enable-lora", "--max-lora-rank", "64"]' | $(VLLM_PY) scripts/vllm_args.py
    $(VLLM_PY) scripts/vllm_args.py -- /models/m --enable-lora --max-lora-rank 64
    echo '[["/models/m"], ["/models/m", "--bogus"]]' | $(VLLM_PY) scripts/vllm_args.py --batch
    $(VLLM_PY) scripts/vllm_args.py --lines     # one JSON argument list per stdin line, one answer per line

The arguments are everything after `vllm serve` (the model path first). The parser is built as `vllm serve`
builds it (vllm/entrypoints/cli/main.py + serve.py): a top-level FlexibleArgumentParser whose `serve`
subparser comes from ServeSubcommand.subparser_init (make_arg_parser), parsed as ["serve", *args], then
ServeSubcommand.validate (validate_parsed_serve_args). One JSON line is printed:

    {"ok": true, "args": {...selected parsed values...}, "deprecated": [...], "warnings": [...]}   exit 0
    {"ok": false, "error": "<argparse's message>"}                                               exit 2

With --batch, stdin holds a JSON list of argument lists and the answer is one JSON list of such objects
(exit 0 once answered). With --lines, the process stays up: each stdin line is one JSON argument list and
gets one JSON answer line (flushed), until stdin closes; tests/vllm.py keeps one such process per session.
Importing vLLM takes seconds (about 15 s here); a parse then takes well under a millisecond.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import re
import sys
from typing import Any

# Before vLLM is imported: no GPU here; vLLM's own log lines go to stderr, so stdout holds only the answer.
os.environ["VLLM_TARGET_DEVICE"] = "cpu"
os.environ["VLLM_LOGGING_STREAM"] = "ext://sys.stderr"

SELECTED = (
    "model",
    "served_model_name",
    "enable_lora",
    "max_lora_rank",
    "max_loras",
    "max_cpu_loras",
    "tensor_parallel_size",
    "max_model_len",
    "gpu_memory_utilization",
    "dtype",
    "host",
    "port",
    "lora_modules",
)


class _Records(logging.Handler):
    """Collects the vLLM log records (warnings and above) emitted while one argument list is parsed."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


class ServeParser:
    """The `vllm serve` command line parser, built once, as vllm/entrypoints/cli/main.py builds it."""

    def __init__(self) -> None:
        from vllm.entrypoints.cli.serve import ServeSubcommand
        from vllm.entrypoints.serve.utils.api_utils import cli_env_setup
        from vllm.utils.argparse_utils import FlexibleArgumentParser

        cli_env_setup()
        self.parser = FlexibleArgumentParser(description="vLLM CLI")
        subparsers = self.parser.add_subparsers(required=False, dest="subparser")
        self.command = ServeSubcommand()
        self.serve_parser = self.command.subparser_init(subparsers)
        self.serve_parser.set_defaults(dispatch_function=self.command.cmd)
        self.records = _Records()
        logging.getLogger("vllm").addHandler(self.records)

    def parse(self, argv: list[str]) -> dict[str, Any]:
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            return {"ok": False, "error": f"expected a list of strings, got {argv!r}"}
        self.records.messages = []
        _forget_warned_once()
        err, out = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                args = self.parser.parse_args(["serve", *argv])
                self.command.validate(args)
        except SystemExit as exc:
            return {"ok": False, "error": _argparse_message(err.getvalue(), out.getvalue(), exc.code)}
        except (ValueError, TypeError) as exc:  # raised by FlexibleArgumentParser and validate()
            return {"ok": False, "error": str(exc)}
        # As ServeSubcommand.cmd does: the positional model tag takes precedence over --model.
        if getattr(args, "model_tag", None) is not None:
            args.model = args.model_tag
        deprecated = sorted(
            a.dest
            for a in self.deprecated_actions()
            if hasattr(args, a.dest) and getattr(args, a.dest) != a.default
        )
        return {
            "ok": True,
            "args": {name: _jsonable(getattr(args, name, None)) for name in SELECTED},
            "deprecated": deprecated,
            "warnings": list(self.records.messages),
        }

    def deprecated_actions(self) -> list[Any]:
        """The options vLLM marks deprecated (its own bookkeeping before Python 3.13, argparse's after)."""
        marked = set(getattr(self.serve_parser, "_deprecated", ()))
        return [a for a in self.serve_parser._actions if a in marked or getattr(a, "deprecated", False)]


def _forget_warned_once() -> None:
    """vLLM logs some warnings once per process; forget them so that each argument list reports its own."""
    import vllm.logger

    for name in ("_print_warning_once", "_print_info_once", "_print_debug_once"):
        fn = getattr(vllm.logger, name, None)
        if hasattr(fn, "cache_clear"):
            fn.cache_clear()


def _argparse_message(stderr: str, stdout: str, code: Any) -> str:
    """argparse prints usage, then `<prog>: error: <message>`; keep the message (it may span lines)."""
    match = re.search(r"^\S.*?: error: (.*)\Z", stderr, re.S | re.M)
    if match:
        return match.group(1).strip()
    text = (stderr or stdout).strip()
    return text.splitlines()[-1] if text else f"exited {code}"


def main(argv: list[str]) -> int:
    mode = argv[0] if argv[:1] in (["--batch"], ["--lines"]) else None
    answers = sys.stdout
    # Whatever vLLM or its dependencies print while importing goes to stderr; stdout holds only answers.
    sys.stdout = sys.stderr
    request: Any = None
    if mode is None and "--" in argv:
        request = argv[argv.index("--") + 1 :]
    elif mode is None or mode == "--batch":
        try:
            request = json.load(sys.stdin)
        except json.JSONDecodeError as exc:
            print(json.dumps({"ok": False, "error": f"stdin is not JSON: {exc}"}), file=answers)
            return 1
        if mode == "--batch" and not isinstance(request, list):
            print(
                json.dumps({"ok": False, "error": "--batch expects a JSON list of argument lists"}),
                file=answers,
            )
            return 1
    parser = ServeParser()
    if mode == "--lines":
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                answer = parser.parse(json.loads(line))
            except json.JSONDecodeError as exc:
                answer = {"ok": False, "error": f"not JSON: {exc}"}
            print(json.dumps(answer), file=answers, flush=True)
        return 0
    if mode == "--batch":
        print(json.dumps([parser.parse(item) for item in request]), file=answers)
        return 0
    answer = parser.parse(request)
    print(json.dumps(answer), file=answers)
    return 0 if answer["ok"] else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
