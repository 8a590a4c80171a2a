"""Files that are not LLaMA-Factory training configs, told apart before any key is looked at.

LLaMA-Factory's examples/ folder holds many YAML and JSON files beside the training configs: Accelerate and
FSDP launcher configs, DeepSpeed JSONs, configs of other trainers (the v1 trainer, Megatron-Core,
Megatron-Bridge, KTransformers) and configs for `chat`, `export` or a predict-only run. Converting one of
them key by key would give ten unrelated errors; `what_it_is` gives one message that says what the file is
and what to do instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_ACCELERATE_KEYS = frozenset(
    {"compute_environment", "distributed_type", "num_processes", "main_training_function"}
)
_DEEPSPEED_KEYS = frozenset(
    {
        "zero_optimization",
        "train_micro_batch_size_per_gpu",
        "train_batch_size",
        "zero_allow_untested_optimizer",
    }
)
# LLaMA-Factory v1 (`USE_V1=1`): one `model` key and nested configs instead of model_name_or_path and stage.
_V1_KEYS = frozenset(
    {"model_class", "peft_config", "dist_config", "kernel_config", "train_dataset", "sample_backend"}
)
# mcore_adapter's TrainingArguments, which `USE_MCA=1` swaps in for transformers' own.
_MCORE_KEYS = frozenset(
    {
        "tensor_model_parallel_size",
        "pipeline_model_parallel_size",
        "expert_model_parallel_size",
        "virtual_pipeline_model_parallel_size",
        "context_parallel_size",
        "sequence_parallel",
        "use_distributed_optimizer",
        "moe_token_dispatcher_type",
        "recompute_granularity",
    }
)
_KT_KEYS = frozenset({"use_kt", "kt_optimize_rule", "cpu_infer", "chunk_size"})

_TORCHRUN = (
    "kubetune runs LLaMA-Factory's Hugging Face trainer under torchrun on every node (DeepSpeed ZeRO through "
    "spec.deepspeed)"
)


def _kt_prefixed(keys: set[str]) -> bool:
    return any(isinstance(key, str) and key.startswith("kt_") for key in keys)


def _on(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() in ("1", "true", "y", "yes"))


def what_it_is(config: Mapping[str, Any], trainer_switches: Mapping[str, str] | None = None) -> str | None:
    """One message when `config` is not a LLaMA-Factory training config kubetune can run; None when it is.

    `trainer_switches` are the USE_V1, USE_MCA, ... assignments in front of `llamafactory-cli train`.
    """
    switches = {key for key, value in (trainer_switches or {}).items() if _on(value)}
    keys = set(config)
    training = "model_name_or_path" in keys or "stage" in keys or "do_train" in keys

    if keys & _ACCELERATE_KEYS and not training:
        return (
            "this is an Accelerate launcher config (`accelerate launch --config_file`), not a LLaMA-Factory "
            f"training config: {_TORCHRUN}, so convert the training config instead; for FSDP, put "
            "`fsdp` and `fsdp_config` (LLaMA-Factory's own arguments) into that training config"
        )
    if keys & _DEEPSPEED_KEYS and not training:
        return (
            "this is a DeepSpeed config, not a LLaMA-Factory training config: name it in your training "
            "config (`deepspeed: path/to/this.json`) and convert the training config; convert reads the file "
            "and makes it a preset or a ConfigMap"
        )
    if "USE_V1" in switches or ("model" in keys and "model_name_or_path" not in keys and keys & _V1_KEYS):
        return (
            "this is a LLaMA-Factory v1 trainer config (`USE_V1=1`): kubetune runs the v0 trainer of "
            "LLaMA-Factory 0.9.5 (`llamafactory-cli train` without USE_V1); write the run as a v0 config "
            "(model_name_or_path, stage, finetuning_type, dataset, ...) and convert that"
        )
    if "USE_MEGATRON_BRIDGE" in switches or _on(config.get("use_megatron_bridge")):
        return (
            "this is a Megatron-Bridge config (`USE_MEGATRON_BRIDGE=1`): the trainer image has no "
            f"Megatron-Bridge; {_TORCHRUN}: drop the Megatron-Bridge arguments and choose a ZeRO preset "
            "instead"
        )
    if "USE_MCA" in switches or _on(config.get("use_mca")) or keys & _MCORE_KEYS:
        found = sorted(keys & _MCORE_KEYS)
        why = f" ({', '.join(found)} are Megatron arguments)" if found else ""
        return (
            f"this is a Megatron-Core config (`USE_MCA=1`, mcore_adapter; or `USE_MEGATRON_BRIDGE=1` on "
            f"LLaMA-Factory's main branch){why}: the trainer image has no Megatron-Core; {_TORCHRUN}: drop "
            "the Megatron arguments and choose a ZeRO preset instead"
        )
    if (
        "USE_KT" in switches
        or _on(config.get("use_kt"))
        or keys & _KT_KEYS - {"use_kt"}
        or _kt_prefixed(keys)
    ):
        return (
            "this is a KTransformers config (`use_kt: true`): the trainer image has no KTransformers "
            "(it runs MoE experts on the CPU); drop `use_kt` and the kt_* settings to train on the GPUs, "
            "with a ZeRO preset for a large model"
        )
    if "export_dir" in keys and not _on(config.get("do_train")):
        return (
            "this is an export config (`llamafactory-cli export`): merge the adapter after training with "
            "`spec.postTraining.merge` of the FineTuneJob that trains it"
        )
    if _on(config.get("do_predict")) and not _on(config.get("do_train")):
        return (
            "this is a predict-only config (`do_predict: true` without `do_train`): generate on evaluation "
            "datasets after training with `spec.postTraining.predict` of the FineTuneJob that trains the "
            "adapter"
        )
    if config.get("dataset") in (None, "", []) and "stage" not in keys and "do_train" not in keys:
        return (
            "this is an inference config (`llamafactory-cli chat`/`api`/`webchat`): serve the model and its "
            "adapter with a ModelServe, or add `dataset` (and `stage`, `do_train`) to train it further"
        )
    return None
