"""DeepSpeed configurations for the ZeRO presets.

The pip package of LLaMA-Factory ships none of its example files, so the presets are built here with the
same shape and the same "auto" values as LLaMA-Factory's examples/deepspeed/ds_z*_config.json: the HF
Trainer fills batch sizes, clipping and precision from the LLaMA-Factory arguments.
"""

from __future__ import annotations

from typing import Any

from kubetune.api.finetunejob import DeepSpeedPreset

_CPU_OFFLOAD = {"device": "cpu", "pin_memory": True}

_ZERO_0_2 = {
    "allgather_partitions": True,
    "allgather_bucket_size": 500_000_000,
    "overlap_comm": False,
    "reduce_scatter": True,
    "reduce_bucket_size": 500_000_000,
    "contiguous_gradients": True,
    "round_robin_gradients": True,
}

_ZERO_3 = {
    "overlap_comm": False,
    "contiguous_gradients": True,
    "sub_group_size": 1_000_000_000,
    "reduce_bucket_size": "auto",
    "stage3_prefetch_bucket_size": "auto",
    "stage3_param_persistence_threshold": "auto",
    "stage3_max_live_parameters": 1_000_000_000,
    "stage3_max_reuse_distance": 1_000_000_000,
    # Without this a ZeRO-3 run saves sharded weights that `from_pretrained` cannot load.
    "stage3_gather_16bit_weights_on_model_save": True,
}


def _zero(stage: int, offload_optimizer: bool = False, offload_params: bool = False) -> dict[str, Any]:
    zero: dict[str, Any] = {"stage": stage}
    if offload_optimizer:
        zero["offload_optimizer"] = dict(_CPU_OFFLOAD)
    if offload_params:
        zero["offload_param"] = dict(_CPU_OFFLOAD)
    zero.update(_ZERO_3 if stage == 3 else _ZERO_0_2)
    return zero


_ZERO_SETTINGS = {
    DeepSpeedPreset.ZERO0: lambda: _zero(0),
    DeepSpeedPreset.ZERO2: lambda: _zero(2),
    DeepSpeedPreset.ZERO2_OFFLOAD: lambda: _zero(2, offload_optimizer=True),
    DeepSpeedPreset.ZERO3: lambda: _zero(3),
    DeepSpeedPreset.ZERO3_OFFLOAD: lambda: _zero(3, offload_optimizer=True, offload_params=True),
}


def preset_config(preset: DeepSpeedPreset | str) -> dict[str, Any]:
    """The DeepSpeed JSON of a ZeRO preset."""
    return {
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_allow_untested_optimizer": True,
        "fp16": {
            "enabled": "auto",
            "loss_scale": 0,
            "loss_scale_window": 1000,
            "initial_scale_power": 16,
            "hysteresis": 2,
            "min_loss_scale": 1,
        },
        "bf16": {"enabled": "auto"},
        "zero_optimization": _ZERO_SETTINGS[DeepSpeedPreset(preset)](),
    }
