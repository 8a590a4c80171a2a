"""The GPU tier: what only a GPU shows, run where there is one (`make test-gpu` on a machine with an NVIDIA
GPU and the trainer environment); skipped everywhere else, CI included (the test modules skip themselves: a
conftest may not).

The model is random, built here with no download (tests/worker/tinymodel.py at the shape below): large
enough that a step is real work for a GPU, small enough to build and save in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.worker.fixtures import SAMPLE_NER

# About 0.72 billion parameters in bfloat16 (Qwen2, 16 layers of 2048, grouped-query attention).
GPU_SHAPE = {
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 16,
    "num_attention_heads": 16,
    "num_key_value_heads": 4,
    "dtype": "bfloat16",
}
RECORDS = 256


@pytest.fixture(scope="session")
def gpu_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.worker.tinymodel import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("gpu-model") / "model", [SAMPLE_NER], shape=GPU_SHAPE)


@pytest.fixture
def claim(tmp_path: Path, gpu_model: Path) -> Path:
    """The shared claim: the model at models/tiny (where tests/worker/pod.py's FineTuneJob takes it from)
    and RECORDS records made from the sample one."""
    root = tmp_path / "claim"
    (root / "models").mkdir(parents=True)
    (root / "models" / "tiny").symlink_to(gpu_model, target_is_directory=True)
    (root / "datasets").mkdir()
    [sample] = json.loads(SAMPLE_NER.read_text())
    records = [{**sample, "input": sample["input"][: 10 + i % 40]} for i in range(RECORDS)]
    (root / "datasets" / SAMPLE_NER.name).write_text(json.dumps(records, ensure_ascii=False))
    return root
