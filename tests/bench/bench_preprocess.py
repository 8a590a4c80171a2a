"""Seconds from the training process's start to its first step, with and without preprocessing.

    ~/.cache/kubetune/trainer-venv/bin/python -m tests.bench.bench_preprocess --records 50000 [--json FILE]

On this machine, with the real LLaMA-Factory on the tiny model (tests/worker/tinymodel.py) and a generated
alpaca dataset of N records (the sample record with its input cut at a different place each time), the
FineTuneJob's pods are materialised as the worker tier does (tests/worker/pod.py):

without   the trainer pod alone: LLaMA-Factory tokenizes, then trains;
with      the preprocessing pod (`kubetune preprocess`) first, then the trainer pod, whose config names
          the tokenized dataset: the time the GPUs would be held starts only then.

Each time is from the trainer process's start to the moment trainer_log.jsonl has its first step (logging
every step). The preprocessing pod's own time and that of a second preprocessing with the same inputs
(found in the cache) are reported too. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from tests.worker.fixtures import SAMPLE_NER
from tests.worker.pod import finetunejob_body, materialise
from tests.worker.tinymodel import build_tiny_model

UID = "00000000-0000-0000-0000-0000000000be"


def dataset(count: int) -> list[dict]:
    [sample] = json.loads(SAMPLE_NER.read_text())
    text = sample["input"] * 4
    return [{**sample, "input": text[: 10 + i % (len(text) - 10)]} for i in range(count)]


def first_step_seconds(pod, log: Path, timeout: float) -> float:
    """Starts the pod's process and returns the seconds until its first logged step; then stops it."""
    started = time.monotonic()
    process = pod.start(log)
    trainer_log = pod.output_dir / "trainer_log.jsonl"
    try:
        while time.monotonic() - started < timeout:
            if trainer_log.exists() and '"current_steps"' in trainer_log.read_text():
                return time.monotonic() - started
            if process.poll() is not None:
                raise RuntimeError(f"the trainer exited with {process.returncode}: see {log}")
            time.sleep(0.2)
        raise TimeoutError(f"no step within {timeout}s: see {log}")
    finally:
        process.terminate()
        process.wait(timeout=120)


def run(records: int, workers: int, timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="kubetune-bench-preprocess-") as scratch:
        root = Path(scratch)
        claim = root / "claim"
        (claim / "datasets").mkdir(parents=True)
        (claim / "models").mkdir()
        (claim / "datasets" / SAMPLE_NER.name).write_text(json.dumps(dataset(records), ensure_ascii=False))
        build_tiny_model(claim / "models" / "tiny", [SAMPLE_NER])
        config = {
            "max_samples": None,
            "preprocessing_num_workers": workers,
            "cutoff_len": 256,
            "max_steps": 2,
            "save_steps": 100,
        }

        def body(name: str, preprocess: bool) -> dict:
            job = finetunejob_body(name, config)
            job["spec"]["config"] = {k: v for k, v in job["spec"]["config"].items() if v is not None}
            if preprocess:
                job["spec"]["dataset"]["preprocess"] = {"enabled": True}
            return job

        def pod(name: str, preprocess: bool, **kinds: bool):
            return materialise(
                body(name, preprocess), namespace="bench", uid=UID, claim=claim, workdir=root / name, **kinds
            )

        without = first_step_seconds(pod("without", False), root / "without.log", timeout)

        started = time.monotonic()
        assert pod("with", True, preprocess_pod=True).run(root / "preprocess.log", timeout=timeout) == 0
        preprocessing = time.monotonic() - started
        started = time.monotonic()
        assert pod("again", True, preprocess_pod=True).run(root / "again.log", timeout=timeout) == 0
        cached = time.monotonic() - started
        with_preprocessing = first_step_seconds(
            pod("with", True, preprocessed=True), root / "with.log", timeout
        )
        return {
            "records": records,
            "preprocessing_num_workers": workers,
            "first_step_seconds_without_preprocessing": round(without, 1),
            "first_step_seconds_with_preprocessing": round(with_preprocessing, 1),
            "preprocessing_job_seconds": round(preprocessing, 1),
            "preprocessing_job_seconds_cached": round(cached, 1),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=1, help="preprocessing_num_workers")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run(args.records, args.workers, args.timeout)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
