"""The one place tests build FineTuneJob and ModelServe bodies: unit, integration, serve and bench tiers.

`finetunejob(name, **overrides)` and `modelserve(name, **overrides)` start from a valid spec; a keyword
argument replaces that top-level spec field (None removes it). `merge` folds nested changes into a spec
(dicts merge key by key) where a test changes one field deep down.
"""

from __future__ import annotations

import copy
from typing import Any

API_VERSION = "kubetune.io/v1alpha1"

# The reference LoRA SFT (a Qwen2.5-7B on the `shared` claim), one node of 8 GPUs.
FINETUNEJOB_SPEC: dict[str, Any] = {
    "model": {"source": "pvc://shared/models/Qwen2.5-7B-Instruct", "template": "qwen"},
    "dataset": {
        "names": ["alpaca_clue_train"],
        "dir": "datasets/clue",
        "info": {"alpaca_clue_train": {"file_name": "alpaca_clue_train.json"}},
    },
    "config": {
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "lora",
        "lora_rank": 8,
        "lora_target": "all",
        "learning_rate": 1.0e-4,
        "num_train_epochs": 3.0,
        "bf16": True,
    },
    "resources": {"nodes": 1, "gpusPerNode": 8},
    "deepspeed": {"preset": "zero2"},
    "storage": {"claim": "shared"},
    "maxRestarts": 0,
}

# The base model of that training, served on one GPU from the same claim, no adapters.
MODELSERVE_SPEC: dict[str, Any] = {
    "model": {"source": "pvc://shared/models/Qwen2.5-7B-Instruct", "servedModelName": "qwen2.5-7b"},
    "storage": {"claim": "shared"},
    "adapters": [],
    "resources": {"gpus": 1},
    "engine": {"maxModelLen": 1024, "gpuMemoryUtilization": 0.8},
}


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A copy of `base` with `changes` folded in: nested dicts merge, None removes a key."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _replaced(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(base)
    for key, value in overrides.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = copy.deepcopy(value)
    return spec


def finetunejob_spec(**overrides: Any) -> dict[str, Any]:
    """FINETUNEJOB_SPEC with top-level fields replaced (None removes one)."""
    return _replaced(FINETUNEJOB_SPEC, overrides)


def modelserve_spec(**overrides: Any) -> dict[str, Any]:
    return _replaced(MODELSERVE_SPEC, overrides)


def _body(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": spec}


def finetunejob(name: str, **overrides: Any) -> dict[str, Any]:
    """A valid FineTuneJob; keyword arguments replace top-level spec fields (None removes one)."""
    return _body("FineTuneJob", name, finetunejob_spec(**overrides))


def modelserve(name: str, adapters: list[dict[str, Any]] | None = None, **overrides: Any) -> dict[str, Any]:
    """A valid ModelServe of the base model, serving `adapters`; keyword arguments replace spec fields."""
    return _body("ModelServe", name, modelserve_spec(adapters=adapters or [], **overrides))


def with_pod_annotations(body: dict[str, Any], **annotations: str) -> dict[str, Any]:
    """Annotations on the body's pods (`podMetadata`): `kwok_x=...` is `kwok-x`, how tests steer KWOK."""
    body["spec"]["podMetadata"] = {"annotations": {k.replace("_", "-"): v for k, v in annotations.items()}}
    return body
