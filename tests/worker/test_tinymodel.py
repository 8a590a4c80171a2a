"""The tiny model is something LLaMA-Factory fine-tunes: a 4-step LoRA SFT run on the CPU with the qwen
template, saving at steps 2 and 4, from the trainer's interpreter (skipped where llamafactory is missing)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("llamafactory")

from tests.worker.fixtures import SAMPLE_NER, lora_sft_config, run_llamafactory, write_dataset
from tests.worker.tinymodel import build_tiny_model


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    started = time.monotonic()
    model = build_tiny_model(tmp_path_factory.mktemp("tiny-model"), [SAMPLE_NER])
    print(f"\nbuild_tiny_model: {time.monotonic() - started:.1f}s")
    return model


def test_tiny_model_files(tiny_model: Path) -> None:
    names = {path.name for path in tiny_model.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    config = json.loads((tiny_model / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"]
    assert 256 < config["vocab_size"] <= 2048
    tokenizer_config = json.loads((tiny_model / "tokenizer_config.json").read_text())
    assert tokenizer_config["eos_token"] == "<|im_end|>"
    assert tokenizer_config["pad_token"] == "<|endoftext|>"


def test_llamafactory_lora_sft_on_cpu(tiny_model: Path, tmp_path: Path) -> None:
    dataset_dir = tmp_path / "data"
    write_dataset(dataset_dir)
    output_dir = tmp_path / "out"
    config = lora_sft_config(tiny_model, dataset_dir, output_dir)

    started = time.monotonic()
    result = run_llamafactory("train", config, tmp_path / "run")
    print(f"\nllamafactory train: {time.monotonic() - started:.1f}s")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]

    assert (output_dir / "adapter_model.safetensors").is_file()
    assert (output_dir / "adapter_config.json").is_file()
    for step in (2, 4):
        assert (output_dir / f"checkpoint-{step}" / "adapter_model.safetensors").is_file()
    lines = [json.loads(line) for line in (output_dir / "trainer_log.jsonl").read_text().splitlines()]
    # One line per logging step, then one at the end of training that has no loss.
    logged = [line for line in lines if "loss" in line]
    assert [line["current_steps"] for line in logged] == [1, 2, 3, 4]
    assert all(line["total_steps"] == 4 and line["loss"] > 0 for line in logged)
    assert lines[-1]["current_steps"] == 4
    assert json.loads((output_dir / "all_results.json").read_text())["train_loss"] > 0
