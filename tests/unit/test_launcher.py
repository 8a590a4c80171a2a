"""The launcher's decisions: the command it runs, how it resumes, what it reports, why it failed."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from kubetune.launcher import compiled_ops, plan
from kubetune.launcher.progress import Reporter, duration_words, last_training_record, progress_from_record
from kubetune.launcher.reasons import termination_reason


def pod_env(tmp_path: Path, **env: str) -> plan.PodEnvironment:
    return plan.PodEnvironment.from_env(
        {"KUBETUNE_OUTPUT_DIR": str(tmp_path / "out"), "KUBETUNE_CONFIG_DIR": str(tmp_path / "cfg"), **env}
    )


# --- the command -----------------------------------------------------------------------------------


def test_gpu_pods_run_torchrun_over_llamafactorys_launcher(tmp_path: Path) -> None:
    env = pod_env(
        tmp_path,
        NNODES="2", NODE_RANK="1", NPROC_PER_NODE="8", KUBETUNE_GPUS_PER_NODE="8",
        MASTER_ADDR="ner-a1-0.ner-workers.team-a.svc", MASTER_PORT="29500",
    )  # fmt: skip
    argv = plan.training_command(env, Path("/tmp/train.yaml"), python="python")
    assert argv == [
        "python", "-m", "torch.distributed.run",
        "--nnodes", "2", "--node_rank", "1", "--nproc_per_node", "8",
        "--master_addr", "ner-a1-0.ner-workers.team-a.svc", "--master_port", "29500",
        "-m", "kubetune.launcher.rank", "/tmp/train.yaml",
    ]  # fmt: skip
    assert not env.is_leader


def test_a_cpu_pod_runs_one_process(tmp_path: Path) -> None:
    env = pod_env(tmp_path, NNODES="1", NODE_RANK="0", NPROC_PER_NODE="1", KUBETUNE_GPUS_PER_NODE="0")
    assert plan.training_command(env, Path("/tmp/t.yaml"), python="py") == [
        "py", "-m", "kubetune.launcher.rank", "/tmp/t.yaml"
    ]  # fmt: skip
    assert env.is_leader


@pytest.mark.parametrize(
    ("nodes", "processes", "deepspeed", "nproc"),
    [("2", "1", False, "1"), ("1", "2", False, "2"), ("1", "1", True, "1"), ("2", "2", True, "2")],
    ids=["2x1", "1x2", "1x1-deepspeed", "2x2-deepspeed"],
)
def test_a_cpu_rehearsal_runs_torchrun_as_on_gpus(
    tmp_path: Path, nodes: str, processes: str, deepspeed: bool, nproc: str
) -> None:
    # Several nodes or processes need torchrun; so does DeepSpeed, which refuses a process it did not start.
    env = pod_env(
        tmp_path, NNODES=nodes, NODE_RANK="0", NPROC_PER_NODE=processes, KUBETUNE_GPUS_PER_NODE="0",
        MASTER_ADDR="r-a1-0.r-workers.team-a.svc", MASTER_PORT="29500",
    )  # fmt: skip
    argv = plan.training_command(env, Path("/tmp/t.yaml"), python="py", deepspeed=deepspeed)
    assert argv[:3] == ["py", "-m", "torch.distributed.run"]
    assert argv[argv.index("--nnodes") + 1] == nodes
    assert argv[argv.index("--nproc_per_node") + 1] == nproc


def test_the_rendezvous_timeout_is_torchruns_unless_set(tmp_path: Path) -> None:
    nodes = {"NNODES": "2", "KUBETUNE_GPUS_PER_NODE": "0"}
    assert "--rdzv_conf" not in plan.training_command(pod_env(tmp_path, **nodes), Path("t.yaml"))
    env = pod_env(tmp_path, **nodes, KUBETUNE_RENDEZVOUS_TIMEOUT="30")
    argv = plan.training_command(env, Path("t.yaml"))
    assert argv[argv.index("--rdzv_conf") + 1] == "timeout=30"


def test_child_environment_sets_what_llamafactory_cli_would_and_the_user_wins(tmp_path: Path) -> None:
    env = pod_env(tmp_path)
    child = plan.child_environment(env, {"NCCL_DEBUG": "INFO", "PATH": "/bin"})
    assert child["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert child["TORCH_NCCL_AVOID_RECORD_STREAMS"] == "1"
    assert child["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"
    assert child["NCCL_DEBUG"] == "INFO"
    assert child["PATH"] == "/bin"


# --- compiled DeepSpeed ops ------------------------------------------------------------------------


def test_compiled_ops_go_to_the_claim_under_this_pods_key(tmp_path: Path) -> None:
    env = pod_env(tmp_path, KUBETUNE_TORCH_EXTENSIONS="/mnt/claim/.kubetune/torch-extensions/img-1")
    child = plan.child_environment(env, {}, "py311_torch-2.11.0_deepspeed-0.19.8_cpu")
    expected = "/mnt/claim/.kubetune/torch-extensions/img-1/py311_torch-2.11.0_deepspeed-0.19.8_cpu"
    assert child["TORCH_EXTENSIONS_DIR"] == expected
    assert (
        plan.child_environment(env, {"TORCH_EXTENSIONS_DIR": "/mine"}, "k")["TORCH_EXTENSIONS_DIR"] == "/mine"
    )
    assert "TORCH_EXTENSIONS_DIR" not in plan.child_environment(pod_env(tmp_path), {}, None)


@pytest.mark.parametrize(
    ("environ", "gpus", "arches"),
    [
        ({}, None, "cpu"),
        ({"TORCH_CUDA_ARCH_LIST": "9.0;8.0 8.0+PTX"}, None, "sm80-sm80-ptx-sm90"),
        ({}, "9.0\n9.0\n", "sm90"),
        ({}, "8.0\n8.6\n", "sm80-sm86"),
    ],
    ids=["cpu", "arch-list", "h100s", "mixed"],
)
def test_the_ops_key_names_the_gpu_architectures(
    tmp_path: Path, environ: dict[str, str], gpus: str | None, arches: str
) -> None:
    nvidia_smi = None
    if gpus is not None:  # what nvidia-smi prints for --query-gpu=compute_cap (no GPU here)
        nvidia_smi = tmp_path / "nvidia-smi"
        nvidia_smi.write_text(f"#!/bin/sh\nprintf '{gpus}'\n")
        nvidia_smi.chmod(0o755)
    assert compiled_ops.cuda_architectures(environ, str(nvidia_smi) if nvidia_smi else None) == arches
    key = compiled_ops.ops_key("311", "2.11.0+cu130", "0.19.8", arches)
    assert key == f"py311_torch-2.11.0+cu130_deepspeed-0.19.8_{arches}"


def test_a_lock_file_left_by_a_killed_build_is_removed_when_no_pod_uses_the_ops(tmp_path: Path) -> None:
    ops = tmp_path / "ops"
    (ops / "cpu_adam").mkdir(parents=True)
    (ops / "cpu_adam" / "lock").touch()  # torch would wait for it forever
    (ops / "cpu_adam" / "cpu_adam.so").touch()
    marker = compiled_ops.use(ops)
    assert marker is not None
    assert not (ops / "cpu_adam" / "lock").exists()
    assert (ops / "cpu_adam" / "cpu_adam.so").exists()
    marker.close()


def test_a_lock_file_is_left_alone_while_another_pod_uses_the_ops(tmp_path: Path) -> None:
    import fcntl

    ops = tmp_path / "ops"
    (ops / "deepspeed_shm_comm").mkdir(parents=True)
    with open(ops / compiled_ops.IN_USE, "a") as other_pod:  # its own open file: another pod's flock
        fcntl.flock(other_pod, fcntl.LOCK_SH)
        (ops / "deepspeed_shm_comm" / "lock").touch()  # that pod is compiling right now
        marker = compiled_ops.use(ops)
        assert marker is not None
        assert (ops / "deepspeed_shm_comm" / "lock").exists()
        marker.close()


# --- resuming --------------------------------------------------------------------------------------


def test_first_attempt_on_an_empty_path_starts_from_scratch(tmp_path: Path) -> None:
    decision = plan.decide_resume(tmp_path / "out", attempt=1)
    assert decision.resume_from is None and decision.error is None
    assert "resume_from_checkpoint" not in plan.training_config({"do_train": True}, decision)


@pytest.mark.parametrize("attempt", [1, 2, 5])
def test_resumes_from_the_newest_checkpoint(tmp_path: Path, attempt: int) -> None:
    out = tmp_path / "out"
    for step in (500, 1000, 50):
        (out / f"checkpoint-{step}").mkdir(parents=True)
        (out / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (out / "checkpoint-tmp").mkdir()  # not a checkpoint
    (out / "checkpoint-1500").mkdir()  # the node died while saving it: no trainer_state.json
    decision = plan.decide_resume(out, attempt)
    assert decision.resume_from == out / "checkpoint-1000"
    assert "step 1000" in decision.note
    config = plan.training_config({"stage": "sft", "do_train": True}, decision)
    assert config["resume_from_checkpoint"] == str(out / "checkpoint-1000")


def test_finished_weights_without_checkpoints_are_refused_not_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "adapter_model.safetensors").write_bytes(b"weights")
    decision = plan.decide_resume(out, attempt=1)
    assert decision.error is not None
    assert "spec.storage.path" in decision.error and "adapter_model.safetensors" in decision.error
    assert (out / "adapter_model.safetensors").read_bytes() == b"weights"


def finished_output(out: Path, owner: str | None) -> None:
    (out / "checkpoint-200").mkdir(parents=True)
    (out / "checkpoint-200" / "trainer_state.json").write_text("{}")
    (out / "adapter_model.safetensors").write_bytes(b"weights")
    (out / "train_results.json").write_text("{}")
    if owner:
        (out / plan.OWNER_FILE).write_text(json.dumps({"uid": owner}))


@pytest.mark.parametrize(
    ("owner", "ours", "continue_finished", "refused"),
    [
        ("uid-old", "uid-new", False, True),  # re-created under the same name: it already finished
        (None, "uid-new", False, True),  # finished, and nobody says for whom
        ("uid-old", "uid-new", True, False),  # asked to continue it
        ("uid-new", "uid-new", False, False),  # a later attempt of the same FineTuneJob
    ],
    ids=["another-job", "unknown-owner", "continue", "same-job"],
)
def test_a_finished_training_of_another_job_is_refused_unless_asked(
    tmp_path: Path, owner, ours, continue_finished, refused
) -> None:
    out = tmp_path / "out"
    finished_output(out, owner)
    decision = plan.decide_resume(out, attempt=2, owner_uid=ours, continue_finished=continue_finished)
    if refused:
        assert (
            decision.error
            and "spec.continueFinished" in decision.error
            and "already finished" in decision.error
        )
    else:
        assert decision.error is None and decision.resume_from == out / "checkpoint-200"
    assert (out / "adapter_model.safetensors").read_bytes() == b"weights", "nothing is deleted"


# --- post-training steps ---------------------------------------------------------------------------

TRAIN = {
    "model_name_or_path": "/mnt/claim/models/qwen",
    "template": "qwen",
    "finetuning_type": "lora",
    "dataset_dir": "/etc/kubetune",
    "cutoff_len": 1024,
    "bf16": True,
}


def test_merge_exports_the_adapter_into_the_base_model(tmp_path: Path) -> None:
    config = plan.export_config(TRAIN, Path("/mnt/claim/runs/ner"), {"dir": "merged", "exportSize": 2})
    assert config == {
        "model_name_or_path": "/mnt/claim/models/qwen",
        "adapter_name_or_path": "/mnt/claim/runs/ner",
        "template": "qwen",
        "finetuning_type": "lora",
        "export_dir": "/mnt/claim/runs/ner/merged",
        "export_size": 2,
        "export_device": "cpu",
        "export_legacy_format": False,
    }


@pytest.mark.parametrize(("finetuning_type", "model"), [("lora", "/mnt/claim/models/qwen"), ("full", "/out")])
def test_predict_generates_with_the_trained_model(finetuning_type: str, model: str) -> None:
    train = {**TRAIN, "finetuning_type": finetuning_type}
    config = plan.predict_config(train, Path("/out"), {"datasets": ["a", "b"], "maxSamples": 50})
    assert config["do_predict"] and config["predict_with_generate"]
    assert config["eval_dataset"] == "a,b"
    assert config["max_samples"] == 50
    assert config["model_name_or_path"] == model
    assert ("adapter_name_or_path" in config) == (finetuning_type == "lora")
    assert config["output_dir"] == "/out/predict"
    assert config["cutoff_len"] == 1024 and config["bf16"] is True


def test_merge_and_predict_without_a_template_use_what_training_used() -> None:
    """No `spec.model.template`: training ran on LLaMA-Factory's default, and so do the passes after it
    (they raised KeyError after a successful training, and the job ended Failed)."""
    train = {k: v for k, v in TRAIN.items() if k != "template"}
    merged = plan.export_config(train, Path("/out"), {})
    predicted = plan.predict_config(train, Path("/out"), {"datasets": ["a"]})
    assert "template" not in merged and "template" not in predicted
    assert plan.predict_config(TRAIN, Path("/out"), {"datasets": ["a"]})["template"] == "qwen"


# --- progress --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("0:05:12", "5m12s"),
        ("1:00:03", "1h0m3s"),
        ("2 days, 3:04:05", "51h4m5s"),
        ("0:00:09", "9s"),
        ("", None),
    ],
)
def test_durations_read_like_kubectl(text: str, words: str | None) -> None:
    assert duration_words(text) == words


RECORD = {
    "current_steps": 120,
    "total_steps": 900,
    "loss": 1.2345,
    "lr": 9.5e-05,
    "epoch": 0.4,
    "percentage": 13.33,
    "elapsed_time": "0:01:00",
    "remaining_time": "0:06:30",
    "throughput": 1520.5,
}


def test_a_trainer_log_record_becomes_status_progress() -> None:
    assert progress_from_record(RECORD, "2026-11-23T10:00:00Z") == {
        "step": 120,
        "totalSteps": 900,
        "epoch": 0.4,
        "loss": 1.234,  # 1.2345 to 4 significant digits
        "learningRate": 9.5e-05,
        "percent": 13.33,
        "eta": "6m30s",
        "tokensPerSecond": 1520.5,
        "updatedAt": "2026-11-23T10:00:00Z",
        "display": "120/900 13% eta 6m30s",
    }


def test_the_loss_is_shown_to_four_significant_digits() -> None:
    """`kubectl get ftj` prints the status's number as it is: 5.734, not 5.734044551849365."""
    record = {**RECORD, "loss": 5.734044551849365, "eval_loss": 0.000123456}
    progress = progress_from_record(record, "2026-11-23T10:00:00Z")
    assert (progress["loss"], progress["evalLoss"]) == (5.734, 0.0001235)


def test_the_newest_complete_record_is_read(tmp_path: Path) -> None:
    path = tmp_path / "trainer_log.jsonl"
    assert last_training_record(path) is None
    final = {k: v for k, v in RECORD.items() if k not in ("loss", "lr")} | {"current_steps": 3}
    path.write_text(
        json.dumps({**RECORD, "current_steps": 1, "loss": 2.0})
        + "\n"
        + json.dumps({**RECORD, "current_steps": 2, "loss": 1.5})
        + "\n"
        + json.dumps(final)  # LLaMA-Factory's closing record carries no loss
        + "\n"
        + '{"current_steps": 4, "lo'  # being written right now
    )
    state = last_training_record(path)
    assert state["current_steps"] == 3
    assert state["loss"] == 1.5, "the last known loss is kept"


def test_reporter_sends_changes_only_and_survives_a_lost_api(tmp_path: Path) -> None:
    path = tmp_path / "trainer_log.jsonl"
    sent: list[dict] = []
    failing = {"on": True}

    def send(progress: dict) -> None:
        if failing["on"]:
            raise ConnectionError("API server unreachable")
        sent.append(progress)

    reporter = Reporter(path, send, interval=3600)
    path.write_text(json.dumps(RECORD) + "\n")
    assert reporter.report_once() is False  # the API is down: training goes on, nothing raised
    assert reporter.failures == 1
    failing["on"] = False
    assert reporter.report_once() is True
    assert reporter.report_once() is False, "nothing new: nothing sent"
    with path.open("a") as f:
        f.write(json.dumps({**RECORD, "current_steps": 121}) + "\n")
    assert reporter.report_once() is True
    assert [p["step"] for p in sent] == [120, 121]


# --- why it failed ---------------------------------------------------------------------------------

TRACEBACK = 'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n'


@pytest.mark.parametrize(
    ("tail", "code", "reason"),
    [
        (
            TRACEBACK + "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
            1,
            "out of GPU memory: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
        ),
        (
            "[rank0]:[E] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=5, OpType=ALLREDUCE)",
            1,
            "NCCL failure: [rank0]:[E] Watchdog caught collective operation timeout",
        ),
        (
            TRACEBACK + "ValueError: Undefined dataset alpaca_missing in dataset_info.json.",
            1,
            "dataset error: ValueError: Undefined dataset alpaca_missing in dataset_info.json.",
        ),
        (
            TRACEBACK + "ValueError: Some keys are not used by the HfArgumentParser: ['lora_rnak']",
            1,
            "config error: ValueError: Some keys are not used by the HfArgumentParser: ['lora_rnak']",
        ),
        ("loading shards 3/4", 137, "killed by SIGKILL (out of host memory?)"),
        ("step 10", 128 + signal.SIGTERM, "killed by SIGTERM"),
        (TRACEBACK + "RuntimeError: something odd", 1, "RuntimeError: something odd"),
        ("bye", 3, "exited with code 3: bye"),
    ],
    ids=["oom", "nccl", "dataset", "config", "sigkill", "sigterm", "exception", "plain"],
)
def test_termination_reason_is_one_line_a_person_can_act_on(tail: str, code: int, reason: str) -> None:
    message = termination_reason(tail.splitlines(), code)
    assert message.startswith(reason)
    assert "\n" not in message


# Real torchrun output (tests/data/torchrun, captured through `kubetune launch` on two CPU pods): what the
# launcher keeps of it (the last LOG_TAIL_LINES lines) -> the pod's termination message -> the FineTuneJob's
# Failed condition. torchrun itself exits 1 in each; its report names only ChildFailedError.
TORCHRUN_LOGS = Path(__file__).resolve().parents[1] / "data" / "torchrun"


@pytest.mark.parametrize(
    ("log", "reason"),
    [
        (
            "rank-raises",
            "dataset error: [rank1]: ValueError: File /tmp/capture/raises/claim/datasets/sample-ner.json "
            "not found.",
        ),
        (
            "model-missing",
            "[rank0]: OSError: Failed to load tokenizer. (from OSError: Repo id must be in the form "
            "'repo_name' or 'namespace/repo_name': '/tmp/capture/no-model/claim/models/tiny'.",
        ),
        ("rank-killed", "rank 1: killed by SIGKILL (out of host memory?)"),
        (
            "peer-killed",
            "lost a peer (another rank failed first?): [rank0]: RuntimeError: "
            "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:538] Read error [127.0.0.1]:743: "
            "Connection reset by peer",
        ),
        (
            "master-unreachable",
            "rendezvous failure: torch.distributed.DistNetworkError: The client socket has timed out after "
            "30000ms while trying to connect to (127.0.0.1, 41423).",
        ),
        (
            "worker-never-joins",
            "rendezvous failure: torch.distributed.DistStoreError: Timed out after 31 seconds waiting for "
            "clients. 1/2 clients joined.",
        ),
        ("drained", "killed by SIGTERM"),
    ],
)
def test_a_torchrun_failure_says_what_the_failed_process_said(log: str, reason: str) -> None:
    from kubetune.launcher.main import LOG_TAIL_LINES
    from kubetune.status.finetunejob import pod_failure

    tail = (TORCHRUN_LOGS / f"{log}.log").read_text().splitlines(keepends=True)[-LOG_TAIL_LINES:]
    message = termination_reason(tail, 1)
    assert message.startswith(reason)
    assert "\n" not in message and "ChildFailedError" not in message

    pod = {
        "metadata": {"name": "ner-a1-1", "annotations": {"batch.kubernetes.io/job-completion-index": "1"}},
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {
                    "name": "trainer",
                    "state": {"terminated": {"exitCode": 1, "reason": "Error", "message": message}},
                }
            ],
        },
    }
    assert pod_failure(pod) == f"pod ner-a1-1 (node rank 1) exited with code 1 (Error): {message}"
