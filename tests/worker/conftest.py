"""The worker tier: the in-pod launcher running the real LLaMA-Factory on the CPU with a tiny model
that the test builds itself (no weights are downloaded).

The fixtures every worker test shares: the tiny model (built once per session) and the claim that holds
it and the sample dataset where a FineTuneJob says they are.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.worker.fixtures import SAMPLE_NER


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.worker.tinymodel import build_tiny_model  # torch and transformers: the trainer's interpreter

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny", [SAMPLE_NER])


@pytest.fixture
def claim(tmp_path: Path, tiny_model: Path) -> Path:
    """The shared claim: the base model and the dataset where the FineTuneJob says they are."""
    root = tmp_path / "claim"
    (root / "models").mkdir(parents=True)
    (root / "models" / "tiny").symlink_to(tiny_model, target_is_directory=True)
    (root / "datasets").mkdir()
    (root / "datasets" / SAMPLE_NER.name).write_bytes(SAMPLE_NER.read_bytes())
    return root
