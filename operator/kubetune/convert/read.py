"""Reading LLaMA-Factory's inputs the way LLaMA-Factory reads them, and looking at this machine's files.

`load_lf_config` and `parse_lf_args` read a config file and a `llamafactory-cli train ...` command line.
`look_around` does what LLaMA-Factory does with the file system when it starts, from the directory it ran in:
it reads the DeepSpeed file the config names, asks which model and adapter paths exist as directories, and
finds dataset_info.json. A path is looked for relative to the config file's directory, then to the working
directory (where `llamafactory-cli` ran; default: the current directory). What it finds is handed to the
pure mapping (`kubetune.convert.spec.convert`) as a `Found`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from kubetune.convert.errors import ConversionError

# LLaMA-Factory's default `dataset_dir`.
LF_DEFAULT_DATASET_DIR = "data"
DATASET_INFO_FILE = "dataset_info.json"
# Which hub a hub id is on. LLaMA-Factory reads these from the environment (USE_MODELSCOPE_HUB=1); they are
# no LLaMA-Factory arguments, but parse_lf_args turns the environment into them and a config may carry them.
HUB_SWITCHES = {"USE_MODELSCOPE_HUB": "use_modelscope_hub", "USE_OPENMIND_HUB": "use_openmind_hub"}
# Environment switches that make `llamafactory-cli train` another trainer altogether (kubetune.convert.kinds).
TRAINER_SWITCHES = ("USE_V1", "USE_MCA", "USE_MEGATRON_BRIDGE", "USE_KT")

_ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")
_LF_PROGRAMS = ("llamafactory-cli", "lmf")
_CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


class _LFLoader(yaml.SafeLoader):
    """YAML as LLaMA-Factory reads it (OmegaConf's loader): `1e-4` is a float, dates stay strings."""


_LFLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_LFLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.VERBOSE,
    ),
    list("-+0123456789."),
)


def load_lf_config(text: str, *, source: str = "<config>", json_file: bool = False) -> dict[str, Any]:
    """Parses a LLaMA-Factory YAML (or JSON) config into a dict, as LLaMA-Factory would."""
    try:
        data = json.loads(text) if json_file else yaml.load(text, Loader=_LFLoader)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConversionError([f"{source} is not valid {'JSON' if json_file else 'YAML'}: {exc}"]) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConversionError(
            [f"{source} must be a mapping of LLaMA-Factory arguments, not {type(data).__name__}"]
        )
    return data


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConversionError([f"cannot read {path}: {exc.strerror or exc}"]) from exc
    return load_lf_config(text, source=str(path), json_file=path.suffix.lower() == ".json")


def _typed(raw: str, *, allow_containers: bool) -> Any:
    """A command-line value typed as YAML (`8` -> 8, `true` -> True, `null` -> None); else the string."""
    if raw == "":
        return ""
    try:
        value = yaml.load(raw, Loader=_LFLoader)
    except yaml.YAMLError:
        return raw
    if isinstance(value, dict | list) and not allow_containers:
        return raw
    return value


@dataclass
class ParsedCommand:
    """A `llamafactory-cli train ...` command line, read."""

    config: dict[str, Any]
    config_file: Path | None = None
    notes: list[str] = field(default_factory=list)
    # USE_V1, USE_MCA, ... as set in front of the command (they make it another trainer).
    trainer_switches: dict[str, str] = field(default_factory=dict)


def parse_command(argv: list[str]) -> ParsedCommand:
    """parse_lf_args, plus the config file it read (if any), the trainer switches and notes."""
    args = list(argv)
    notes: list[str] = []
    env = []
    hub_switches: dict[str, bool] = {}
    trainer_switches: dict[str, str] = {}
    while args and _ENV_ASSIGNMENT.match(args[0]):
        variable, _, raw = args.pop(0).partition("=")
        if variable in HUB_SWITCHES:
            hub_switches[HUB_SWITCHES[variable]] = raw.strip().lower() in ("true", "y", "1")
        elif variable in TRAINER_SWITCHES:
            trainer_switches[variable] = raw.strip()
        else:
            env.append(variable)
    if env:
        notes.append(
            f"environment {', '.join(env)} dropped: the operator runs torchrun itself "
            "(set nodes and GPUs in spec.resources)"
        )
    if args and PurePosixPath(args[0]).name in _LF_PROGRAMS:
        program = args.pop(0)
        if not args or args[0] != "train":
            got = f"`{program} {args[0]}`" if args else f"`{program}` alone"
            raise ConversionError([f"only `llamafactory-cli train` converts to a FineTuneJob, not {got}"])
    if args and args[0] == "train":
        args.pop(0)

    config: dict[str, Any] = {}
    config_file: Path | None = None
    if args and not args[0].startswith("-") and args[0].lower().endswith(_CONFIG_SUFFIXES):
        config_file = Path(args.pop(0))
        config = read_config_file(config_file)

    i = 0
    while i < len(args):
        token = args[i]
        if token.startswith("--") and len(token) > 2:
            body = token[2:]
            if "=" in body:
                key, raw = body.split("=", 1)
                value = _typed(raw, allow_containers=False)
            elif i + 1 < len(args) and not args[i + 1].startswith("--"):
                key, value = body, _typed(args[i + 1], allow_containers=False)
                i += 1
            else:
                key, value = body, True
            key = key.replace("-", "_")
        elif "=" in token and not token.startswith("-"):
            key, raw = token.split("=", 1)  # OmegaConf's `key=value`
            value = _typed(raw, allow_containers=True)
        else:
            raise ConversionError(
                [
                    f"unexpected argument `{token}`: expected `--key value`, `--key=value`, `--flag` "
                    "or `key=value`"
                ]
            )
        if not key:
            raise ConversionError([f"argument `{token}` has no key"])
        config[key] = value
        i += 1
    config.update(hub_switches)
    return ParsedCommand(config, config_file, notes, trainer_switches)


def parse_lf_args(argv: list[str]) -> dict[str, Any]:
    """LLaMA-Factory's command-line form -> its config dict.

    Accepts `--key value`, `--key=value`, a bare `--flag` (true) and OmegaConf's `key=value`, after an
    optional `llamafactory-cli train` (or `train`) and an optional YAML/JSON config file whose values the
    rest override, as in `llamafactory-cli train x.yaml lora_rank=16`. Values are typed as YAML
    (`8`, `1e-4`, `true`, `null`); `q_proj,v_proj` stays a string. Environment assignments in front
    (`FORCE_TORCHRUN=1 ...`) are left out, but for `USE_MODELSCOPE_HUB` and `USE_OPENMIND_HUB`, which
    become `use_modelscope_hub` / `use_openmind_hub` (see HUB_SWITCHES).
    """
    return parse_command(argv).config


# ---------------------------------------------------------------------------------------------------------
# What is on this machine


@dataclass
class Found:
    """What LLaMA-Factory would have found on the machine it ran on, as far as this machine shows it."""

    # The directories relative paths were looked up in: the config file's, then the working directory.
    searched: list[str] = field(default_factory=list)
    # The DeepSpeed file the config names: its parsed content and text, and where it was found.
    deepspeed: dict[str, Any] | None = None
    deepspeed_text: str | None = None
    deepspeed_source: str | None = None
    deepspeed_problem: str | None = None
    # model_name_or_path / adapter_name_or_path values (each part) that exist as directories -> where.
    local_dirs: dict[str, str] = field(default_factory=dict)


def _bases(config_dir: Path | None, working_dir: Path) -> list[Path]:
    bases = ([config_dir] if config_dir is not None else []) + [working_dir]
    unique: list[Path] = []
    for base in bases:
        if all(base.resolve() != seen.resolve() for seen in unique):
            unique.append(base)
    return unique


def _candidates(value: str, bases: list[Path]) -> list[Path]:
    path = Path(value).expanduser() if value.startswith("~") else Path(value)
    return [path] if path.is_absolute() else [base / path for base in bases]


def _read_deepspeed(value: str, bases: list[Path], found: Found) -> None:
    for candidate in _candidates(value, bases):
        if not candidate.is_file():
            continue
        try:
            text = candidate.read_text(encoding="utf-8")
            content = json.loads(text)
        except OSError as exc:
            found.deepspeed_problem = (
                f"cannot read `deepspeed: {value}` at {candidate}: {exc.strerror or exc}"
            )
            return
        except json.JSONDecodeError as exc:
            found.deepspeed_problem = f"`deepspeed: {value}` ({candidate}) is not valid JSON: {exc}"
            return
        if not isinstance(content, dict):
            found.deepspeed_problem = f"`deepspeed: {value}` ({candidate}) must be a JSON object"
            return
        found.deepspeed, found.deepspeed_text, found.deepspeed_source = content, text, str(candidate)
        return


def look_around(config: dict[str, Any], *, config_file: Path | None, working_dir: Path) -> Found:
    """Looks up the files a config names, as LLaMA-Factory would when it starts."""
    bases = _bases(config_file.parent if config_file is not None else None, working_dir)
    found = Found(searched=[str(base) for base in bases])
    deepspeed = config.get("deepspeed")
    if isinstance(deepspeed, str) and deepspeed.strip():
        _read_deepspeed(deepspeed.strip(), bases, found)
    paths = []
    if isinstance(config.get("model_name_or_path"), str):
        paths.append(config["model_name_or_path"].strip())
    if isinstance(config.get("adapter_name_or_path"), str):
        paths += [part.strip() for part in config["adapter_name_or_path"].split(",")]
    for value in filter(None, paths):
        directory = next((c for c in _candidates(value, bases) if c.is_dir()), None)
        if directory is not None:
            found.local_dirs[value] = str(directory)
    return found


def dataset_info_candidates(
    config: dict[str, Any], *, config_dir: Path | None, working_dir: Path
) -> list[Path]:
    """Where dataset_info.json is looked for: in dataset_dir as LLaMA-Factory resolves it (from the working
    directory), then in dataset_dir beside the config, then beside the config."""
    dataset_dir = config.get("dataset_dir")
    if not isinstance(dataset_dir, str) or not dataset_dir or dataset_dir == "ONLINE":
        dataset_dir = LF_DEFAULT_DATASET_DIR
    if dataset_dir.startswith("REMOTE:"):
        return []
    candidates = [working_dir / dataset_dir / DATASET_INFO_FILE]
    if config_dir is not None:
        candidates += [config_dir / dataset_dir / DATASET_INFO_FILE, config_dir / DATASET_INFO_FILE]
    return list(dict.fromkeys(candidates))


def read_dataset_info(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConversionError([f"cannot read {path}: {exc.strerror or exc}"]) from exc
    except json.JSONDecodeError as exc:
        raise ConversionError([f"{path} is not valid JSON: {exc}"]) from exc
    if not isinstance(data, dict):
        raise ConversionError([f"{path} must be a JSON object of dataset entries"])
    return data
