"""Helpers for the worker tier: the sample data set, a LoRA SFT config for the tiny model, and running
LLaMA-Factory's CLI from the trainer's interpreter on the CPU.

Test modules import these after `pytest.importorskip("llamafactory")`; this module itself imports neither
llamafactory nor kubetune.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REFERENCE = Path(__file__).parents[1] / "data" / "reference"
SAMPLE_NER = REFERENCE / "sample-ner.json"
SAMPLE_DATASET = "sample_ner"

# LLaMA-Factory's launcher would start torchrun for these, or for more than one visible accelerator.
_LAUNCH_VARIABLES = ("FORCE_TORCHRUN", "USE_MCA", "NNODES", "NODE_RANK", "NPROC_PER_NODE", "RDZV_ID")


def write_dataset(dataset_dir: Path, source: Path = SAMPLE_NER, name: str = SAMPLE_DATASET) -> str:
    """Copy an alpaca-style file into `dataset_dir` with its dataset_info.json entry; return its name."""
    dataset_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, dataset_dir / source.name)
    info = {
        name: {
            "file_name": source.name,
            "formatting": "alpaca",
            "columns": {"prompt": "instruction", "query": "input", "response": "output"},
        }
    }
    (dataset_dir / "dataset_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    return name


def lora_sft_config(model_dir: Path, dataset_dir: Path, output_dir: Path, **overrides: Any) -> dict[str, Any]:
    """A LoRA SFT run of 4 steps on the CPU, saving at steps 2 and 4."""
    config: dict[str, Any] = {
        "model_name_or_path": str(model_dir),
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "lora",
        "lora_target": "all",
        "lora_rank": 8,
        "dataset_dir": str(dataset_dir),
        "dataset": SAMPLE_DATASET,
        "template": "qwen",
        "cutoff_len": 128,
        "max_samples": 16,
        "overwrite_cache": True,
        "preprocessing_num_workers": 1,
        "dataloader_num_workers": 0,
        "output_dir": str(output_dir),
        "overwrite_output_dir": True,
        "logging_steps": 1,
        "save_steps": 2,
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "learning_rate": 1.0e-3,
        "max_steps": 4,
        "bf16": False,
        "fp16": False,
        "use_cpu": True,
        "report_to": "none",
        "seed": 42,
    }
    config.update(overrides)
    return config


def cpu_env(home: Path) -> dict[str, str]:
    """The environment for a single-process CPU run: no torchrun, no GPU, no hub, caches under `home`."""
    env = {key: value for key, value in os.environ.items() if key not in _LAUNCH_VARIABLES}
    env.update(
        {
            "CUDA_VISIBLE_DEVICES": "",
            "HF_HOME": str(home / "hf"),
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def run_llamafactory(
    command: str, config: dict[str, Any], workdir: Path, timeout: float = 280
) -> subprocess.CompletedProcess[str]:
    """Write `config` as YAML into `workdir`; run `llamafactory-cli <command>` on it with this interpreter."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / f"{command}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "llamafactory.cli", command, str(config_path)],
        cwd=workdir,
        env=cpu_env(workdir),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
