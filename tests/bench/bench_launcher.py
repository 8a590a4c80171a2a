"""What `kubetune launch` costs over a bare `llamafactory-cli train`: time from the process's start to the
first logged step, and steps per second, on the tiny model, same config, same machine, rounds alternated.

A benchmark, not a test. Run with the trainer environment's interpreter (`make bench-launcher`):

    python -m tests.bench.bench_launcher [--rounds 5] [--steps 400] [--json bench-launcher.json]

The launcher's run is the FineTuneJob's pod as tests/worker plays it (its rendered environment and ConfigMap,
no API server to report to); the bare run is `python -m llamafactory.cli train` on the very config the
launcher handed LLaMA-Factory (read back from the launcher's own copy), into a fresh output directory, with
the same environment less the launcher's variables. The first step is when `trainer_log.jsonl` gets its first
record with a step (LLaMA-Factory writes it at each logging step); steps per second is LLaMA-Factory's own
`train_steps_per_second`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from tests.worker.fixtures import SAMPLE_NER, cpu_env
from tests.worker.pod import finetunejob_body, materialise


def first_step_seconds(process: subprocess.Popen, output_dir: Path, started: float) -> float | None:
    """Seconds from `started` until the run logs its first step; None if it never does."""
    log = output_dir / "trainer_log.jsonl"
    while process.poll() is None:
        try:
            if any('"current_steps"' in line for line in log.read_text().splitlines()):
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.02)
    return None


def timed(argv: list[str], env: dict[str, str], cwd: Path, output_dir: Path, log: Path) -> dict[str, float]:
    with open(log, "wb") as out:
        started = time.monotonic()
        process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        first = first_step_seconds(process, output_dir, started)
        code = process.wait(timeout=1800)
    if code != 0 or first is None:
        raise RuntimeError(f"{argv[:4]} failed ({code}): {log.read_text()[-3000:]}")
    results = json.loads((output_dir / "train_results.json").read_text())
    return {
        "first_step_s": first,
        "steps_per_s": results["train_steps_per_second"],
        "wall_s": time.monotonic() - started,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--json", type=Path, default=Path("bench-launcher.json"))
    args = parser.parse_args(argv)
    from tests.worker.tinymodel import build_tiny_model

    root = Path(tempfile.mkdtemp(prefix="bench-launcher-"))
    claim = root / "claim"
    (claim / "datasets").mkdir(parents=True)
    (claim / "datasets" / SAMPLE_NER.name).write_bytes(SAMPLE_NER.read_bytes())
    build_tiny_model(claim / "models" / "tiny", [SAMPLE_NER])
    config = {"max_steps": args.steps, "save_steps": args.steps * 10, "max_samples": 64}
    runs: dict[str, list[dict[str, float]]] = {"launch": [], "bare": []}
    for round_ in range(args.rounds):
        pod = materialise(
            finetunejob_body(f"bench-{round_}", config), namespace="bench", uid=f"uid-{round_}", claim=claim,
            workdir=root / f"pod-{round_}",
        )  # fmt: skip
        argv = [sys.executable, "-m", "kubetune.cli", pod.command]
        runs["launch"].append(
            timed(argv, pod.env, pod.working_dir, pod.output_dir, root / f"launch-{round_}.log")
        )
        # The config the launcher gave LLaMA-Factory: its copy under /tmp/kubetune-<pid>, the newest.
        copies = sorted(
            Path(tempfile.gettempdir()).glob("kubetune-*/train.yaml"), key=lambda p: p.stat().st_mtime
        )
        train = yaml.safe_load(copies[-1].read_text())
        bare_output = root / f"bare-{round_}"
        train["output_dir"] = str(bare_output)
        train.pop("resume_from_checkpoint", None)
        config_path = root / f"bare-{round_}.yaml"
        config_path.write_text(yaml.safe_dump(train, sort_keys=False))
        env = cpu_env(root / "home")
        runs["bare"].append(
            timed(
                [sys.executable, "-m", "llamafactory.cli", "train", str(config_path)], env, pod.working_dir,
                bare_output, root / f"bare-{round_}.log",
            )
        )  # fmt: skip
        print(json.dumps({k: v[-1] for k, v in runs.items()}))
    summary: dict[str, Any] = {"rounds": args.rounds, "steps": args.steps, "runs": runs}
    for key in ("first_step_s", "steps_per_s"):
        launch = statistics.median(r[key] for r in runs["launch"])
        bare = statistics.median(r[key] for r in runs["bare"])
        summary[key] = {"launch_median": round(launch, 3), "bare_median": round(bare, 3),
                        "difference": round(launch - bare, 3), "ratio": round(launch / bare, 4)}  # fmt: skip
    args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
