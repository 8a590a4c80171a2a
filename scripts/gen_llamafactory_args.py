#!/usr/bin/env python3
"""Generate the LLaMA-Factory argument data that kubetune checks FineTuneJob `spec.config` against.

Run it with the trainer venv's Python (`make trainer-venv`), which has the pinned LLaMA-Factory installed:

    make trainer-args          # ~/.cache/kubetune/trainer-venv/bin/python scripts/gen_llamafactory_args.py
    make trainer-args-check    # the same with --check: exit 1, with a summary, when the file has drifted

It writes operator/kubetune/api/data/llamafactory-<version>.json with:

- `arguments`: every key that `llamafactory-cli train <config.yaml>` accepts. LLaMA-Factory reads the YAML
  into a dict and hands it to `HfArgumentParser(_TRAIN_ARGS).parse_dict`, which accepts the `init` fields of
  each dataclass in `llamafactory.hparams.parser._TRAIN_ARGS` (read from the release, not restated here);
- `stages` and `finetuning_types`: the `Literal` choices of `FinetuningArguments.stage` / `.finetuning_type`;
- `templates`: the chat templates registered in `llamafactory.data.template.TEMPLATES`;
- `version` (LLaMA-Factory), `transformers_version` (its `TrainingArguments` come from transformers, so the
  argument list depends on that pin too), `parser_classes` and `generated_by`.

Everything is sorted and written with sorted keys, so regenerating with the same release gives the same bytes.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import sys
import typing
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "operator" / "kubetune" / "api" / "data"
GENERATED_BY = "scripts/gen_llamafactory_args.py"

# Environment switches that change what LLaMA-Factory's train parser is made of (USE_MCA swaps in
# mcore_adapter's TrainingArguments) or how strict it is; the data describes the default `train` path.
_PARSER_ENV = ("USE_MCA", "ALLOW_EXTRA_ARGS")


def _literal_choices(cls: type, name: str) -> list[str]:
    hints = typing.get_type_hints(cls)
    tp = hints[name]
    if typing.get_origin(tp) is not typing.Literal:
        raise SystemExit(f"{cls.__name__}.{name} is {tp!r}, not a Literal: update {GENERATED_BY}")
    return sorted(str(choice) for choice in typing.get_args(tp))


def collect() -> dict[str, Any]:
    """Introspect the installed LLaMA-Factory release."""
    for var in _PARSER_ENV:
        os.environ.pop(var, None)

    import llamafactory
    from llamafactory.data.template import TEMPLATES
    from llamafactory.hparams import parser as lf_parser
    from llamafactory.hparams.finetuning_args import FinetuningArguments

    parser_classes = list(lf_parser._TRAIN_ARGS)
    arguments: set[str] = set()
    for cls in parser_classes:
        # HfArgumentParser.parse_dict accepts exactly these names.
        arguments.update(f.name for f in dataclasses.fields(cls) if f.init)

    version = getattr(llamafactory, "__version__", None) or importlib.metadata.version("llamafactory")
    return {
        "arguments": sorted(arguments),
        "finetuning_types": _literal_choices(FinetuningArguments, "finetuning_type"),
        "generated_by": GENERATED_BY,
        "parser_classes": [f"{cls.__module__}.{cls.__qualname__}" for cls in parser_classes],
        "stages": _literal_choices(FinetuningArguments, "stage"),
        "templates": sorted(TEMPLATES),
        "transformers_version": importlib.metadata.version("transformers"),
        "version": str(version),
    }


def render(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def data_path(version: str) -> Path:
    return DATA_DIR / f"llamafactory-{version}.json"


def diff_summary(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        if isinstance(before, list) and isinstance(after, list):
            added = sorted(set(after) - set(before), key=str)
            removed = sorted(set(before) - set(after), key=str)
            lines.append(f"{key}: {len(before)} -> {len(after)} (+{len(added)} -{len(removed)})")
            lines.extend(f"  + {item}" for item in added)
            lines.extend(f"  - {item}" for item in removed)
            if not added and not removed:
                lines.append("  (same items, different order)")
        else:
            lines.append(f"{key}: {before!r} -> {after!r}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 with a summary when the committed file differs from the installed release",
    )
    ap.add_argument("--output", type=Path, help="write here instead of operator/kubetune/api/data/")
    args = ap.parse_args(argv)

    data = collect()
    text = render(data)
    path = args.output or data_path(data["version"])
    try:
        shown = path.relative_to(REPO_ROOT)
    except ValueError:
        shown = path

    if args.check:
        if not path.exists():
            committed = sorted(p.name for p in DATA_DIR.glob("llamafactory-*.json"))
            print(
                f"{shown} is missing: the installed LLaMA-Factory is {data['version']}, "
                f"committed data: {committed or 'none'}; run {GENERATED_BY}",
                file=sys.stderr,
            )
            return 1
        current = path.read_text(encoding="utf-8")
        if current == text:
            count = len(data["arguments"])
            print(f"{shown} is up to date (LLaMA-Factory {data['version']}, {count} arguments)")
            return 0
        lines = diff_summary(json.loads(current), data) or ["formatting differs (same content)"]
        print(f"{shown} differs from the installed LLaMA-Factory {data['version']}:", file=sys.stderr)
        for line in lines:
            print(f"  {line}", file=sys.stderr)
        print(f"regenerate it: python {GENERATED_BY}", file=sys.stderr)
        return 1

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    if args.output is None:
        # kubetune.api.llamafactory loads exactly one data file: a new release replaces the old one.
        for stale in sorted(DATA_DIR.glob("llamafactory-*.json")):
            if stale != path:
                stale.unlink()
                print(f"removed {stale.relative_to(REPO_ROOT)} (the data of the release pinned before)")
    print(
        f"wrote {shown}: {len(data['arguments'])} arguments, {len(data['stages'])} stages, "
        f"{len(data['finetuning_types'])} finetuning types, {len(data['templates'])} templates"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
