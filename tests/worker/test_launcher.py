"""The launcher running the real LLaMA-Factory on the CPU, exactly as a trainer pod would.

Run with the trainer environment's interpreter (`make test-worker`); skipped where LLaMA-Factory is not
installed. The model is a tiny random Qwen2 that the test builds itself.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("llamafactory")

from kubernetes import client

from tests.cluster import localcluster
from tests.kube import wait_until
from tests.worker.pod import REPO, finetunejob_body, materialise, scoped_kubeconfig, trainer_log

GROUP, VERSION, PLURAL = "kubetune.io", "v1alpha1", "finetunejobs"


def test_lora_sft_reports_progress_merges_and_predicts(
    cluster: localcluster.ClusterInfo,
    crds: None,
    api: client.ApiClient,
    namespace: str,
    claim: Path,
    tmp_path: Path,
) -> None:
    body = finetunejob_body(
        "ner-tiny",
        postTraining={
            "merge": {},
            "predict": {"datasets": ["sample_ner"], "maxSamples": 1, "maxNewTokens": 8},
        },
    )
    created, kubeconfig = scoped_kubeconfig(cluster, api, namespace, body, tmp_path / "launcher.kubeconfig")
    pod = materialise(
        body, namespace=namespace, uid=created["metadata"]["uid"], claim=claim, workdir=tmp_path,
        kubeconfig=kubeconfig,
    )  # fmt: skip

    assert pod.run(tmp_path / "pod.log") == 0, (tmp_path / "pod.log").read_text()[-3000:]

    # The adapter where the FineTuneJob's status says it is, readable by vLLM's user (not the trainer's).
    assert (pod.output_dir / "adapter_model.safetensors").is_file()
    assert all(p.stat().st_mode & 0o444 == 0o444 for p in pod.output_dir.rglob("*")), "readable by all"
    assert (pod.output_dir / "merged" / "model.safetensors").stat().st_mode & 0o004
    assert json.loads((pod.output_dir / "adapter_config.json").read_text())["r"] == 8
    assert [r["current_steps"] for r in trainer_log(pod.output_dir) if "loss" in r] == [1, 2, 3, 4]

    # Progress and metrics reached the real FineTuneJob, sent with the launcher's own scoped token.
    status = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "ner-tiny"
    )["status"]
    assert status["progress"]["step"] == 4
    assert status["progress"]["totalSteps"] == 4
    assert status["progress"]["display"].startswith("4/4 100%")
    assert isinstance(status["progress"]["loss"], float)
    assert "train_loss" in status["metrics"]["train"]
    assert {"predict_bleu-4", "predict_rouge-l"} <= status["metrics"]["predict"].keys()

    # The merged model loads with transformers.
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(pod.output_dir / "merged")
    assert merged.config.num_hidden_layers == 2
    assert (pod.output_dir / "predict" / "generated_predictions.jsonl").is_file()


def test_the_launchers_token_can_touch_only_its_own_status(
    cluster: localcluster.ClusterInfo, crds: None, api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, finetunejob_body("other"))
    _, kubeconfig = scoped_kubeconfig(cluster, api, namespace, finetunejob_body("mine"), tmp_path / "kc")
    from kubernetes import config as kube_config
    from kubernetes.client.rest import ApiException

    scoped = client.CustomObjectsApi(kube_config.new_client_from_config(config_file=str(kubeconfig)))
    scoped.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "mine", {"status": {"progress": {"step": 1}}}
    )
    for attempt in (
        lambda: scoped.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, "other", {"status": {"progress": {"step": 1}}}
        ),
        lambda: scoped.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "mine", {"spec": {"suspend": True}}
        ),
        lambda: scoped.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL),
    ):
        with pytest.raises(ApiException) as refused:
            attempt()
        assert refused.value.status == 403


def test_killed_after_a_checkpoint_the_next_attempt_resumes(claim: Path, tmp_path: Path) -> None:
    body = finetunejob_body("resumable", config={"max_steps": 400, "save_steps": 20, "logging_steps": 5})
    first = materialise(body, namespace="team-a", uid="u", claim=claim, workdir=tmp_path, attempt=1)
    process = first.start(tmp_path / "attempt-1.log")
    wait_until(
        lambda: (
            (first.output_dir / "checkpoint-20" / "trainer_state.json").exists() or process.poll() is not None
        ),
        "the first checkpoint",
        timeout=240,
    )
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signal.SIGTERM)  # what the kubelet does to a pod on a dying node
    code = process.wait(timeout=120)
    assert code != 0
    assert first.termination_message().startswith("killed by SIGTERM")
    steps_before = max(r["current_steps"] for r in trainer_log(first.output_dir))
    assert steps_before < 400

    second = materialise(body, namespace="team-a", uid="u", claim=claim, workdir=tmp_path, attempt=2)
    assert second.output_dir == first.output_dir, "every attempt writes to the same output path"
    assert second.run(tmp_path / "attempt-2.log") == 0, (tmp_path / "attempt-2.log").read_text()[-3000:]
    log = (tmp_path / "attempt-2.log").read_text()
    assert "attempt 2: resuming from checkpoint-" in log
    steps = [r["current_steps"] for r in trainer_log(second.output_dir) if "loss" in r]
    resumed_from = int(log.split("resuming from checkpoint-")[1].split()[0])
    second_run = steps[steps.index(steps_before) + 1 :] if steps_before in steps else steps
    assert min(second_run) > resumed_from, "the step count continues from the checkpoint"
    assert max(steps) == 400
    assert (second.output_dir / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize(
    ("breakage", "reason_starts", "names"),
    [
        ("missing-file", "dataset error:", "sample-ner.json"),
        ("unknown-dataset", "dataset error:", "not_in_info"),
    ],
)
def test_a_config_error_ends_with_a_clear_termination_message(
    claim: Path, tmp_path: Path, breakage: str, reason_starts: str, names: str
) -> None:
    body = finetunejob_body("broken")
    pod = materialise(body, namespace="team-a", uid="u", claim=claim, workdir=tmp_path)
    if breakage == "missing-file":
        (claim / "datasets" / "sample-ner.json").unlink()
    else:  # a config the operator could not have checked: edited in the pod
        config = pod.config_dir / "llamafactory.yaml"
        config.write_text(config.read_text().replace("dataset: sample_ner", "dataset: not_in_info"))

    code = pod.run(tmp_path / "pod.log", timeout=300)
    assert code != 0
    message = pod.termination_message()
    assert message.startswith(reason_starts), message
    assert names in message
    assert "\n" not in message and "Traceback" not in message


def test_a_finished_output_is_never_overwritten(claim: Path, tmp_path: Path) -> None:
    body = finetunejob_body("done-before")
    pod = materialise(body, namespace="team-a", uid="u", claim=claim, workdir=tmp_path)
    pod.output_dir.mkdir(parents=True)
    (pod.output_dir / "adapter_model.safetensors").write_bytes(b"last week's adapter")
    started = time.monotonic()
    assert pod.run(tmp_path / "pod.log", timeout=120) == 2
    assert time.monotonic() - started < 60, "refused before loading anything"
    assert "spec.storage.path" in pod.termination_message()
    assert (pod.output_dir / "adapter_model.safetensors").read_bytes() == b"last week's adapter"


def test_launch_outside_a_pod_says_so() -> None:
    import sys

    # No pod's environment at all; kubetune from this checkout (the environment's editable install may
    # point at another one).
    env = {"PYTHONPATH": str(REPO / "operator")}
    out = subprocess.run(
        [sys.executable, "-m", "kubetune.cli", "launch"], capture_output=True, text=True, env=env
    )
    assert out.returncode == 2
    assert "KUBETUNE_OUTPUT_DIR" in out.stderr
