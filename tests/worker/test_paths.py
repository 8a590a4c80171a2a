"""Relative paths in a pasted config land on the claim, as they did by hand (the real LLaMA-Factory, CPU).

The trainer pod runs in its working directory on the claim (`spec.storage.workingDir`, default the claim's
root), so `tokenized_path: saves/tok` is written to the claim and a later job finds it there; and
`media_dir` is the dataset's directory on the claim, so the images a record names by relative path are
found (LLaMA-Factory's default, media_dir = dataset_dir, would look in the ConfigMap's mount).

Run with the trainer environment's interpreter (`make test-worker`); skipped where LLaMA-Factory is not
installed.
"""

from __future__ import annotations

import json
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

pytest.importorskip("llamafactory")

from tests.worker.fixtures import SAMPLE_NER
from tests.worker.pod import finetunejob_body, materialise, trainer_log

NAMESPACE = "paths"
UID = "00000000-0000-0000-0000-00000000cafe"


def test_a_relative_tokenized_path_stays_on_the_claim_and_a_second_job_loads_it(
    claim: Path, tmp_path: Path
) -> None:
    config = {"tokenized_path": "saves/tok/sample_ner"}
    body = finetunejob_body("tokenize", config)
    first = materialise(body, namespace=NAMESPACE, uid=UID, claim=claim, workdir=tmp_path / "a")
    assert first.working_dir == claim
    assert first.run(tmp_path / "first.log") == 0, (tmp_path / "first.log").read_text()[-3000:]
    tokenized = claim / "saves" / "tok" / "sample_ner"
    assert (tokenized / "dataset_dict.json").is_file(), "the tokenized dataset is on the claim"

    # The second job cannot read the raw data: it trains from what the first one left on the claim.
    (claim / "datasets" / SAMPLE_NER.name).unlink()
    second = materialise(
        finetunejob_body("reuse", config), namespace=NAMESPACE, uid=UID, claim=claim, workdir=tmp_path / "b"
    )
    assert second.run(tmp_path / "second.log") == 0, (tmp_path / "second.log").read_text()[-3000:]
    assert "Loaded tokenized dataset from saves/tok/sample_ner" in (tmp_path / "second.log").read_text()
    assert [r["current_steps"] for r in trainer_log(second.output_dir) if "loss" in r] == [1, 2, 3, 4]


def _png(path: Path) -> None:
    """A 1x1 white PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\xff\xff")
    path.parent.mkdir(parents=True, exist_ok=True)
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)


# Loads the datasets exactly as `llamafactory-cli train` does before tokenizing (argument parsing, dataset
# list, file loading, alignment), from the pod's working directory, and prints the images of the records.
_LOAD = """
import inspect, json, sys, yaml
from llamafactory.data import loader
from llamafactory.hparams import get_train_args
config = yaml.safe_load(open(sys.argv[1]))
model_args, data_args, training_args, finetuning_args, _ = get_train_args(config)
merged = loader._get_merged_dataset
wanted = inspect.signature(merged).parameters
args = {"model_args": model_args, "data_args": data_args, "training_args": training_args,
        "stage": finetuning_args.stage}
dataset = merged(data_args.dataset, **{k: v for k, v in args.items() if k in wanted})
print(json.dumps([row["_images"] for row in dataset]))
"""


@pytest.mark.parametrize(
    ("media_dir", "images_at"),
    [(None, "datasets"), ("media", "media")],
    ids=["default-dataset-dir", "relative-to-the-working-directory"],
)
def test_images_named_by_relative_path_are_found_on_the_claim(
    claim: Path, tmp_path: Path, media_dir: str | None, images_at: str
) -> None:
    _png(claim / images_at / "images" / "dot.png")
    records = [
        {"instruction": "<image>What is in the picture?", "input": "", "output": "a white dot", "images": [p]}
        for p in ["images/dot.png", "images/dot.png"]
    ]
    (claim / "datasets" / "pictures.json").write_text(json.dumps(records))
    info = {
        "pictures": {
            "file_name": "pictures.json",
            "formatting": "alpaca",
            "columns": {"prompt": "instruction", "query": "input", "response": "output", "images": "images"},
        }
    }
    body = finetunejob_body("pictures", {"media_dir": media_dir} if media_dir else {})
    body["spec"]["dataset"] = {"names": ["pictures"], "dir": "datasets", "info": info}
    pod = materialise(body, namespace=NAMESPACE, uid=UID, claim=claim, workdir=tmp_path / "pod")

    done = subprocess.run(
        [pod.python, "-c", _LOAD, str(pod.config_dir / "llamafactory.yaml")],
        env=pod.env,
        cwd=pod.working_dir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    images = json.loads(done.stdout.strip().splitlines()[-1])
    expected = claim / images_at / "images" / "dot.png"
    # As LLaMA-Factory resolves them: an absolute path, or one relative to the working directory.
    assert [(pod.working_dir / p).resolve() for row in images for p in row] == [expected.resolve()] * 2
    assert "does not exist in `media_dir`" not in done.stderr
