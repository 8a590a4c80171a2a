"""Tokenize once, on CPU, before the GPUs are held (spec.dataset.preprocess), with the real LLaMA-Factory.

The preprocessing pod (`kubetune preprocess`, rendered by the operator's preprocess_job) writes the
tokenized dataset into the cache on the claim; the training pod that follows loads it (LLaMA-Factory's own
log line says so) and trains the same steps as a run that tokenized for itself. A second job with the same
inputs finds the dataset in the cache; a changed dataset file gets a new one.

Run with the trainer environment's interpreter (`make test-worker`); skipped where LLaMA-Factory is not
installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("llamafactory")

from tests.worker.fixtures import SAMPLE_NER
from tests.worker.pod import finetunejob_body, materialise, trainer_log

NAMESPACE = "prep"
UID = "00000000-0000-0000-0000-0000000000aa"
PREPROCESS = {"enabled": True, "resources": {"cpu": "2", "memory": "4Gi"}}
# Whole epochs, so that the number of steps follows from the dataset the training sees.
EPOCHS = {"max_steps": -1, "num_train_epochs": 1.0, "save_steps": 100}
TOKENIZED_BY_ITSELF = "Running tokenizer on dataset"
LOADED = "Loaded tokenized dataset from"


@pytest.fixture
def claim(tmp_path: Path, tiny_model: Path) -> Path:
    root = tmp_path / "claim"
    (root / "models").mkdir(parents=True)
    (root / "models" / "tiny").symlink_to(tiny_model, target_is_directory=True)
    (root / "datasets").mkdir()
    (root / "datasets" / SAMPLE_NER.name).write_text(json.dumps(records(20), ensure_ascii=False))
    return root


def records(count: int) -> list[dict]:
    """`count` records made from the sample one (its input cut at a different place each time)."""
    [sample] = json.loads(SAMPLE_NER.read_text())
    return [{**sample, "input": sample["input"][: 10 + i]} for i in range(count)]


def body(name: str, **config: object) -> dict:
    job = finetunejob_body(name, {**EPOCHS, **config})
    job["spec"]["dataset"]["preprocess"] = PREPROCESS
    return job


def preprocess(job: dict, claim: Path, workdir: Path) -> tuple[int, str, str]:
    pod = materialise(job, namespace=NAMESPACE, uid=UID, claim=claim, workdir=workdir, preprocess_pod=True)
    assert pod.command == "preprocess"
    code = pod.run(workdir / "preprocess.log")
    return code, (workdir / "preprocess.log").read_text(), pod.termination_message()


def train(job: dict, claim: Path, workdir: Path, preprocessed: bool) -> tuple[int, str, Path]:
    pod = materialise(
        job, namespace=NAMESPACE, uid=UID, claim=claim, workdir=workdir, preprocessed=preprocessed
    )
    code = pod.run(workdir / "train.log")
    return code, (workdir / "train.log").read_text(), pod.output_dir


def steps(output_dir: Path) -> list[int]:
    return [r["current_steps"] for r in trainer_log(output_dir) if "loss" in r]


def cached(claim: Path) -> list[Path]:
    cache = claim / ".kubetune" / "tokenized"
    return sorted(p for p in cache.iterdir() if not p.name.startswith(".")) if cache.is_dir() else []


def test_the_training_loads_what_preprocessing_tokenized_and_trains_the_same_steps(
    claim: Path, tmp_path: Path
) -> None:
    code, log, message = preprocess(body("prep"), claim, tmp_path / "pre")
    assert code == 0, log[-3000:]
    assert message.startswith("tokenized the datasets"), message
    [entry] = cached(claim)
    assert (entry / "train" / "dataset_info.json").is_file() and (entry / ".kubetune-complete").is_file()
    assert "Training" not in log and "train_loss" not in log, "preprocessing stops before training"
    assert not (claim / "runs" / NAMESPACE / "prep" / "trainer_log.jsonl").exists()
    link = claim / "runs" / NAMESPACE / "prep" / ".kubetune" / "tokenized"
    assert link.resolve() == entry.resolve()

    code, log, output = train(body("prep"), claim, tmp_path / "train", preprocessed=True)
    assert code == 0, log[-3000:]
    assert f"{LOADED} /" in log and TOKENIZED_BY_ITSELF not in log
    with_preprocessing = steps(output)

    code, log, output = train(
        finetunejob_body("plain", EPOCHS), claim, tmp_path / "plain", preprocessed=False
    )
    assert code == 0, log[-3000:]
    assert TOKENIZED_BY_ITSELF in log and LOADED not in log
    assert with_preprocessing == steps(output) == list(range(1, 9)), "max_samples 16, 2 per step, 1 epoch"


def test_the_same_inputs_reuse_the_cache_and_a_changed_dataset_file_does_not(
    claim: Path, tmp_path: Path
) -> None:
    code, log, message = preprocess(body("first"), claim, tmp_path / "first")
    assert code == 0, log[-3000:]
    [entry] = cached(claim)

    # Another job, the same inputs: nothing to tokenize.
    code, log, message = preprocess(body("second"), claim, tmp_path / "second")
    assert code == 0, log[-3000:]
    assert message.startswith("found the tokenized dataset in the cache"), message
    assert TOKENIZED_BY_ITSELF not in log
    assert cached(claim) == [entry]
    assert (claim / "runs" / NAMESPACE / "second" / ".kubetune" / "tokenized").resolve() == entry.resolve()

    # The dataset file changes: a new entry, and the old one is left for jobs that still use it.
    records = json.loads((claim / "datasets" / SAMPLE_NER.name).read_text())
    (claim / "datasets" / SAMPLE_NER.name).write_text(json.dumps(records[:-1]))
    code, log, message = preprocess(body("third"), claim, tmp_path / "third")
    assert code == 0, log[-3000:]
    assert message.startswith("tokenized the datasets"), message
    assert len(cached(claim)) == 2 and entry in cached(claim)

    # So does a data argument.
    code, log, message = preprocess(body("fourth", cutoff_len=64), claim, tmp_path / "fourth")
    assert code == 0 and message.startswith("tokenized the datasets"), log[-3000:]
    assert len(cached(claim)) == 3


def test_a_users_own_tokenized_path_is_filled_where_it_says(claim: Path, tmp_path: Path) -> None:
    job = body("own", tokenized_path="saves/tok")
    code, log, _ = preprocess(job, claim, tmp_path / "pre")
    assert code == 0, log[-3000:]
    assert (claim / "saves" / "tok" / "dataset_dict.json").is_file()
    assert cached(claim) == []

    code, log, _ = train(job, claim, tmp_path / "train", preprocessed=True)
    assert code == 0, log[-3000:]
    assert f"{LOADED} saves/tok" in log


def test_a_dataset_error_fails_preprocessing_with_llamafactorys_message(claim: Path, tmp_path: Path) -> None:
    job = body("broken")
    entry = job["spec"]["dataset"]["info"]["sample_ner"]
    job["spec"]["dataset"]["info"]["sample_ner"] = {**entry, "file_name": "missing.json"}
    code, _, message = preprocess(job, claim, tmp_path / "pre")
    assert code != 0
    assert message.startswith("dataset error: "), message
    assert "missing.json" in message, message
    assert cached(claim) == []
