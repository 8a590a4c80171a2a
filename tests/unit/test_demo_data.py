"""The demo's FineTuneJob, ModelServe and entity-extraction data (examples/demo) agree with each other."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import yaml

from kubetune.cli import main
from tests.serve import entities

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"
GENERATOR = Path(__file__).resolve().parents[2] / "scripts" / "make_entities_dataset.py"


def generator():
    spec = importlib.util.spec_from_file_location("make_entities_dataset", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_demo_resources_are_valid() -> None:
    for name in ("finetunejob.yaml", "modelserve.yaml"):
        assert main(["validate", "-f", str(DEMO / name)]) == 0


def test_the_finetunejob_carries_the_dataset_info_beside_the_data() -> None:
    job = yaml.safe_load((DEMO / "finetunejob.yaml").read_text())["spec"]
    info = json.loads((DEMO / "data" / "dataset_info.json").read_text())
    assert job["dataset"]["info"] == info
    assert {e["file_name"] for e in info.values()} == {entities.TRAIN.name, entities.HELDOUT.name}
    serve = yaml.safe_load((DEMO / "modelserve.yaml").read_text())["spec"]
    assert (
        serve["adapters"][0]["fineTuneJob"]
        == yaml.safe_load((DEMO / "finetunejob.yaml").read_text())["metadata"]["name"]
    )
    assert (
        job["model"]["source"]
        == serve["model"]["source"]
        == (f"pvc://shared/models/{entities.MODEL_DIR_NAME}")
    )


def test_every_answer_is_the_trained_json_of_entities_in_the_sentence() -> None:
    for path in (entities.TRAIN, entities.HELDOUT):
        for record in json.loads(path.read_text()):
            found = entities.entities(record["output"])
            assert found, record
            assert all(e["text"] in record["input"] for e in found), record


def test_the_held_out_split_shares_no_sentence_and_no_name_with_the_training() -> None:
    train, heldout = (json.loads(p.read_text()) for p in (entities.TRAIN, entities.HELDOUT))
    assert not {r["input"] for r in train} & {r["input"] for r in heldout}
    names = [
        {e["text"].lower() for r in split for e in entities.entities(r["output"])}
        for split in (train, heldout)
    ]
    assert not names[0] & names[1]


def test_the_files_are_what_the_generator_writes() -> None:
    module = generator()
    train = module.split(module.TRAIN_TEMPLATES, module.TRAIN_NAMES, module.TRAIN_SIZE, seed=1)
    assert train == json.loads(entities.TRAIN.read_text())
    heldout = module.split(module.HELDOUT_TEMPLATES, module.HELDOUT_NAMES, module.HELDOUT_SIZE, seed=6)
    assert heldout == json.loads(entities.HELDOUT.read_text())
