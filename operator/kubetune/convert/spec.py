"""A LLaMA-Factory training config -> a FineTuneJob spec (pure: it never reads a file itself).

The keys the operator owns become spec fields; every other key stays in `spec.config` unchanged, in its
order. Each decision a user should know about (a dropped key, a path mapped onto the claim, a DeepSpeed file
taken as a preset, ...) is a line in `ConversionResult.notes`; anything that cannot be converted faithfully
is a `ConversionError` that says what to do instead. What LLaMA-Factory would have found on its machine (the
DeepSpeed file's content, which paths are directories) comes in as a `Found` (kubetune.convert.read).

Paths. LLaMA-Factory resolves a relative path against the directory `llamafactory-cli` ran in; in the
trainer pod that directory is `spec.storage.workingDir` on the claim (default: the claim's root), so a
relative path in `spec.config` (tokenized_path, media_dir, ...) stays as it is and lands on the claim.
The owned paths (output_dir, dataset_dir, a local model) become paths on the claim: a relative one is joined
to the working directory on the claim; an absolute one is made relative to `claim_root` (the directory that
was copied onto the claim) when given, else it keeps its whole path on the claim (`/data/models/x` ->
`data/models/x`). A path that leaves the claim is an error.

Hub ids and local paths (`model_name_or_path`, `adapter_name_or_path`). LLaMA-Factory asks the file system:
a value that exists as a directory is a local model, anything else a hub id. convert does the same where it
can look (`Found.local_dirs`: the value exists relative to the config or the working directory); else it
decides by the form:

- a hub id is exactly `<org>/<name>`: one `/`, both parts made of letters, digits, `_`, `-` and `.`, the
  first not starting with `.` (so `./x/y` and `../x/y` are paths) -> `hf://org/name`, or `ms://org/name`
  when ModelScope is asked for: `USE_MODELSCOPE_HUB=1` in front of `llamafactory-cli` (how LLaMA-Factory
  itself is told), or `use_modelscope_hub: true` in the config;
- everything else is a local path: it starts with `/`, `./`, `../` or `~`, has no `/`, or has two or more.
"""

from __future__ import annotations

import copy
import difflib
import json
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from pydantic import ValidationError

from kubetune.api import API_VERSION
from kubetune.api.common import CLAIM_MOUNT_PATH, DNS_LABEL, DNS_SUBDOMAIN
from kubetune.api.finetunejob import KIND, DeepSpeedPreset, FineTuneJobSpec
from kubetune.api.llamafactory import LLAMAFACTORY_VERSION, OWNED_KEYS, check_config, check_template
from kubetune.convert.errors import ConversionError, ConversionResult
from kubetune.convert.kinds import what_it_is
from kubetune.convert.read import DATASET_INFO_FILE, HUB_SWITCHES, LF_DEFAULT_DATASET_DIR, Found
from kubetune.render.deepspeed import preset_config

# LLaMA-Factory's example DeepSpeed files (examples/deepspeed/) -> the operator's presets, whose JSON equals
# each file key by key. A file is taken by its content; the name counts only when the file cannot be read.
DEEPSPEED_PRESETS: dict[str, str] = {
    "ds_z0_config.json": "zero0",
    "ds_z2_config.json": "zero2",
    "ds_z2_offload_config.json": "zero2-offload",
    "ds_z3_config.json": "zero3",
    "ds_z3_offload_config.json": "zero3-offload",
}
DEEPSPEED_CONFIGMAP_KEY = "deepspeed.json"

# Never copied anywhere: not into the manifest, not into a note.
TOKEN_KEYS = ("hf_hub_token", "ms_hub_token", "om_hub_token", "hub_token")
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


# ---------------------------------------------------------------------------------------------------------
# The conversion


def is_hub_id(value: str) -> bool:
    """`<org>/<name>` (see the module's docstring); everything else is a local path."""
    parts = value.split("/")
    return len(parts) == 2 and all(_HUB_PART.match(p) for p in parts)


@dataclass
class _Context:
    """What every part of one conversion shares."""

    name: str
    namespace: str | None
    claim: str
    claim_root: str | None
    working_dir: str  # on the claim, relative to its root ("" for the root)
    found: Found | None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def claim_path(self, value: str, *, key: str) -> str | None:
        """A local path as LLaMA-Factory saw it -> the same path on the claim, relative to its root."""
        if value.startswith("~"):
            self.problems.append(
                f"`{key}: {value}` is relative to a home directory: give the path it stands for"
            )
            return None
        normal = posixpath.normpath(value)
        if posixpath.isabs(normal):
            if self.claim_root:
                root = posixpath.normpath(self.claim_root)
                if not posixpath.isabs(root):
                    self.problems.append(f"--claim-root `{self.claim_root}` must be an absolute path")
                    return None
                try:
                    relative = PurePosixPath(normal).relative_to(root)
                except ValueError:
                    self.problems.append(
                        f"`{key}: {value}` is outside the claim root `{root}`: copy it under the claim root, "
                        "or choose a claim root that contains it"
                    )
                    return None
                return str(relative)
            return normal.lstrip("/") or "."
        joined = posixpath.normpath(posixpath.join(self.working_dir, normal)) if self.working_dir else normal
        if joined == ".." or joined.startswith("../"):
            where = (
                "the working directory's claim"
                if self.working_dir
                else "the directory that becomes the claim's root"
            )
            self.problems.append(f"`{key}: {value}` leaves {where}")
            return None
        return joined

    def local_dir(self, value: str) -> str | None:
        """Where `value` exists as a directory on this machine, if convert looked and found it."""
        return None if self.found is None else self.found.local_dirs.get(value)


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


def _searched(ctx: _Context) -> str:
    return " or ".join(ctx.found.searched) if ctx.found and ctx.found.searched else "the working directory"


def _convert_model(config: dict[str, Any], ctx: _Context) -> dict[str, Any] | None:
    problems, notes, claim = ctx.problems, ctx.notes, ctx.claim
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
    local = ctx.local_dir(value)
    if is_hub_id(value) and local is None:
        if config.get("use_openmind_hub") is True:
            problems.append(
                f"`model_name_or_path: {value}` is on the OpenMind hub (USE_OPENMIND_HUB): the operator "
                "downloads hub models from Hugging Face (hf://) or ModelScope (ms://) only; put the model "
                "on the claim instead"
            )
            return None
        scheme = "ms" if config.get("use_modelscope_hub") is True else "hf"
        hub = "ModelScope" if scheme == "ms" else "Hugging Face"
        looked = f"no directory `{value}` in {_searched(ctx)}, so " if ctx.found is not None else ""
        notes.append(
            f"model_name_or_path `{value}`: {looked}a {hub} hub id -> model.source {scheme}://{value}, "
            f"downloaded once into the model cache on claim `{claim}` (if it is a directory on the claim, "
            f"write it as `./{value}` and convert again)"
        )
        model: dict[str, Any] = {"source": f"{scheme}://{value}"}
        revision = config.get("model_revision")
        if revision not in (None, ""):
            model["revision"] = str(revision)
            notes.append(f"model_revision `{revision}` -> model.revision")
        return model
    path = ctx.claim_path(value, key="model_name_or_path")
    if path is None:
        return None
    if path == ".":
        problems.append(f"`model_name_or_path: {value}` is the claim's root: give the model's own directory")
        return None
    if local is not None and is_hub_id(value):
        notes.append(
            f"model_name_or_path `{value}` is a directory here ({local}), as LLaMA-Factory would find it: a "
            f"model on the claim -> model.source pvc://{claim}/{path}, not the hub id (copy it there)"
        )
    else:
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
    ctx: _Context,
    *,
    dataset_info: dict[str, Any] | None,
    dataset_info_source: str | None,
) -> dict[str, Any] | None:
    problems, notes, claim = ctx.problems, ctx.notes, ctx.claim
    if config.get("dataset") in (None, "", []):
        problems.append("`dataset` is missing: a FineTuneJob trains on datasets named in dataset_info.json")
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
        directory = ctx.claim_path(raw_dir, key="dataset_dir")
        notes.append(
            f"dataset_dir is not set: LLaMA-Factory's default `{raw_dir}` -> dataset.dir {directory} "
            f"on claim `{claim}`"
        )
    elif not isinstance(raw_dir, str):
        problems.append(f"`dataset_dir` must be a path, not {type(raw_dir).__name__}")
        return None
    elif raw_dir == "ONLINE":
        problems.append(
            "`dataset_dir: ONLINE` is not supported: give each hub dataset a dataset_info.json entry with "
            "`hf_hub_url` (or `ms_hub_url`) and name it in `dataset`"
        )
        return None
    elif raw_dir.startswith("REMOTE:"):
        problems.append(
            f"`dataset_dir: {raw_dir}` reads dataset_info.json from a hub repository when the run starts, "
            "which is not supported: download that repository's dataset_info.json and files onto the claim "
            "and set `dataset_dir` to their folder, or give each dataset a dataset_info.json entry with "
            "`hf_hub_url` (or `ms_hub_url`)"
        )
        return None
    else:
        directory = ctx.claim_path(raw_dir, key="dataset_dir")
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
        config_map = f"{ctx.name[:240].rstrip('-.')}-dataset-info"
        spec["configMapRef"] = {"name": config_map, "key": DATASET_INFO_FILE}
        ns = f" -n {ctx.namespace}" if ctx.namespace else ""
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


def _preset_of(content: Mapping[str, Any]) -> str | None:
    """The preset whose DeepSpeed JSON equals `content` key by key (1e9 == 1000000000), if any."""
    return next((preset.value for preset in DeepSpeedPreset if preset_config(preset) == content), None)


def _deepspeed_config_map(ctx: _Context, text: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": f"{ctx.name[:242].rstrip('-.')}-deepspeed"}
    if ctx.namespace:
        metadata["namespace"] = ctx.namespace
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "data": {DEEPSPEED_CONFIGMAP_KEY: text if text.endswith("\n") else text + "\n"},
    }


def _convert_deepspeed(value: Any, ctx: _Context) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """spec.deepspeed, and the ConfigMap it needs (if any)."""
    if value is None or value == "":
        return None, []
    problems, notes, found = ctx.problems, ctx.notes, ctx.found
    if isinstance(value, dict):
        content, text, what = value, json.dumps(value, indent=2), "the inline `deepspeed` config"
    elif isinstance(value, str):
        base = PurePosixPath(value.replace("\\", "/")).name
        if found is not None and found.deepspeed_problem:
            problems.append(found.deepspeed_problem)
            return None, []
        if found is None or found.deepspeed is None:
            preset = DEEPSPEED_PRESETS.get(base)
            looked = f" (not found in {_searched(ctx)})" if found is not None else ""
            if preset is not None:
                notes.append(
                    f"deepspeed `{value}`{looked} -> deepspeed.preset {preset}, taken by its name as "
                    f"LLaMA-Factory's examples/deepspeed/{base}: convert where the file is to be sure"
                )
                return {"preset": preset}, []
            problems.append(
                f"cannot read `deepspeed: {value}`{looked}: run convert where the file is (beside the config "
                "or in the working directory, --working-dir), or put it in a ConfigMap yourself "
                f"(`kubectl create configmap NAME --from-file={DEEPSPEED_CONFIGMAP_KEY}=PATH`) and set "
                f"`deepspeed: {{configMapRef: {{name: NAME, key: {DEEPSPEED_CONFIGMAP_KEY}}}}}`"
            )
            return None, []
        content, text = found.deepspeed, found.deepspeed_text or json.dumps(found.deepspeed, indent=2)
        what = f"deepspeed `{value}` ({found.deepspeed_source})"
    else:
        problems.append(f"`deepspeed` must be a path to a DeepSpeed JSON, not {type(value).__name__}")
        return None, []
    preset = _preset_of(content)
    if preset is not None:
        notes.append(f"{what} equals preset {preset} key by key -> deepspeed.preset {preset}")
        return {"preset": preset}, []
    config_map = _deepspeed_config_map(ctx, text)
    name = config_map["metadata"]["name"]
    notes.append(
        f"{what} is none of the presets: it goes as it is into ConfigMap `{name}` (the first document of the "
        f"output) -> deepspeed.configMapRef {name}/{DEEPSPEED_CONFIGMAP_KEY}"
    )
    return {"configMapRef": {"name": name, "key": DEEPSPEED_CONFIGMAP_KEY}}, [config_map]


def _convert_adapters(value: Any, ctx: _Context) -> Any:
    if not isinstance(value, str) or not value.strip():
        return value
    mapped = []
    for part in (p.strip() for p in value.split(",")):
        hub = is_hub_id(part) and ctx.local_dir(part) is None
        if not part or hub or part == CLAIM_MOUNT_PATH or part.startswith(f"{CLAIM_MOUNT_PATH}/"):
            if hub and ctx.found is not None:
                ctx.notes.append(
                    f"adapter_name_or_path `{part}`: no directory `{part}` in {_searched(ctx)}, so a hub id "
                    "(LLaMA-Factory downloads it in the pod)"
                )
            mapped.append(part)
            continue
        path = ctx.claim_path(part, key="adapter_name_or_path")
        mapped.append(part if path is None else posixpath.join(CLAIM_MOUNT_PATH, path))
    result = ",".join(mapped)
    if result != value:
        ctx.notes.append(
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
    working_dir: str | None = None,
    found: Found | None = None,
    trainer_switches: Mapping[str, str] | None = None,
) -> ConversionResult:
    """A LLaMA-Factory training config -> a FineTuneJob manifest (a dict) and notes on every decision.

    `dataset_info` is the parsed dataset_info.json (None: not found, the spec then reads it from a ConfigMap)
    and `dataset_info_source` where it came from, for the messages. `working_dir` is the directory
    `llamafactory-cli` ran in, relative to the claim's root (None: the root). `found` is what
    kubetune.convert.read saw on this machine (None: nothing was looked at; decide by the form).
    `trainer_switches` are USE_V1, USE_MCA, ... from in front of the command. Raises ConversionError with
    every problem.
    """
    if not isinstance(lf_config, dict):
        raise ConversionError(["the LLaMA-Factory config must be a mapping of arguments"])
    if (other := what_it_is(lf_config, trainer_switches)) is not None:
        raise ConversionError([other])
    work = posixpath.normpath(working_dir).strip("/") if working_dir else ""
    ctx = _Context(name, namespace, claim, claim_root, "" if work == "." else work, found)
    problems, notes = ctx.problems, ctx.notes
    if not (len(name) <= 253 and re.match(DNS_SUBDOMAIN, name)):
        problems.append(f"name `{name}` is not a valid Kubernetes name (lowercase letters, digits, `-`, `.`)")
    if namespace is not None and not _label(namespace):
        problems.append(f"namespace `{namespace}` is not a valid Kubernetes namespace name")
    if ctx.working_dir == ".." or ctx.working_dir.startswith("../"):
        problems.append(f"the working directory `{working_dir}` leaves the claim")

    model = _convert_model(lf_config, ctx)
    template = lf_config.get("template")
    if template in (None, ""):
        notes.append(
            f"template is not set: LLaMA-Factory {LLAMAFACTORY_VERSION} uses the tokenizer's chat template, "
            "else `empty` (fine for pre-training; set model.template for chat data)"
        )
    else:
        if (problem := check_template(template)) is not None:
            problems.append(problem.message)
        if model is not None:
            model["template"] = template

    dataset = _convert_dataset(
        lf_config, ctx, dataset_info=dataset_info, dataset_info_source=dataset_info_source
    )
    deepspeed, before = _convert_deepspeed(lf_config.get("deepspeed"), ctx)
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
        path = ctx.claim_path(output_dir, key="output_dir")
        if path is not None:
            storage["path"] = path
            notes.append(f"output_dir `{output_dir}` -> storage.path {path} on claim `{claim}`")
    if ctx.working_dir:
        storage["workingDir"] = ctx.working_dir
        notes.append(
            f"working directory -> storage.workingDir {ctx.working_dir}: the trainer runs there on claim "
            f"`{claim}`, so relative paths in spec.config resolve as they did by hand"
        )

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
            value = _convert_adapters(value, ctx)
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
    return ConversionResult(manifest=manifest, notes=notes, before=before)
