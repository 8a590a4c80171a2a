"""spec.dataset.preprocess: tokenize once, on CPU, before the GPUs are held (without a cluster).

The CPU-only Job's rendering, the training config's tokenized_path, the status while preprocessing and
after it failed, and the content key of the tokenized dataset (kubetune.launcher.preprocess, without
LLaMA-Factory: its pure parts).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune.api import label_names
from kubetune.api.common import CLAIM_MOUNT_PATH
from kubetune.api.validation import finetunejob_spec
from kubetune.launcher import preprocess as launcher
from kubetune.render import finetunejob as render
from kubetune.status.finetunejob import PreprocessObservation, compute, transitions
from tests.specs import merge
from tests.unit.test_render_finetunejob import BASE_SPEC, make_spec, make_target
from tests.unit.test_status_finetunejob import condition, job, observation

PREPROCESS = {
    "enabled": True,
    "resources": {"cpu": "8", "memory": "32Gi"},
    "nodeSelector": {"pool": "cpu"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "cpu", "effect": "NoSchedule"}],
}


def preprocessing_spec(**changes: Any):
    return make_spec(dataset={"preprocess": PREPROCESS}, **changes)


def config_of(target: render.FineTuneJobTarget) -> dict[str, Any]:
    return yaml.safe_load(render.config_map(target)["data"]["llamafactory.yaml"])


# --- the spec -----------------------------------------------------------------------------------------


def test_preprocessing_is_off_by_default() -> None:
    assert not make_spec().dataset.preprocessing
    assert not make_spec(dataset={"preprocess": {}}).dataset.preprocessing
    assert preprocessing_spec().dataset.preprocessing


def test_a_streamed_dataset_cannot_be_preprocessed() -> None:
    spec, problems = finetunejob_spec(
        merge(BASE_SPEC, {"dataset": {"preprocess": {"enabled": True}}, "config": {"streaming": True}})
    )
    assert spec is None or problems
    assert "streaming" in "; ".join(p.message for p in problems)


# --- the CPU-only Job ---------------------------------------------------------------------------------


def test_the_preprocessing_job_is_cpu_only_with_its_own_requests_and_placement() -> None:
    spec = preprocessing_spec(
        resources={"nodeSelector": {"pool": "gpu"}, "tolerations": [{"key": "nvidia.com/gpu"}]}
    )
    manifest = render.preprocess_job(make_target(spec))
    pod = manifest["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert manifest["metadata"]["name"] == "ner-preprocess"
    assert container["args"] == ["preprocess"]
    assert container["resources"] == {
        "limits": {"cpu": "8", "memory": "32Gi"},
        "requests": {"cpu": "8", "memory": "32Gi"},
    }
    assert "nvidia.com/gpu" not in str(container["resources"])
    assert pod["nodeSelector"] == {"pool": "cpu"}, "its own placement, not the trainer's GPU nodes"
    assert pod["tolerations"] == PREPROCESS["tolerations"]
    assert manifest["spec"]["backoffLimit"] == 0 and pod["restartPolicy"] == "Never"
    assert manifest["metadata"]["ownerReferences"][0]["uid"] == make_target().uid


def test_the_preprocessing_job_reads_the_trainings_config_in_the_trainings_working_directory() -> None:
    target = make_target(preprocessing_spec(storage={"claim": "shared", "workingDir": "work"}))
    (container,) = render.preprocess_job(target)["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["workingDir"] == f"{CLAIM_MOUNT_PATH}/work"
    assert env["KUBETUNE_TOKENIZED_CACHE"] == f"{CLAIM_MOUNT_PATH}/.kubetune/tokenized"
    assert env["KUBETUNE_TOKENIZED_LINK"] == f"{CLAIM_MOUNT_PATH}/runs/team-a/ner/.kubetune/tokenized"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"claim": CLAIM_MOUNT_PATH, "config": "/etc/kubetune"}


def test_the_preprocessing_pod_is_not_selected_by_the_rendezvous_service() -> None:
    target = make_target(preprocessing_spec())
    labels = render.preprocess_job(target)["spec"]["template"]["metadata"]["labels"]
    selector = render.service(target)["spec"]["selector"]
    assert not selector.items() <= labels.items()
    assert labels[label_names.PREPROCESS_OF] == "ner"


def test_a_hub_model_is_fetched_before_preprocessing_for_its_tokenizer() -> None:
    spec = preprocessing_spec(model={"source": "hf://Qwen/Qwen2.5-0.5B-Instruct", "template": "qwen"})
    pod = render.preprocess_job(make_target(spec))["spec"]["template"]["spec"]
    [fetch] = pod["initContainers"]
    assert fetch["args"][0] == "fetch-model"


# --- the training config ------------------------------------------------------------------------------


def test_the_training_loads_the_tokenized_dataset_only_once_preprocessing_succeeded() -> None:
    assert "tokenized_path" not in config_of(make_target(preprocessing_spec()))
    done = config_of(make_target(preprocessing_spec(), preprocessed=True))
    assert done["tokenized_path"] == f"{CLAIM_MOUNT_PATH}/runs/team-a/ner/.kubetune/tokenized"
    assert "tokenized_path" not in config_of(make_target(make_spec(), preprocessed=True))


def test_a_users_own_tokenized_path_is_kept_as_it_is() -> None:
    spec = preprocessing_spec(config={"tokenized_path": "saves/tok"})
    assert config_of(make_target(spec, preprocessed=True))["tokenized_path"] == "saves/tok"


# --- the status ---------------------------------------------------------------------------------------


def preprocess_job(*, complete: bool = False, failed: str | None = None) -> dict[str, Any]:
    manifest = job(complete=complete, failed=failed)
    manifest["metadata"] = {"name": "ner-preprocess", "labels": {label_names.PREPROCESS_OF: "ner"}}
    return manifest


def preprocess_pod(exit_code: int | None = None, message: str = "") -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Running"}
    if exit_code is not None:
        terminated = {"exitCode": exit_code, "reason": "Error", "message": message}
        status = {
            "phase": "Failed",
            "containerStatuses": [{"name": "preprocess", "state": {"terminated": terminated}}],
        }
    return {"metadata": {"name": "ner-preprocess-xyz12"}, "status": status}


def test_phase_is_preprocessing_while_the_cpu_job_runs() -> None:
    pre = PreprocessObservation(job=preprocess_job(), pods=[preprocess_pod()])
    status = compute(observation(preprocess=pre))
    assert (status["phase"], status["reason"]) == ("Preprocessing", "Preprocessing")
    assert "ner-preprocess" in status["message"]
    assert condition(status, "Preprocessed")["status"] == "False"
    assert condition(status, "Running")["status"] == "False"
    assert condition(status, "Reconciling")["status"] == "True"
    assert "completionTime" not in status and "startTime" not in status


def test_preprocessing_waits_for_its_pod_with_the_pods_reason() -> None:
    pod = preprocess_pod()
    pod["status"] = {
        "phase": "Pending",
        "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/2 nodes"}
        ],
    }
    status = compute(observation(preprocess=PreprocessObservation(job=preprocess_job(), pods=[pod])))
    assert (status["phase"], status["reason"]) == ("Preprocessing", "Unschedulable")


def test_a_preprocessing_failure_fails_the_job_with_llamafactorys_error_and_uses_no_restart() -> None:
    error = "Traceback ...\ndataset error: KeyError: 'instruction' column is missing"
    pre = PreprocessObservation(
        job=preprocess_job(failed="BackoffLimitExceeded"), pods=[preprocess_pod(1, error)]
    )
    status = compute(observation(preprocess=pre, max_restarts=3))
    assert (status["phase"], status["reason"]) == ("Failed", "PreprocessingFailed")
    assert "no training Job was created" in status["message"]
    assert "'instruction' column is missing" in status["message"]
    assert status["restarts"] == 0
    assert condition(status, "Failed")["status"] == "True"
    preprocessed = condition(status, "Preprocessed")
    assert (preprocessed["status"], preprocessed["reason"]) == ("False", "PreprocessingFailed")
    assert condition(status, "Stalled")["status"] == "True"
    assert status["completionTime"], "a finished job: its TTL applies"
    [event] = [e for e in transitions({}, status) if e.reason == "PreprocessingFailed"]
    assert event.type == "Warning"
    # The verdict stands on later passes, when the Job is all there is to see.
    again = compute(observation(previous=status, preprocess=pre, max_restarts=3))
    assert (again["phase"], again["reason"]) == ("Failed", "PreprocessingFailed")


def test_once_preprocessed_the_training_job_is_created_and_runs() -> None:
    pre = PreprocessObservation(job=preprocess_job(complete=True))
    status = compute(observation(preprocess=pre))
    assert (status["phase"], status["reason"]) == ("Pending", "Creating")
    assert condition(status, "Preprocessed")["status"] == "True"
    running = compute(observation(preprocess=pre, job=job(), pods=[]))
    assert condition(running, "Preprocessed")["reason"] == "Tokenized"


def test_no_preprocessed_condition_without_preprocessing() -> None:
    assert "Preprocessed" not in [c["type"] for c in compute(observation())["conditions"]]


# --- the content key ----------------------------------------------------------------------------------


def key_inputs(tmp_path: Path) -> dict[str, Any]:
    data_dir = tmp_path / "data"
    data_dir.mkdir(exist_ok=True)
    dataset = data_dir / "train.json"
    if not dataset.exists():
        dataset.write_text('[{"instruction": "a", "output": "b"}]')
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    if not (model / "tokenizer.json").exists():
        (model / "tokenizer.json").write_text('{"model": {"vocab": {"a": 0}}}')
        (model / "model.safetensors").write_bytes(b"weights")
    entries = {"train": {"file_name": str(dataset), "formatting": "alpaca"}}
    return {
        "stage": "sft",
        "data_arguments": {"dataset": "train", "template": "qwen", "cutoff_len": 1024, "packing": False},
        "model_arguments": {"use_fast_tokenizer": True, "model_name_or_path": str(model)},
        "training_arguments": {"seed": 42, "do_train": True},
        "entries": entries,
        "files": launcher.dataset_files(entries, data_dir),
        "tokenizer": launcher.tokenizer_fingerprint(model),
        "versions": {"llamafactory": "0.9.5"},
    }


def key(tmp_path: Path, **changes: Any) -> str:
    inputs = key_inputs(tmp_path)
    for name, value in changes.items():
        inputs[name] = {**inputs[name], **value} if isinstance(value, dict) else value
    return launcher.content_key(**inputs)


def test_the_key_is_the_same_for_the_same_inputs(tmp_path: Path) -> None:
    assert key(tmp_path) == key(tmp_path)
    # How fast it tokenizes, where the config is mounted, where the model is: not the content.
    same = {"preprocessing_num_workers": 16, "overwrite_cache": True, "dataset_dir": "/elsewhere"}
    assert key(tmp_path, data_arguments=same) == key(tmp_path)
    assert key(tmp_path, model_arguments={"model_name_or_path": "/other"}) == key(tmp_path)
    assert key(tmp_path, training_arguments={"learning_rate": 1.0}) == key(tmp_path)


@pytest.mark.parametrize(
    "change",
    [
        {"stage": "pt"},
        {"data_arguments": {"template": "llama3"}},
        {"data_arguments": {"cutoff_len": 2048}},
        {"data_arguments": {"packing": True}},
        {"data_arguments": {"max_samples": 100}},
        {"model_arguments": {"use_fast_tokenizer": False}},
        {"training_arguments": {"seed": 7}},
        {"entries": {"train": {"file_name": "train.json", "formatting": "sharegpt"}}},
        {"versions": {"llamafactory": "0.9.6"}},
    ],
    ids=lambda c: "-".join(f"{k}:{v}" for k, v in c.items())[:60],
)
def test_the_key_changes_when_an_argument_that_shapes_the_content_changes(
    tmp_path: Path, change: dict[str, Any]
) -> None:
    assert key(tmp_path, **change) != key(tmp_path)


def test_the_key_changes_when_a_dataset_file_changes(tmp_path: Path) -> None:
    before = key(tmp_path)
    dataset = tmp_path / "data" / "train.json"
    stat = dataset.stat()
    dataset.write_text('[{"instruction": "c", "output": "d"}]')  # the same size
    os.utime(dataset, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert key(tmp_path) != before


def test_the_key_changes_when_a_file_of_a_dataset_directory_changes(tmp_path: Path) -> None:
    inputs = key_inputs(tmp_path)
    shards = tmp_path / "data" / "shards"
    shards.mkdir()
    (shards / "part-0.parquet").write_bytes(b"0" * 10)
    entries = {"train": {"file_name": "shards"}}
    first = launcher.dataset_files(entries, tmp_path / "data")
    (shards / "part-1.parquet").write_bytes(b"1" * 10)
    second = launcher.dataset_files(entries, tmp_path / "data")
    assert launcher.content_key(**{**inputs, "files": first}) != launcher.content_key(
        **{**inputs, "files": second}
    )


def test_the_key_changes_with_the_tokenizer_files_not_the_weights(tmp_path: Path) -> None:
    before = key(tmp_path)
    model = tmp_path / "model"
    (model / "model.safetensors").write_bytes(b"other weights")
    assert key(tmp_path) == before
    (model / "tokenizer.json").write_text('{"model": {"vocab": {"a": 0, "b": 1}}}')
    assert key(tmp_path) != before


def test_the_entries_of_the_datasets_the_run_reads() -> None:
    info = {"a": {"file_name": "a.json"}, "b": {"file_name": "b.json"}, "c": {"file_name": "c.json"}}
    assert launcher.used_entries(info, {"dataset": ["a"], "eval_dataset": "c"}) == {
        "a": info["a"],
        "c": info["c"],
    }


def test_the_data_pipeline_runs_without_the_training_hardware_arguments(tmp_path: Path) -> None:
    config = {
        "deepspeed": "/etc/kubetune/deepspeed.json",
        "bf16": True,
        "cutoff_len": 512,
        "template": "qwen",
    }
    prepared = launcher.preprocessing_config(config, tmp_path)
    assert prepared["cutoff_len"] == 512 and prepared["template"] == "qwen"
    assert "deepspeed" not in prepared and "bf16" not in prepared
    assert prepared["use_cpu"] is True and prepared["output_dir"] == str(tmp_path)


# --- complete or nothing ------------------------------------------------------------------------------


def test_a_result_is_renamed_into_place_only_when_complete(tmp_path: Path) -> None:
    dest = tmp_path / "cache" / "k1"

    def broken(into: Path) -> None:
        into.mkdir(parents=True)
        (into / "half.arrow").write_text("x")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        launcher.produce(dest, broken)
    assert not dest.exists()

    def good(into: Path) -> None:
        into.mkdir(parents=True)
        (into / "dataset_dict.json").write_text("{}")

    assert launcher.produce(dest, good, about={"key": "k1"}) == "tokenized"
    assert launcher.is_complete(dest)
    assert launcher.produce(dest, broken) == "reused"


def test_an_unmarked_directory_at_the_key_is_moved_aside_not_trusted(tmp_path: Path) -> None:
    dest = tmp_path / "cache" / "k1"
    dest.mkdir(parents=True)
    (dest / "stale.arrow").write_text("x")

    def good(into: Path) -> None:
        into.mkdir(parents=True)
        (into / "dataset_dict.json").write_text("{}")

    assert launcher.produce(dest, good) == "tokenized"
    assert (dest / "dataset_dict.json").is_file()
    assert [p.name.startswith("k1.incomplete-") for p in (tmp_path / "cache").iterdir() if p != dest] == [
        True
    ]


def test_the_job_links_to_its_entry_by_a_relative_link_replaced_atomically(tmp_path: Path) -> None:
    first, second = tmp_path / "cache" / "k1", tmp_path / "cache" / "k2"
    first.mkdir(parents=True)
    second.mkdir()
    link = tmp_path / "runs" / "ns" / "job" / ".kubetune" / "tokenized"
    launcher.link(link, first)
    assert not os.readlink(link).startswith("/")
    launcher.link(link, second)
    assert link.resolve() == second.resolve()


# --- kubetune render ----------------------------------------------------------------------------------


def test_render_shows_the_preprocessing_job_before_the_training_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kubetune.cli import main

    spec = merge(BASE_SPEC, {"dataset": {"preprocess": {"enabled": True}}})
    path = tmp_path / "ftj.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob",
                                    "metadata": {"name": "ner"}, "spec": spec}))  # fmt: skip
    assert main(["render", str(path)]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Job"] == ["ner-preprocess", "ner-a1"]
    config = yaml.safe_load(docs[0]["data"]["llamafactory.yaml"])
    assert config["tokenized_path"] == f"{CLAIM_MOUNT_PATH}/runs/default/ner/.kubetune/tokenized"


def test_the_preprocessing_pod_has_the_trainers_security_context() -> None:
    target = make_target(preprocessing_spec())
    pod = render.preprocess_job(target)["spec"]["template"]["spec"]
    trainer = render.job(target)["spec"]["template"]["spec"]
    assert pod["securityContext"] == trainer["securityContext"]
    assert pod["containers"][0]["securityContext"] == trainer["containers"][0]["securityContext"]
