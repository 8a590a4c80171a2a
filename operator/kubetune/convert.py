"""`kubetune convert`: a LLaMA-Factory training config, as users run it today, -> a FineTuneJob.

Pure: the standard library, yaml, pydantic and `kubetune.api` only (never a Kubernetes client), so a config
converts the same on a laptop, in CI and in the tests.

The keys the operator owns become spec fields; every other key stays in `spec.config` unchanged, in its
order. Each decision a user should know about (a dropped key, a path mapped onto the claim, a DeepSpeed file
taken as a preset, ...) is a line in `ConversionResult.notes`; anything that cannot be converted faithfully
is a `ConversionError` that says what to do instead.

Paths. LLaMA-Factory resolves a relative path against the directory `llamafactory-cli` ran in; on the
cluster that directory is the claim's root. An absolute path is made relative to `claim_root` (the
directory that was copied onto the claim) when given, else it keeps its whole path on the claim
(`/data/models/x` -> `data/models/x`). A path that leaves the claim is an error.

Hub ids and local paths (`model_name_or_path`, `adapter_name_or_path`). LLaMA-Factory asks the file system:
a value that exists is a directory, anything else a hub id. The converter cannot see that machine, so it
decides by the form alone:

- a hub id is exactly `<org>/<name>`: one `/`, both parts made of letters, digits, `_`, `-` and `.`, the
  first not starting with `.` (so `./x/y` and `../x/y` are paths) -> `hf://org/name`, or `ms://org/name`
  when ModelScope is asked for: `USE_MODELSCOPE_HUB=1` in front of `llamafactory-cli` (how LLaMA-Factory
  itself is told), or `use_modelscope_hub: true` in the config;
- everything else is a local path: it starts with `/`, `./`, `../` or `~`, has no `/`, or has two or more.

So `Qwen/Qwen2.5-7B-Instruct` is a hub id and `/data/models/Qwen2.5-7B-Instruct`, `models/qwen/7b` and
`./models/qwen` are paths; write a two-part relative directory as `./models/qwen` to keep it local.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import json
import posixpath
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from pydantic import ValidationError

from kubetune.api import API_VERSION
from kubetune.api.common import CLAIM_MOUNT_PATH, DNS_LABEL, DNS_SUBDOMAIN
from kubetune.api.finetunejob import KIND, FineTuneJobSpec
from kubetune.api.llamafactory import OWNED_KEYS, check_config, check_template

# LLaMA-Factory's example DeepSpeed files (examples/deepspeed/) -> the operator's presets.
DEEPSPEED_PRESETS: dict[str, str] = {
    "ds_z0_config.json": "zero0",
    "ds_z2_config.json": "zero2",
    "ds_z2_offload_config.json": "zero2-offload",
    "ds_z3_config.json": "zero3",
    "ds_z3_offload_config.json": "zero3-offload",
}

# LLaMA-Factory's default `dataset_dir`.
LF_DEFAULT_DATASET_DIR = "data"
DATASET_INFO_FILE = "dataset_info.json"

# Never copied anywhere: not into the manifest, not into a note.
TOKEN_KEYS = ("hf_hub_token", "ms_hub_token", "om_hub_token", "hub_token")
# Which hub a hub id is on. LLaMA-Factory reads these from the environment (USE_MODELSCOPE_HUB=1); they are
# no LLaMA-Factory arguments, but parse_lf_args turns the environment into them and a config may carry them.
HUB_SWITCHES = {"USE_MODELSCOPE_HUB": "use_modelscope_hub", "USE_OPENMIND_HUB": "use_openmind_hub"}
# The keys `convert` maps itself (into the spec, or dropped with a note). Any other key the operator owns
# (kubetune.api.llamafactory.OWNED_KEYS: local_rank, master_port, logging_dir, ...) is dropped with a note
# that says what sets it instead.
CONVERTED_KEYS = frozenset(
    {
        "model_name_or_path",
        "model_revision",
        "template",
        "dataset",
        "eval_dataset",
        "dataset_dir",
        "deepspeed",
        "output_dir",
        "overwrite_output_dir",
        "resume_from_checkpoint",
        "cache_dir",
        *TOKEN_KEYS,
        *HUB_SWITCHES.values(),
    }
)

_HUB_PART = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
_ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")
_LF_PROGRAMS = ("llamafactory-cli", "lmf")
_CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


class ConversionError(ValueError):
    """The config cannot be converted faithfully; `problems` says why, one message each."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass
class ConversionResult:
    manifest: dict[str, Any]
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------
# Reading LLaMA-Factory's inputs the way LLaMA-Factory reads them


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


def _parse_lf_argv(argv: list[str]) -> tuple[dict[str, Any], Path | None, list[str]]:
    """parse_lf_args, plus the config file it read (if any) and notes on what it left out."""
    args = list(argv)
    notes: list[str] = []
    env = []
    hub_switches: dict[str, bool] = {}
    while args and _ENV_ASSIGNMENT.match(args[0]):
        variable, _, raw = args.pop(0).partition("=")
        if variable in HUB_SWITCHES:
            hub_switches[HUB_SWITCHES[variable]] = raw.strip().lower() in ("true", "y", "1")
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
        try:
            text = config_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConversionError([f"cannot read {config_file}: {exc.strerror or exc}"]) from exc
        config = load_lf_config(
            text, source=str(config_file), json_file=config_file.suffix.lower() == ".json"
        )

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
    return config, config_file, notes


def parse_lf_args(argv: list[str]) -> dict[str, Any]:
    """LLaMA-Factory's command-line form -> its config dict.

    Accepts `--key value`, `--key=value`, a bare `--flag` (true) and OmegaConf's `key=value`, after an
    optional `llamafactory-cli train` (or `train`) and an optional YAML/JSON config file whose values the
    rest override, as in `llamafactory-cli train x.yaml lora_rank=16`. Values are typed as YAML
    (`8`, `1e-4`, `true`, `null`); `q_proj,v_proj` stays a string. Environment assignments in front
    (`FORCE_TORCHRUN=1 ...`) are left out, but for `USE_MODELSCOPE_HUB` and `USE_OPENMIND_HUB`, which
    become `use_modelscope_hub` / `use_openmind_hub` (see HUB_SWITCHES).
    """
    return _parse_lf_argv(argv)[0]


# ---------------------------------------------------------------------------------------------------------
# The conversion


def is_hub_id(value: str) -> bool:
    """`<org>/<name>` (see the module's docstring); everything else is a local path."""
    parts = value.split("/")
    return len(parts) == 2 and all(_HUB_PART.match(p) for p in parts)


def _claim_path(value: str, *, key: str, claim_root: str | None, problems: list[str]) -> str | None:
    """A local path as LLaMA-Factory saw it -> the same path on the claim, relative to the claim's root."""
    if value.startswith("~"):
        problems.append(f"`{key}: {value}` is relative to a home directory: give the path it stands for")
        return None
    normal = posixpath.normpath(value)
    if posixpath.isabs(normal):
        if claim_root:
            root = posixpath.normpath(claim_root)
            if not posixpath.isabs(root):
                problems.append(f"--claim-root `{claim_root}` must be an absolute path")
                return None
            try:
                relative = PurePosixPath(normal).relative_to(root)
            except ValueError:
                problems.append(
                    f"`{key}: {value}` is outside the claim root `{root}`: copy it under the claim root, "
                    "or choose a claim root that contains it"
                )
                return None
            return str(relative)
        return normal.lstrip("/") or "."
    if normal == ".." or normal.startswith("../"):
        problems.append(f"`{key}: {value}` leaves the directory that becomes the claim's root")
        return None
    return normal


def _names(value: Any, *, key: str, problems: list[str]) -> list[str] | None:
    if isinstance(value, str):
        names = [n.strip() for n in value.split(",") if n.strip()]
    elif isinstance(value, list) and all(isinstance(n, str) for n in value):
        names = [n.strip() for n in value if n.strip()]
    else:
        problems.append(f"`{key}` must be a comma-separated string or a list of dataset names")
        return None
    if not names:
        problems.append(f"`{key}` names no dataset")
        return None
    return names


def _label(name: str) -> bool:
    return len(name) <= 63 and re.match(DNS_LABEL, name) is not None


def _hub_token_secret(name: str) -> str:
    return f"{name[:242].rstrip('-.')}-hub-token"


def _convert_model(
    config: dict[str, Any], *, claim: str, claim_root: str | None, problems: list[str], notes: list[str]
) -> dict[str, Any] | None:
    value = config.get("model_name_or_path")
    if value is None or value == "":
        problems.append(
            "`model_name_or_path` is missing: the base model (a directory or a hub id) is required"
        )
        return None
    if not isinstance(value, str):
        problems.append(f"`model_name_or_path` must be a string, not {type(value).__name__}")
        return None
    value = value.strip()
    if is_hub_id(value):
        if config.get("use_openmind_hub") is True:
            problems.append(
                f"`model_name_or_path: {value}` is on the OpenMind hub (USE_OPENMIND_HUB): the operator "
                "downloads hub models from Hugging Face (hf://) or ModelScope (ms://) only; put the model "
                "on the claim instead"
            )
            return None
        scheme = "ms" if config.get("use_modelscope_hub") is True else "hf"
        hub = "ModelScope" if scheme == "ms" else "Hugging Face"
        notes.append(
            f"model_name_or_path `{value}` is a {hub} hub id (`<org>/<name>`) -> model.source "
            f"{scheme}://{value}, downloaded once into the model cache on claim `{claim}` (if it is a local "
            f"directory, write it as `./{value}` and convert again)"
        )
        model: dict[str, Any] = {"source": f"{scheme}://{value}"}
        revision = config.get("model_revision")
        if revision not in (None, ""):
            model["revision"] = str(revision)
            notes.append(f"model_revision `{revision}` -> model.revision")
        return model
    path = _claim_path(value, key="model_name_or_path", claim_root=claim_root, problems=problems)
    if path is None:
        return None
    if path == ".":
        problems.append(f"`model_name_or_path: {value}` is the claim's root: give the model's own directory")
        return None
    notes.append(
        f"model_name_or_path `{value}` -> model.source pvc://{claim}/{path} (the model must be there)"
    )
    if config.get("model_revision") not in (None, ""):
        notes.append(
            "model_revision dropped: a revision applies to hub models, and this model is on the claim"
        )
    switches = [key for key in HUB_SWITCHES.values() if config.get(key)]
    if switches:
        notes.append(f"{', '.join(switches)} dropped: the model is on the claim, not on a hub")
    return {"source": f"pvc://{claim}/{path}"}


def _convert_dataset(
    config: dict[str, Any],
    *,
    name: str,
    namespace: str | None,
    claim: str,
    claim_root: str | None,
    dataset_info: dict[str, Any] | None,
    dataset_info_source: str | None,
    problems: list[str],
    notes: list[str],
) -> dict[str, Any] | None:
    if config.get("dataset") in (None, "", []):
        message = "`dataset` is missing: a FineTuneJob trains on datasets named in dataset_info.json"
        if "stage" not in config and "do_train" not in config:
            message += (
                ". This looks like an inference config (`llamafactory-cli chat`/`export`): serve the model "
                "and its adapter with a ModelServe, or add `dataset` (and `stage`, `do_train`) to train it "
                "further"
            )
        problems.append(message)
        return None
    names = _names(config["dataset"], key="dataset", problems=problems)
    eval_names = None
    if config.get("eval_dataset") not in (None, "", []):
        eval_names = _names(config["eval_dataset"], key="eval_dataset", problems=problems)
    if names is None:
        return None

    raw_dir = config.get("dataset_dir")
    if raw_dir in (None, ""):
        raw_dir = LF_DEFAULT_DATASET_DIR
        notes.append(
            f"dataset_dir is not set: LLaMA-Factory's default `{raw_dir}` -> dataset.dir {raw_dir} "
            f"on claim `{claim}`"
        )
        directory: str | None = raw_dir
    elif not isinstance(raw_dir, str):
        problems.append(f"`dataset_dir` must be a path, not {type(raw_dir).__name__}")
        return None
    elif raw_dir == "ONLINE":
        problems.append(
            "`dataset_dir: ONLINE` is not supported: give each hub dataset a dataset_info.json entry with "
            "`hf_hub_url` (or `ms_hub_url`) and name it in `dataset`"
        )
        return None
    else:
        directory = _claim_path(raw_dir, key="dataset_dir", claim_root=claim_root, problems=problems)
        if directory is not None and directory != raw_dir:
            notes.append(f"dataset_dir `{raw_dir}` -> dataset.dir {directory} on claim `{claim}`")
    if directory is None:
        return None

    spec: dict[str, Any] = {"names": names}
    if eval_names:
        spec["evalNames"] = eval_names
    spec["dir"] = directory

    used = list(dict.fromkeys([*names, *(eval_names or [])]))
    if dataset_info is None:
        config_map = f"{name[:240].rstrip('-.')}-dataset-info"
        spec["configMapRef"] = {"name": config_map, "key": DATASET_INFO_FILE}
        ns = f" -n {namespace}" if namespace else ""
        notes.append(
            f"no dataset_info.json was found: dataset.configMapRef reads it from ConfigMap `{config_map}`; "
            f"create it with `kubectl create configmap {config_map}{ns} "
            f"--from-file={DATASET_INFO_FILE}=path/to/{DATASET_INFO_FILE}` (it must have entries for "
            f"{', '.join(used)})"
        )
        return spec

    searched = dataset_info_source or "the dataset_info given"
    info: dict[str, Any] = {}
    for dataset in used:
        entry = dataset_info.get(dataset)
        if entry is None:
            close = difflib.get_close_matches(dataset, [str(k) for k in dataset_info], n=1)
            hint = (
                f": did you mean `{close[0]}`?" if close else ": add its entry (file_name, formatting, ...)"
            )
            problems.append(f"dataset `{dataset}` has no entry in {searched}{hint}")
            continue
        if not isinstance(entry, dict):
            problems.append(f"the entry of dataset `{dataset}` in {searched} must be a mapping")
            continue
        info[dataset] = copy.deepcopy(entry)
        file_name = entry.get("file_name")
        if isinstance(file_name, str) and not any(
            k in entry for k in ("hf_hub_url", "ms_hub_url", "om_hub_url")
        ):
            notes.append(
                f"dataset `{dataset}`: expects {posixpath.join(directory, file_name)} on claim `{claim}`"
            )
    if info:
        spec["info"] = info
        left = len(dataset_info) - len(info)
        notes.append(
            f"dataset.info: the entries of {', '.join(info)} from {searched}"
            + (f" ({left} unused entr{'y' if left == 1 else 'ies'} left out)" if left > 0 else "")
        )
    return spec


def _convert_deepspeed(value: Any, *, problems: list[str], notes: list[str]) -> dict[str, Any] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        base = PurePosixPath(value.replace("\\", "/")).name
        preset = DEEPSPEED_PRESETS.get(base)
        if preset is not None:
            notes.append(f"deepspeed `{value}` -> deepspeed.preset {preset} (LLaMA-Factory's {base})")
            return {"preset": preset}
        what = (
            f"`deepspeed: {value}` is not one of LLaMA-Factory's example files "
            f"({', '.join(DEEPSPEED_PRESETS)})"
        )
    else:
        what = "`deepspeed` is an inline DeepSpeed config"
    problems.append(
        f"{what}: put the DeepSpeed JSON in a ConfigMap (`kubectl create configmap NAME "
        "--from-file=deepspeed.json=PATH`) and set "
        "`deepspeed: {configMapRef: {name: NAME, key: deepspeed.json}}` instead"
    )
    return None


def _convert_adapters(value: Any, *, claim_root: str | None, problems: list[str], notes: list[str]) -> Any:
    if not isinstance(value, str) or not value.strip():
        return value
    mapped = []
    for part in (p.strip() for p in value.split(",")):
        if not part or is_hub_id(part) or part == CLAIM_MOUNT_PATH or part.startswith(f"{CLAIM_MOUNT_PATH}/"):
            mapped.append(part)
            continue
        path = _claim_path(part, key="adapter_name_or_path", claim_root=claim_root, problems=problems)
        mapped.append(part if path is None else posixpath.join(CLAIM_MOUNT_PATH, path))
    result = ",".join(mapped)
    if result != value:
        notes.append(
            f"adapter_name_or_path `{value}` -> `{result}` (the claim is mounted at {CLAIM_MOUNT_PATH} "
            "in the trainer pods; the adapter must be there)"
        )
    return result


def _validate(spec: dict[str, Any]) -> list[str]:
    try:
        FineTuneJobSpec.model_validate(spec)
    except ValidationError as exc:
        messages = []
        for error in exc.errors():
            where = ".".join(str(p) for p in ("spec", *error["loc"]))
            messages.append(f"{where}: {error['msg']}")
        return messages
    return []


def convert(
    lf_config: dict[str, Any],
    *,
    name: str,
    namespace: str | None,
    nodes: int,
    gpus_per_node: int,
    claim: str,
    claim_root: str | None,
    dataset_info: dict[str, Any] | None,
    gpu_resource: str = "nvidia.com/gpu",
    dataset_info_source: str | None = None,
) -> ConversionResult:
    """A LLaMA-Factory training config -> a FineTuneJob manifest (a dict) and notes on every decision.

    `dataset_info` is the parsed dataset_info.json (None: not found, the spec then reads it from a ConfigMap)
    and `dataset_info_source` where it came from, for the messages. Raises ConversionError with every problem.
    """
    problems: list[str] = []
    notes: list[str] = []
    if not isinstance(lf_config, dict):
        raise ConversionError(["the LLaMA-Factory config must be a mapping of arguments"])
    if not (len(name) <= 253 and re.match(DNS_SUBDOMAIN, name)):
        problems.append(f"name `{name}` is not a valid Kubernetes name (lowercase letters, digits, `-`, `.`)")
    if namespace is not None and not _label(namespace):
        problems.append(f"namespace `{namespace}` is not a valid Kubernetes namespace name")

    model = _convert_model(lf_config, claim=claim, claim_root=claim_root, problems=problems, notes=notes)
    template = lf_config.get("template")
    if template in (None, ""):
        problems.append(
            "`template` is missing: model.template (LLaMA-Factory's chat template, such as `qwen`) "
            "is required"
        )
    else:
        if (problem := check_template(template)) is not None:
            problems.append(problem.message)
        if model is not None:
            model["template"] = template

    dataset = _convert_dataset(
        lf_config,
        name=name,
        namespace=namespace,
        claim=claim,
        claim_root=claim_root,
        dataset_info=dataset_info,
        dataset_info_source=dataset_info_source,
        problems=problems,
        notes=notes,
    )
    deepspeed = _convert_deepspeed(lf_config.get("deepspeed"), problems=problems, notes=notes)
    if deepspeed is None and nodes * gpus_per_node > 1:
        notes.append(f"no deepspeed: plain DDP over {nodes} x {gpus_per_node} GPUs")

    storage: dict[str, Any] = {"claim": claim}
    output_dir = lf_config.get("output_dir")
    if output_dir in (None, ""):
        notes.append(
            f"output_dir is not set: the output goes to runs/{namespace or '<namespace>'}/{name} on the claim"
        )
    elif not isinstance(output_dir, str):
        problems.append(f"`output_dir` must be a path, not {type(output_dir).__name__}")
    else:
        path = _claim_path(output_dir, key="output_dir", claim_root=claim_root, problems=problems)
        if path is not None:
            storage["path"] = path
            notes.append(f"output_dir `{output_dir}` -> storage.path {path} on claim `{claim}`")

    restart_keys = [key for key in ("overwrite_output_dir", "resume_from_checkpoint") if key in lf_config]
    if restart_keys:
        checkpoint = lf_config.get("resume_from_checkpoint")
        extra = ""
        if isinstance(checkpoint, str) and checkpoint:
            extra = f"; to start from `{checkpoint}`, copy that checkpoint into storage.path first"
        notes.append(
            f"{', '.join(restart_keys)} dropped: the operator resumes from the newest checkpoint in "
            f"storage.path after a restart, and starts fresh when there is none{extra}"
        )
    tokens = [key for key in TOKEN_KEYS if key in lf_config]
    if tokens:
        notes.append(
            f"{', '.join(tokens)} dropped (a token never goes into a manifest): keep it in a Secret and "
            "name it in model.hubTokenSecret"
        )
        scheme = model["source"].split("://", 1)[0] if model else None
        wanted = {"hf": "hf_hub_token", "ms": "ms_hub_token"}.get(scheme or "")
        if model is not None and wanted and lf_config.get(wanted) not in (None, ""):
            secret = _hub_token_secret(name)
            model["hubTokenSecret"] = {"name": secret, "key": "token"}
            ns = f" -n {namespace}" if namespace else ""
            notes.append(
                f"model.hubTokenSecret -> Secret `{secret}`: create it with `kubectl create secret generic "
                f"{secret}{ns} --from-literal=token=<your token>`"
            )
    if "cache_dir" in lf_config:
        notes.append(
            "cache_dir dropped: the operator keeps the model cache on the claim (storage.modelCache)"
        )

    config: dict[str, Any] = {}
    for key, value in lf_config.items():
        if key in CONVERTED_KEYS:
            continue
        if key in OWNED_KEYS:
            notes.append(f"{key} dropped: {OWNED_KEYS[key]}")
            continue
        if key == "adapter_name_or_path":
            value = _convert_adapters(value, claim_root=claim_root, problems=problems, notes=notes)
        config[key] = value
    for key, value in config.items():
        if (
            key != "adapter_name_or_path"
            and isinstance(value, str)
            and value.startswith("/")
            and not value.startswith(f"{CLAIM_MOUNT_PATH}/")
        ):
            notes.append(
                f"config `{key}: {value}` is an absolute path and stays as it is: in the trainer pods the "
                f"claim is at {CLAIM_MOUNT_PATH}"
            )

    problems.extend(problem.message for problem in check_config(config))
    if problems:
        raise ConversionError(problems)

    assert model is not None and dataset is not None  # a missing one is a problem above
    spec: dict[str, Any] = {
        "model": model,
        "dataset": dataset,
        "config": config,
        "resources": {"nodes": nodes, "gpusPerNode": gpus_per_node, "gpuResource": gpu_resource},
    }
    if deepspeed is not None:
        spec["deepspeed"] = deepspeed
    spec["storage"] = storage
    invalid = _validate(spec)
    if invalid:
        raise ConversionError(invalid)

    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    manifest = {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}
    return ConversionResult(manifest=manifest, notes=notes)


# ---------------------------------------------------------------------------------------------------------
# The command


class _Dumper(yaml.SafeDumper):
    """Block style, lists indented under their key, no anchors."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)

    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(manifest: dict[str, Any]) -> str:
    return yaml.dump(
        manifest, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=4096
    )


def dns_label(text: str) -> str:
    """Text -> a DNS-1123 label: lowercase letters, digits and `-`, at most 63 characters ('' if none)."""
    label = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return label[:63].rstrip("-")


def default_name(config: dict[str, Any], config_file: str | None) -> str:
    """The last component of output_dir, else the config file's stem, as a DNS-1123 label ('' if none)."""
    candidates = []
    output_dir = config.get("output_dir")
    if isinstance(output_dir, str) and output_dir.strip():
        candidates.append(PurePosixPath(posixpath.normpath(output_dir)).name)
    if config_file:
        candidates.append(Path(config_file).stem)
    for candidate in candidates:
        label = dns_label(candidate)
        if label:
            return label
    return ""


def dataset_info_candidates(config: dict[str, Any], base_dir: Path) -> list[Path]:
    """Where `kubetune convert` looks for dataset_info.json: in dataset_dir, then beside the config."""
    dataset_dir = config.get("dataset_dir")
    if not isinstance(dataset_dir, str) or not dataset_dir or dataset_dir == "ONLINE":
        dataset_dir = LF_DEFAULT_DATASET_DIR
    candidates = [base_dir / dataset_dir / DATASET_INFO_FILE, base_dir / DATASET_INFO_FILE]
    return list(dict.fromkeys(candidates))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {value}")
    return value


def build_parser(prog: str = "kubetune convert") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        usage=(
            "%(prog)s FILE --nodes N --gpus-per-node G --claim C [options]\n"
            "       %(prog)s --nodes N --gpus-per-node G --claim C [options] -- LLAMAFACTORY-CLI-ARGS..."
        ),
        description=(
            "Convert a LLaMA-Factory training config into a FineTuneJob. The FineTuneJob YAML goes to "
            "stdout, one note per decision (dropped keys, paths mapped onto the claim, ...) to stderr."
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
        "--nodes", type=_positive_int, required=True, metavar="N", help="number of nodes (pods)"
    )
    parser.add_argument("--gpus-per-node", type=_count, required=True, metavar="G", help="GPUs per node")
    parser.add_argument("--claim", required=True, metavar="C", help="the shared PersistentVolumeClaim")
    parser.add_argument("--name", help="FineTuneJob name (default: from output_dir, else from FILE)")
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
        "--dataset-info",
        metavar="PATH",
        help="dataset_info.json (default: <dataset_dir>/dataset_info.json beside FILE, then "
        "dataset_info.json beside FILE)",
    )
    parser.add_argument(
        "--gpu-resource",
        default="nvidia.com/gpu",
        metavar="R",
        help="GPU resource name (default %(default)s)",
    )
    return parser


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConversionError([f"cannot read {path}: {exc.strerror or exc}"]) from exc
    except json.JSONDecodeError as exc:
        raise ConversionError([f"{path} is not valid JSON: {exc}"]) from exc
    if not isinstance(data, dict):
        raise ConversionError([f"{path} must be a JSON object of dataset entries"])
    return data


def _run(args: argparse.Namespace, lf_argv: list[str] | None) -> tuple[str, list[str]]:
    notes: list[str] = []
    if lf_argv is not None and args.file is not None:
        raise ConversionError(["give either FILE or `-- <llamafactory-cli arguments>`, not both"])
    if lf_argv is None and args.file is None:
        raise ConversionError(
            ["give a LLaMA-Factory config FILE (`-` for stdin) or `-- <llamafactory-cli arguments>`"]
        )

    config_file: Path | None = None
    if lf_argv is not None:
        config, config_file, notes = _parse_lf_argv(lf_argv)
    elif args.file == "-":
        config = load_lf_config(sys.stdin.read(), source="stdin")
    else:
        config_file = Path(args.file)
        try:
            text = config_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConversionError([f"cannot read {config_file}: {exc.strerror or exc}"]) from exc
        config = load_lf_config(
            text, source=str(config_file), json_file=config_file.suffix.lower() == ".json"
        )

    name = args.name or default_name(config, str(config_file) if config_file else None)
    if not name:
        raise ConversionError(["cannot derive a name from output_dir or the file name: give --name"])

    base_dir = config_file.parent if config_file else Path()
    dataset_info: dict[str, Any] | None = None
    source: str | None = None
    if args.dataset_info:
        dataset_info, source = _read_json(Path(args.dataset_info)), args.dataset_info
    else:
        candidates = dataset_info_candidates(config, base_dir)
        found = next((p for p in candidates if p.is_file()), None)
        if found is not None:
            dataset_info, source = _read_json(found), str(found)
        else:
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
    )
    return to_yaml(result.manifest), notes + result.notes


def main(argv: list[str] | None = None) -> int:
    """`kubetune convert`: prints the FineTuneJob on stdout and the notes on stderr; 2 on any error."""
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
