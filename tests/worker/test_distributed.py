"""Distributed training as the pods run it: one `kubetune launch` per node rank, torchrun across them,
plain DDP and DeepSpeed ZeRO, on the CPU (a CPU rehearsal, `gpusPerNode: 0`), with the real LLaMA-Factory.

Each node rank is its own process with its own rendered environment (tests/worker/ranks.py); all share the
claim. The dataset has 16 records and each process takes 2 a step: two processes cover an epoch in 4 steps
where one would need 8, so the epoch LLaMA-Factory logs at step 4 says both trained, on different records.

DeepSpeed JIT-compiles its CPU ops at the first start (deepspeed_shm_comm: minutes). The compiled ops are
kept on the claim (`.kubetune/torch-extensions`, as a FineTuneJob keeps them); here every test's claim
shares one such directory, so the tier compiles once.

Run with the trainer environment's interpreter (`make test-worker`); skipped where LLaMA-Factory is not
installed.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

pytest.importorskip("llamafactory")

from kubernetes import client

from kubetune.launcher import compiled_ops
from tests.cluster import localcluster
from tests.kube import wait_until
from tests.worker.fixtures import SAMPLE_NER
from tests.worker.pod import GROUP, PLURAL, VERSION, finetunejob_body, scoped_kubeconfig, trainer_log
from tests.worker.ranks import attempt, process_ranks

# DeepSpeed compiles its ops at the first use: minutes on a busy CI machine (the tier's first ZeRO test pays
# for deepspeed_shm_comm, the offload test for cpu_adam).
pytestmark = pytest.mark.timeout(900)

RECORDS = 16
EXTENSIONS = ".kubetune/torch-extensions"


@pytest.fixture(scope="session")
def ops_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The claims' compiled-ops directory, one for the whole session (a claim keeps it between jobs)."""
    return tmp_path_factory.mktemp("torch-extensions")


@pytest.fixture
def claim(tmp_path: Path, tiny_model: Path, ops_cache: Path) -> Path:
    root = tmp_path / "claim"
    (root / "models").mkdir(parents=True)
    (root / "models" / "tiny").symlink_to(tiny_model, target_is_directory=True)
    (root / "datasets").mkdir()
    (root / "datasets" / SAMPLE_NER.name).write_text(json.dumps(records(RECORDS), ensure_ascii=False))
    (root / EXTENSIONS).parent.mkdir(parents=True)
    (root / EXTENSIONS).symlink_to(ops_cache, target_is_directory=True)
    return root


def records(count: int) -> list[dict]:
    """`count` records made from the sample one (its input cut at a different place each time)."""
    [sample] = json.loads(SAMPLE_NER.read_text())
    return [{**sample, "input": sample["input"][: 10 + i]} for i in range(count)]


def body(name: str, nodes: int, processes: int | None = None, preset: str | None = None) -> dict:
    resources: dict = {"nodes": nodes, "gpusPerNode": 0}
    if processes is not None:
        resources["processesPerNode"] = processes
    deepspeed = {"preset": preset} if preset else None
    return finetunejob_body(
        name, {"max_samples": RECORDS, "save_steps": 4}, resources=resources, deepspeed=deepspeed
    )


def assert_trained_by_two_processes(ranks_logs: str, output_dir: Path) -> None:
    assert process_ranks(ranks_logs) == {(0, 2), (1, 2)}, "two processes, each its own global rank"
    steps = [r for r in trainer_log(output_dir) if "loss" in r]
    assert [r["current_steps"] for r in steps] == [1, 2, 3, 4]
    assert all(isinstance(r["loss"], float) for r in steps)
    # 16 records, 2 a step per process: one epoch in 4 steps only when both processes take their share.
    assert steps[-1]["epoch"] == pytest.approx(1.0)


def assert_adapter_loads_whole(output_dir: Path, tiny_model: Path) -> None:
    """The adapter loads with PEFT, with every LoRA matrix at its full shape (ZeRO-3 gathers them)."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    weights = load_file(output_dir / "adapter_model.safetensors")
    lora_a = {name: t.shape for name, t in weights.items() if "lora_A" in name}
    assert lora_a and all(shape[0] == 8 and shape[1] > 0 for shape in lora_a.values()), lora_a
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), output_dir)
    assert model.peft_config["default"].r == 8


def test_two_nodes_train_as_one_ddp_job_and_node_rank_0_reports(
    cluster: localcluster.ClusterInfo,
    crds: None,
    api: client.ApiClient,
    namespace: str,
    claim: Path,
    tmp_path: Path,
    tiny_model: Path,
) -> None:
    job = body("ddp-2x1", nodes=2)
    created, kubeconfig = scoped_kubeconfig(cluster, api, namespace, job, tmp_path / "kubeconfig")
    pods = attempt(
        job, claim=claim, workdir=tmp_path, namespace=namespace, uid=created["metadata"]["uid"],
        kubeconfig=kubeconfig,
    )  # fmt: skip
    assert pods.run() == [0, 0], pods.logs()
    assert_trained_by_two_processes(pods.logs(chars=10**7), pods.leader.pod.output_dir)
    assert_adapter_loads_whole(pods.leader.pod.output_dir, tiny_model)

    # Every pod holds the job's token; node rank 0 reports, the other leaves it to it.
    assert "reporting progress to FineTuneJob" in pods.ranks[0].text()
    assert "reporting progress" not in pods.ranks[1].text()
    assert "node rank 1: node rank 0 reports the progress" in pods.ranks[1].text()
    status = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "ddp-2x1"
    )["status"]
    assert status["progress"]["step"] == 4 and status["progress"]["epoch"] == pytest.approx(1.0)


def test_one_node_two_processes_train_as_one_ddp_job(claim: Path, tmp_path: Path, tiny_model: Path) -> None:
    pods = attempt(body("ddp-1x2", nodes=1, processes=2), claim=claim, workdir=tmp_path)
    assert pods.run() == [0], pods.logs()
    assert_trained_by_two_processes(pods.logs(chars=10**7), pods.leader.pod.output_dir)
    assert_adapter_loads_whole(pods.leader.pod.output_dir, tiny_model)


@pytest.mark.parametrize("preset", ["zero2", "zero3", "zero3-offload"])
def test_deepspeed_zero_trains_across_two_nodes(
    claim: Path, tmp_path: Path, tiny_model: Path, preset: str
) -> None:
    pods = attempt(body(f"ds-{preset}", 2, preset=preset), claim=claim, workdir=tmp_path)
    ops = Path(pods.leader.pod.env["KUBETUNE_TORCH_EXTENSIONS"]) / compiled_ops.current_key()
    # ZeRO-3 finds a lock file left by a pod killed while it compiled: torch alone would wait for it forever.
    if preset == "zero3":
        (ops / "deepspeed_shm_comm").mkdir(parents=True, exist_ok=True)
        (ops / "deepspeed_shm_comm" / "lock").touch()
    assert pods.run(timeout=600) == [0, 0], pods.logs()
    logs = pods.logs(chars=10**7)
    assert_trained_by_two_processes(logs, pods.leader.pod.output_dir)
    assert_zero_partitioned(pods.leader.pod.output_dir / "checkpoint-4", stage=int(preset[4]))
    assert_adapter_loads_whole(pods.leader.pod.output_dir, tiny_model)
    if preset.endswith("-offload"):  # the optimizer ran on the CPU: DeepSpeed's CPU Adam, built for it
        assert (ops / "cpu_adam" / "cpu_adam.so").is_file()


def test_deepspeed_zero3_full_fine_tuning_saves_the_whole_model(
    claim: Path, tmp_path: Path, tiny_model: Path
) -> None:
    job = body("ds-zero3-full", 2, preset="zero3")
    config = job["spec"]["config"]
    config["finetuning_type"] = "full"
    for key in ("lora_target", "lora_rank"):
        config.pop(key)
    pods = attempt(job, claim=claim, workdir=tmp_path)
    assert pods.run(timeout=600) == [0, 0], pods.logs()
    output = pods.leader.pod.output_dir
    assert_trained_by_two_processes(pods.logs(chars=10**7), output)
    assert_zero_partitioned(output / "checkpoint-4", stage=3)

    # Gathered from the partitions on save: the whole model, loadable with transformers, and trained.
    from transformers import AutoModelForCausalLM

    trained = AutoModelForCausalLM.from_pretrained(output).state_dict()
    base = AutoModelForCausalLM.from_pretrained(tiny_model).state_dict()
    assert {k: v.shape for k, v in trained.items()} == {k: v.shape for k, v in base.items()}
    assert any(not trained[k].equal(base[k]) for k in base)


def assert_zero_partitioned(checkpoint: Path, stage: int) -> None:
    """DeepSpeed's checkpoint holds one optimizer partition per process, of the ZeRO stage asked for."""
    import torch

    (step,) = checkpoint.glob("global_step*")
    partitions = sorted(p.name for p in step.glob("zero_pp_rank_*_mp_rank_00_optim_states.pt"))
    assert partitions == [f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in (0, 1)]
    state = torch.load(step / partitions[1], weights_only=False)["optimizer_state_dict"]
    assert int(state["zero_stage"]) == stage
    assert state["partition_count"] in (2, [2])


def test_a_killed_rank_fails_both_pods_each_saying_why(claim: Path, tmp_path: Path) -> None:
    import psutil

    job = finetunejob_body(
        "killed", {"max_samples": RECORDS, "max_steps": 400, "save_steps": 1000},
        resources={"nodes": 2, "gpusPerNode": 0},
    )  # fmt: skip
    pods = attempt(job, claim=claim, workdir=tmp_path).start()
    wait_until(
        lambda: any("loss" in r for r in trainer_log(pods.leader.pod.output_dir)) or pods.ended(),
        "the first step",
        timeout=300,
    )
    assert not pods.ended(), pods.logs()
    launcher = psutil.Process(pods.ranks[1].process.pid)
    (training,) = [  # torchrun's child, not torchrun
        p
        for p in launcher.children(recursive=True)
        if "kubetune.launcher.rank" in p.cmdline() and "torch.distributed.run" not in p.cmdline()
    ]
    training.kill()  # as the kernel's OOM killer would

    assert pods.wait(timeout=300) == [1, 1], pods.logs()
    assert pods.ranks[1].pod.termination_message() == "rank 1: killed by SIGKILL (out of host memory?)"
    assert (
        pods.ranks[0]
        .pod.termination_message()
        .startswith("lost a peer (another rank failed first?): [rank0]")
    )


def test_a_node_without_pod_0_says_whom_it_waited_for(claim: Path, tmp_path: Path) -> None:
    pods = attempt(body("alone", nodes=2), claim=claim, workdir=tmp_path)
    lone = pods.ranks[1]
    lone.pod.env["KUBETUNE_RENDEZVOUS_TIMEOUT"] = "10"
    pods.ranks = [lone]
    assert pods.run(timeout=300) == [1], pods.logs()
    message = lone.pod.termination_message()
    assert message.startswith("rendezvous failure: torch.distributed.DistNetworkError: The client socket has")
    assert f"(127.0.0.1, {lone.pod.env['MASTER_PORT']})" in message, "it names the master's address"


def test_drained_mid_run_the_next_attempt_resumes_from_the_deepspeed_checkpoint(
    claim: Path, tmp_path: Path
) -> None:
    job = finetunejob_body(
        "ds-resume", {"max_samples": RECORDS, "max_steps": 60, "save_steps": 2},
        resources={"nodes": 2, "gpusPerNode": 0}, deepspeed={"preset": "zero2"},
    )  # fmt: skip
    first = attempt(job, claim=claim, workdir=tmp_path, attempt=1).start()
    output = first.leader.pod.output_dir
    wait_until(
        lambda: (output / "checkpoint-2" / "trainer_state.json").exists() or first.ended(),
        "the first checkpoint",
        timeout=600,
    )
    assert not first.ended(), first.logs()
    for rank in first.ranks:  # a drain: the kubelet sends every pod SIGTERM
        rank.process.send_signal(signal.SIGTERM)
    assert all(code != 0 for code in first.wait(timeout=300)), first.logs()
    assert [r.pod.termination_message() for r in first.ranks] == ["killed by SIGTERM"] * 2
    steps_before = max(r["current_steps"] for r in trainer_log(output))
    assert steps_before < 60

    second = attempt(job, claim=claim, workdir=tmp_path, attempt=2)
    assert second.run(timeout=600) == [0, 0], second.logs()
    resumed = int(second.leader.text().split("attempt 2: resuming from checkpoint-")[1].split()[0])
    assert (output / f"checkpoint-{resumed}" / f"global_step{resumed}").is_dir(), "DeepSpeed's own state"
    steps = [r["current_steps"] for r in trainer_log(output) if "loss" in r]
    second_run = steps[steps.index(steps_before) + 1 :] if steps_before in steps else steps
    assert min(second_run) == resumed + 1, "the step count continues from the checkpoint"
    assert max(steps) == 60
    assert (output / "adapter_model.safetensors").is_file()
