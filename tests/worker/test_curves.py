"""Loss curves from a real run: LLaMA-Factory on the tiny model, evaluating every few steps, reporting into a
real FineTuneJob on the local control plane with the launcher's scoped token; then `kubetune plot`.

Run with the trainer environment's interpreter (`make test-worker`); skipped where LLaMA-Factory is not
installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("llamafactory")

from kubernetes import client

from kubetune.status import curves
from tests.cluster import localcluster
from tests.unit.test_plot import png_size
from tests.worker.pod import REPO, finetunejob_body, materialise, trainer_log
from tests.worker.test_launcher import GROUP, PLURAL, VERSION, scoped_kubeconfig

STEPS, EVAL_STEPS, SAVE_STEPS = 240, 20, 40  # more logged steps than the history holds


def test_a_run_with_evaluations_fills_a_bounded_history_that_kubetune_plot_draws(
    cluster: localcluster.ClusterInfo,
    crds: None,
    api: client.ApiClient,
    namespace: str,
    claim: Path,
    tmp_path: Path,
) -> None:
    body = finetunejob_body(
        "curves",
        config={
            "max_steps": STEPS,
            "logging_steps": 1,
            "save_steps": SAVE_STEPS,
            "eval_strategy": "steps",
            "eval_steps": EVAL_STEPS,
            "per_device_eval_batch_size": 1,
        },
    )
    body["spec"]["dataset"]["evalNames"] = ["sample_ner"]
    created, kubeconfig = scoped_kubeconfig(cluster, api, namespace, body, tmp_path / "launcher.kubeconfig")
    pod = materialise(
        body, namespace=namespace, uid=created["metadata"]["uid"], claim=claim, workdir=tmp_path,
        kubeconfig=kubeconfig,
    )  # fmt: skip
    assert pod.run(tmp_path / "pod.log", timeout=900) == 0, (tmp_path / "pod.log").read_text()[-3000:]
    records = trainer_log(pod.output_dir)
    evaluated = [r["current_steps"] for r in records if "eval_loss" in r]
    assert evaluated == list(range(EVAL_STEPS, STEPS + 1, EVAL_STEPS)), "LLaMA-Factory evaluated as asked"

    status = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "curves"
    )["status"]
    progress = status["progress"]
    history = progress["history"]
    # Train and eval points, within the bound although the run logged more steps than that.
    assert len([r for r in records if "loss" in r]) == STEPS > curves.HISTORY_LIMIT
    assert len(history) == curves.HISTORY_LIMIT
    assert history[0]["step"] == 1 and history[-1]["step"] == STEPS
    assert [p["step"] for p in curves.evaluations(history)] == evaluated
    assert all(isinstance(p["loss"], float) for p in history), "every point has the training loss"
    assert [p["step"] for p in history if p.get("checkpoint")] == list(
        range(SAVE_STEPS, STEPS + 1, SAVE_STEPS)
    )
    best = min((r for r in records if "eval_loss" in r), key=lambda r: r["eval_loss"])
    assert progress["bestEvalStep"] == best["current_steps"]
    assert progress["bestEvalLoss"] == pytest.approx(best["eval_loss"], rel=1e-3)  # 4 significant digits
    assert len(json.dumps(progress)) < 30 * 1024, "the status stays small"

    # `kubetune plot` reads the FineTuneJob from the API server and writes the PNG.
    png = tmp_path / "plot" / "curves.png"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), str(REPO)])}
    out = subprocess.run(
        [sys.executable, "-m", "kubetune.cli", "plot", "ftj/curves", "-n", namespace, "-o", str(png),
         "--kubeconfig", cluster.kubeconfig],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert png_size(png) == (1200, 700)
    assert f"best eval loss {progress['bestEvalLoss']:.4g} at step {progress['bestEvalStep']}" in out.stdout
