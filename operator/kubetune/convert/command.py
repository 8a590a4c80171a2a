"""`kubetune convert FILE ...`: reads the config and what it names, converts, prints YAML and notes."""

from __future__ import annotations

import argparse
import os
import posixpath
import re
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from kubetune.convert.errors import ConversionError
from kubetune.convert.read import (
    dataset_info_candidates,
    load_lf_config,
    look_around,
    parse_command,
    read_config_file,
    read_dataset_info,
)
from kubetune.convert.spec import convert


class _Dumper(yaml.SafeDumper):
    """Block style, lists indented under their key, no anchors."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)

    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(manifests: dict[str, Any] | list[dict[str, Any]]) -> str:
    """One manifest, or several as one multi-document YAML that `kubectl apply -f` takes as it is."""
    docs = manifests if isinstance(manifests, list) else [manifests]
    return "---\n".join(
        yaml.dump(
            doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=4096
        )
        for doc in docs
    )


def readable_name(text: str) -> str:
    """Text -> a resource name (a DNS-1123 label: lowercase letters, digits and `-`, at most 63 characters;
    '' if none). Unlike kubetune.render.names.dns_label, which names children and adds a hash whenever it
    changes a name (two children must never meet), this name is shown to the user to keep or edit."""
    label = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return label[:63].rstrip("-")


def default_name(config: dict[str, Any], config_file: str | None) -> str:
    """The config file's stem, else the last component of output_dir, as a DNS-1123 label ('' if none).

    The stem first: most of LLaMA-Factory's examples write to `.../sft`, while their file names
    (`llama3_lora_sft.yaml`, `qwen3_full_sft.yaml`) tell them apart.
    """
    candidates = []
    if config_file:
        candidates.append(Path(config_file).stem)
    output_dir = config.get("output_dir")
    if isinstance(output_dir, str) and output_dir.strip():
        candidates.append(PurePosixPath(posixpath.normpath(output_dir)).name)
    for candidate in candidates:
        label = readable_name(candidate)
        if label:
            return label
    return ""


def _whole_number(minimum: int):
    """An argparse type: a whole number of at least `minimum` (0: a count, 1: a positive number)."""
    too_small = "must not be negative" if minimum == 0 else f"must be at least {minimum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{too_small}: {value}")
        return value

    return parse


def build_parser(prog: str = "kubetune convert") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        usage=(
            "%(prog)s FILE --nodes N --gpus-per-node G --claim C [options]\n"
            "       %(prog)s --nodes N --gpus-per-node G --claim C [options] -- LLAMAFACTORY-CLI-ARGS..."
        ),
        description=(
            "Convert a LLaMA-Factory training config into a FineTuneJob. The YAML goes to stdout (the "
            "FineTuneJob, after a ConfigMap when a DeepSpeed file is none of the presets: `kubectl apply -f` "
            "takes it as it is), one note per decision (dropped keys, paths mapped onto the claim, ...) to "
            "stderr. Files the config names (the DeepSpeed JSON, a local model, dataset_info.json) are "
            "looked "
            "for as LLaMA-Factory would: relative to the config's directory, then to the working directory."
        ),
        epilog=(
            "After `--`, the arguments of `llamafactory-cli train` as you run it: `--key value`, "
            "`--key=value`, `--flag`, or a YAML file followed by `key=value` overrides, e.g. "
            "`%(prog)s --nodes 1 --gpus-per-node 8 --claim shared -- llamafactory-cli train x.yaml "
            "lora_rank=16`."
        ),
    )
    parser.add_argument(
        "file", nargs="?", metavar="FILE", help="LLaMA-Factory YAML (or JSON) config; `-`: stdin"
    )
    parser.add_argument(
        "--nodes", type=_whole_number(1), required=True, metavar="N", help="number of nodes (pods)"
    )
    parser.add_argument(
        "--gpus-per-node", type=_whole_number(0), required=True, metavar="G", help="GPUs per node"
    )
    parser.add_argument("--claim", required=True, metavar="C", help="the shared PersistentVolumeClaim")
    parser.add_argument("--name", help="FineTuneJob name (default: from FILE's name, else from output_dir)")
    parser.add_argument(
        "--namespace", metavar="NS", help="namespace of the FineTuneJob (default: none in the manifest)"
    )
    parser.add_argument(
        "--claim-root",
        metavar="PATH",
        help="the directory that is on the claim: absolute paths are made relative to it "
        "(default: an absolute path keeps its whole path on the claim)",
    )
    parser.add_argument(
        "--working-dir",
        metavar="PATH",
        help="the directory you ran llamafactory-cli in (default: the current directory): files are looked "
        "up there, and inside --claim-root it becomes storage.workingDir, where the trainer runs",
    )
    parser.add_argument(
        "--dataset-info",
        metavar="PATH",
        help="dataset_info.json (default: <dataset_dir>/dataset_info.json in the working directory, then "
        "beside FILE, then dataset_info.json beside FILE)",
    )
    parser.add_argument(
        "--gpu-resource",
        default="nvidia.com/gpu",
        metavar="R",
        help="GPU resource name (default %(default)s)",
    )
    return parser


def _working_dir_on_claim(args: argparse.Namespace, working_dir: Path) -> str | None:
    """storage.workingDir: the working directory relative to --claim-root, when it is inside it."""
    if not args.claim_root:
        return None
    root = posixpath.normpath(args.claim_root)
    here = posixpath.normpath(str(working_dir.absolute()))
    if not posixpath.isabs(root):
        return None  # convert() says what is wrong with the claim root
    try:
        relative = PurePosixPath(here).relative_to(root)
    except ValueError:
        if args.working_dir:
            raise ConversionError(
                [
                    f"--working-dir `{args.working_dir}` is outside --claim-root `{root}`: the trainer "
                    "runs on the claim"
                ]
            ) from None
        return None  # converting elsewhere than where it ran: the claim's root is the working directory
    return None if str(relative) == "." else str(relative)


def _run(args: argparse.Namespace, lf_argv: list[str] | None) -> tuple[str, list[str]]:
    notes: list[str] = []
    if lf_argv is not None and args.file is not None:
        raise ConversionError(["give either FILE or `-- <llamafactory-cli arguments>`, not both"])
    if lf_argv is None and args.file is None:
        raise ConversionError(
            ["give a LLaMA-Factory config FILE (`-` for stdin) or `-- <llamafactory-cli arguments>`"]
        )

    config_file: Path | None = None
    switches: dict[str, str] = {}
    if lf_argv is not None:
        command = parse_command(lf_argv)
        config, config_file, notes, switches = (
            command.config,
            command.config_file,
            command.notes,
            command.trainer_switches,
        )
    elif args.file == "-":
        config = load_lf_config(sys.stdin.read(), source="stdin")
    else:
        config_file = Path(args.file)
        config = read_config_file(config_file)

    name = args.name or default_name(config, str(config_file) if config_file else None)
    if not name:
        raise ConversionError(["cannot derive a name from the file name or output_dir: give --name"])

    working_dir = Path(args.working_dir) if args.working_dir else Path(os.getcwd())
    config_dir = config_file.parent if config_file else None
    found = look_around(config, config_file=config_file, working_dir=working_dir)
    dataset_info: dict[str, Any] | None = None
    source: str | None = None
    if args.dataset_info:
        dataset_info, source = read_dataset_info(Path(args.dataset_info)), args.dataset_info
    else:
        candidates = dataset_info_candidates(config, config_dir=config_dir, working_dir=working_dir)
        found_info = next((p for p in candidates if p.is_file()), None)
        if found_info is not None:
            dataset_info, source = read_dataset_info(found_info), str(found_info)
        elif candidates:
            notes.append(
                f"searched for dataset_info.json in {', '.join(str(p) for p in candidates)}: not found"
            )

    result = convert(
        config,
        name=name,
        namespace=args.namespace,
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        claim=args.claim,
        claim_root=args.claim_root,
        dataset_info=dataset_info,
        gpu_resource=args.gpu_resource,
        dataset_info_source=source,
        working_dir=_working_dir_on_claim(args, working_dir),
        found=found,
        trainer_switches=switches,
    )
    return to_yaml(result.manifests), notes + result.notes


def main(argv: list[str] | None = None) -> int:
    """`kubetune convert`: prints the manifests on stdout and the notes on stderr; 2 on any error."""
    argv = list(sys.argv[1:] if argv is None else argv)
    lf_argv: list[str] | None = None
    if "--" in argv:
        split = argv.index("--")
        argv, lf_argv = argv[:split], argv[split + 1 :]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed by argparse
        return exc.code if isinstance(exc.code, int) else 2
    try:
        text, notes = _run(args, lf_argv)
    except ConversionError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"# {note}", file=sys.stderr)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
