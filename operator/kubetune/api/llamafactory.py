"""What the pinned LLaMA-Factory release accepts, and the check of a FineTuneJob's `spec.config` against it.

`spec.config` holds LLaMA-Factory's own arguments, verbatim. Everything LLaMA-Factory would only reject once
the pods run (an unknown key, a bad `stage`, `finetuning_type` or `template`) is caught here, before any GPU
is allocated; so are the keys that the operator sets itself from the structured spec.

The argument names and choices come from `data/llamafactory-<version>.json`, generated from the release's own
dataclasses by `scripts/gen_llamafactory_args.py` (kept fresh by tests/unit/test_llamafactory_data_fresh.py).
This module is part of the pure core: it never imports LLaMA-Factory, torch, kopf or a Kubernetes client.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

__all__ = [
    "ADAPTER_FINETUNING_TYPES",
    "ARGUMENTS",
    "DEFAULT_FINETUNING_TYPE",
    "FINETUNING_TYPES",
    "LLAMAFACTORY_VERSION",
    "MOVED",
    "OWNED_KEYS",
    "STAGES",
    "TEMPLATES",
    "ConfigProblem",
    "check_config",
    "check_template",
    "finetuning_type",
    "suggest",
    "trains_adapter",
]

Reason = Literal["UnknownArgument", "OwnedArgument", "InvalidValue", "InvalidType"]


def _load() -> dict[str, Any]:
    data_dir = resources.files("kubetune.api").joinpath("data")
    found = sorted(
        (entry for entry in data_dir.iterdir() if fnmatch.fnmatch(entry.name, "llamafactory-*.json")),
        key=lambda entry: entry.name,
    )
    if len(found) != 1:
        names = [entry.name for entry in found]
        raise RuntimeError(
            f"expected exactly one kubetune/api/data/llamafactory-<version>.json, found {names}"
        )
    return json.loads(found[0].read_text(encoding="utf-8"))


_DATA = _load()

LLAMAFACTORY_VERSION: str = _DATA["version"]
"""The LLaMA-Factory release the data describes (the `llamafactory==` pin of the `trainer` extra)."""
TRANSFORMERS_VERSION: str = _DATA["transformers_version"]
"""The transformers release whose TrainingArguments the argument list includes."""
ARGUMENTS: frozenset[str] = frozenset(_DATA["arguments"])
"""Every key `llamafactory-cli train <config.yaml>` accepts."""
STAGES: frozenset[str] = frozenset(_DATA["stages"])
FINETUNING_TYPES: frozenset[str] = frozenset(_DATA["finetuning_types"])
# What LLaMA-Factory trains when a config names no finetuning_type.
DEFAULT_FINETUNING_TYPE = "lora"
# The finetuning types whose output is an adapter over the base model; the others (full, freeze) save a
# whole model in the output directory.
ADAPTER_FINETUNING_TYPES = frozenset({"lora", "oft"})


def finetuning_type(config: Mapping[str, Any]) -> str:
    """The finetuning type a LLaMA-Factory config trains."""
    return str(config.get("finetuning_type", DEFAULT_FINETUNING_TYPE))


def trains_adapter(config: Mapping[str, Any]) -> bool:
    """Whether a LLaMA-Factory config's output is an adapter (else a whole model)."""
    return finetuning_type(config) in ADAPTER_FINETUNING_TYPES


TEMPLATES: frozenset[str] = frozenset(_DATA["templates"])

_HUB_TOKEN = (
    "a token does not belong in the spec: put it in a Secret and name it in `spec.model.hubTokenSecret`"
)
_NOT_RAY = (
    "kubetune launches LLaMA-Factory with torchrun, not Ray: size the run with `spec.resources.nodes` and "
    "`spec.resources.gpusPerNode`"
)
_RENDEZVOUS = (
    "the operator sets the torchrun rendezvous itself (pod 0 of the job, behind its headless Service)"
)

OWNED_KEYS: dict[str, str] = {
    # Where things are: the model, the data and the outputs live on the claim, at paths the operator mounts.
    "model_name_or_path": (
        "set the base model in `spec.model.source` (`pvc://<claim>/<path>`, `hf://<org>/<name>` or "
        "`ms://<org>/<name>`)"
    ),
    "model_revision": "set the hub revision of the base model in `spec.model.revision`",
    "cache_dir": (
        "the operator downloads hub models once into the model cache on the claim, `spec.storage.modelCache`"
    ),
    "template": "set the chat template in `spec.model.template`",
    "dataset": "list the training datasets in `spec.dataset.names`",
    "eval_dataset": "list the evaluation datasets in `spec.dataset.evalNames`",
    "dataset_dir": "set the dataset folder on the claim in `spec.dataset.dir`",
    "output_dir": (
        "the run's output path on the claim is `spec.storage.path` (default `runs/<namespace>/<name>`)"
    ),
    "logging_dir": (
        "TensorBoard logs are kept under the run's output path (`spec.storage.path`); turn them on with "
        "`report_to: tensorboard` (`logging_dir` is also deprecated in transformers 5)"
    ),
    # Restarts: the operator resumes every new attempt from the newest checkpoint in the output path.
    "overwrite_output_dir": (
        "the operator keeps the run's checkpoints in `spec.storage.path` and resumes from the newest one "
        "after a restart, which overwriting would throw away; to start afresh, use a new `spec.storage.path`"
    ),
    "resume_from_checkpoint": (
        "the operator resumes from the newest checkpoint in `spec.storage.path` by itself, up to "
        "`spec.maxRestarts` times; to continue training an existing adapter, use `adapter_name_or_path`"
    ),
    # Distribution: torchrun, started by the operator on every node.
    "deepspeed": "choose a ZeRO preset or a ConfigMap with a DeepSpeed JSON in `spec.deepspeed`",
    "local_rank": (
        "torchrun sets each process's rank; the operator starts `spec.resources.gpusPerNode` processes on "
        "each of `spec.resources.nodes` nodes"
    ),
    "master_addr": _RENDEZVOUS,
    "master_port": _RENDEZVOUS,
    "ray_num_workers": _NOT_RAY,
    "ray_init_kwargs": _NOT_RAY,
    # Secrets.
    "hf_hub_token": _HUB_TOKEN,
    "ms_hub_token": _HUB_TOKEN,
    "om_hub_token": _HUB_TOKEN,
    "hub_token": _HUB_TOKEN,
}
"""Arguments the operator sets from the structured spec: key -> what to do instead (names the spec field)."""

# Names from other trainers, older releases or common shorthand, where the nearest spelling (difflib) is not
# the argument that is meant (`per_device_batch_size` is nearer to `per_device_eval_batch_size`).
_ALIASES: dict[str, str] = {
    "batch_size": "per_device_train_batch_size",
    "train_batch_size": "per_device_train_batch_size",
    "per_device_batch_size": "per_device_train_batch_size",
    "micro_batch_size": "per_device_train_batch_size",
    "eval_batch_size": "per_device_eval_batch_size",
    "lr": "learning_rate",
    "epochs": "num_train_epochs",
    "num_epochs": "num_train_epochs",
    "lora_r": "lora_rank",
    "lora_target_modules": "lora_target",
    "target_modules": "lora_target",
    "max_seq_length": "cutoff_len",
    "max_seq_len": "cutoff_len",
    "seq_length": "cutoff_len",
    "evaluation_strategy": "eval_strategy",
    "gradient_accumulation": "gradient_accumulation_steps",
    "grad_accum_steps": "gradient_accumulation_steps",
    "warmup": "warmup_steps",
    "scheduler": "lr_scheduler_type",
    "lr_scheduler": "lr_scheduler_type",
    "optimizer": "optim",
}


# Arguments that transformers removed (LLaMA-Factory passes its training arguments through), and where each
# went: an old config that still has one is told the new place, not "did you mean" a near spelling.
MOVED: dict[str, str] = {
    "fsdp_transformer_layer_cls_to_wrap": (
        "`fsdp_transformer_layer_cls_to_wrap` was removed from transformers' TrainingArguments: it moved "
        "into `fsdp_config`, as `fsdp_config: {transformer_layer_cls_to_wrap: [<the layer class>]}`"
    ),
    "fsdp_min_num_params": (
        "`fsdp_min_num_params` was removed from transformers' TrainingArguments: it moved into "
        "`fsdp_config`, as `fsdp_config: {min_num_params: <n>}`"
    ),
    "per_gpu_train_batch_size": (
        "`per_gpu_train_batch_size` was removed from transformers' TrainingArguments: use "
        "`per_device_train_batch_size`"
    ),
    "per_gpu_eval_batch_size": (
        "`per_gpu_eval_batch_size` was removed from transformers' TrainingArguments: use "
        "`per_device_eval_batch_size`"
    ),
    "no_cuda": "`no_cuda` was removed from transformers' TrainingArguments: use `use_cpu`",
}


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with `spec.config`, as a condition message a person can act on."""

    field: str
    """Where, as a path into the resource: `spec.config.lerning_rate`."""
    key: str
    """The config key concerned (`str()` of it when the key is not a string)."""
    reason: Reason
    """`UnknownArgument`, `OwnedArgument`, `InvalidValue` or `InvalidType`."""
    message: str
    """One line: what is wrong and what to write instead."""


def suggest(name: str, candidates: Iterable[str], aliases: Mapping[str, str] | None = None) -> str | None:
    """The candidate `name` most likely means, or None when nothing is close."""
    pool = sorted(set(candidates))
    if not pool:
        return None
    normal = name.strip().lower().replace("-", "_")
    if normal in pool:
        return normal
    if aliases and aliases.get(normal) in pool:
        return aliases[normal]
    best = difflib.get_close_matches(normal, pool, n=1, cutoff=0.6)
    return best[0] if best else None


def _yaml_repr(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"`{value}`"
    return f"{value!r} ({type(value).__name__})"


def _choice_problem(
    field: str, key: str, value: Any, choices: frozenset[str], what: str, list_all: bool
) -> ConfigProblem | None:
    listed = ", ".join(sorted(choices))
    if not isinstance(value, str):
        expected = f"one of {listed}" if list_all else f"the name of one of its {len(choices)} {what}s"
        return ConfigProblem(
            field=field,
            key=key,
            reason="InvalidType",
            message=f"`{key}` must be a string, {expected}; got {_yaml_repr(value)}",
        )
    if value in choices:
        return None
    guess = suggest(value, choices)
    message = f"unknown {what} `{value}` for `{key}` in LLaMA-Factory {LLAMAFACTORY_VERSION}"
    if guess is not None:
        message += f": did you mean `{guess}`?"
    elif list_all:
        message += f": use one of {listed}"
    else:
        message += f" ({len(choices)} {what}s are registered, such as {', '.join(sorted(choices)[:3])})"
    return ConfigProblem(field=field, key=key, reason="InvalidValue", message=message)


def check_template(template: Any, field: str = "spec.model.template") -> ConfigProblem | None:
    """Check a chat template name (the spec's `spec.model.template`) against the release's templates."""
    return _choice_problem(field, "template", template, TEMPLATES, "template", list_all=False)


_VALUE_CHECKS: dict[str, tuple[frozenset[str], str]] = {
    "stage": (STAGES, "stage"),
    "finetuning_type": (FINETUNING_TYPES, "finetuning type"),
}


def _check_key(key: Any, value: Any) -> ConfigProblem | None:
    if not isinstance(key, str):
        # YAML turns `on:`/`yes:` into true and `1:` into 1; LLaMA-Factory's names are all strings.
        return ConfigProblem(
            field=f"spec.config.{key}",
            key=str(key),
            reason="InvalidType",
            message=(
                f"spec.config keys are LLaMA-Factory argument names (strings); got {_yaml_repr(key)}: "
                "quote the key"
            ),
        )
    field = f"spec.config.{key}"
    if key in OWNED_KEYS:
        return ConfigProblem(
            field=field,
            key=key,
            reason="OwnedArgument",
            message=f"`{key}` is set by the operator and cannot be in spec.config: {OWNED_KEYS[key]}",
        )
    if key not in ARGUMENTS and key in MOVED:
        return ConfigProblem(field=field, key=key, reason="UnknownArgument", message=MOVED[key])
    if key not in ARGUMENTS:
        guess = suggest(key, ARGUMENTS, _ALIASES)
        message = f"unknown LLaMA-Factory argument `{key}`"
        if guess is None:
            message += (
                f": LLaMA-Factory {LLAMAFACTORY_VERSION} has no argument of that name or one close to it"
            )
        elif guess in OWNED_KEYS:
            message += f": did you mean `{guess}`? That one is set by the operator: {OWNED_KEYS[guess]}"
        else:
            message += f": did you mean `{guess}`?"
        return ConfigProblem(field=field, key=key, reason="UnknownArgument", message=message)
    if key in _VALUE_CHECKS:
        choices, what = _VALUE_CHECKS[key]
        return _choice_problem(field, key, value, choices, what, list_all=True)
    return None


def check_config(config: Mapping[str, Any]) -> list[ConfigProblem]:
    """Everything in a FineTuneJob's `spec.config` that LLaMA-Factory or the operator would refuse.

    Returns one problem per offending key, sorted by key; an empty list when the config is fine. Values are
    checked only where LLaMA-Factory would fail late on them (`stage`, `finetuning_type`); the values of
    owned keys do not matter (the key itself is the problem).
    """
    if not isinstance(config, Mapping):
        return [
            ConfigProblem(
                field="spec.config",
                key="",
                reason="InvalidType",
                message=(
                    f"spec.config must be a mapping of LLaMA-Factory arguments; got {type(config).__name__}"
                ),
            )
        ]
    problems = [problem for key, value in config.items() if (problem := _check_key(key, value)) is not None]
    return sorted(problems, key=lambda problem: (problem.key, problem.reason, problem.field))
