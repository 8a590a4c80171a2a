"""A FineTuneJob's spec -> its child manifests (`kubetune.render.finetunejob`), without a cluster.

Golden files pin the whole rendering of every example (and of a few extra specs in golden/inputs/); the
explicit tests below say which parts of it matter and why. Regenerate the golden files after an intended
change with

    KUBETUNE_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_render_finetunejob.py

and read the diff before committing it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune import yamlio
from kubetune.api.common import CLAIM_MOUNT_PATH
from kubetune.api.defaults import CONFIG_MOUNT_PATH, TRAINER_IMAGE, TrainerSettings
from kubetune.api.finetunejob import FineTuneJobSpec
from kubetune.api.validation import finetunejob_spec
from kubetune.render import finetunejob as render
from kubetune.render.finetunejob import FineTuneJobTarget
from tests import specs

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "finetune"
GOLDEN = Path(__file__).resolve().parent / "golden"
INPUTS = GOLDEN / "inputs"
UID = "00000000-0000-0000-0000-000000000000"
UPDATE_GOLDEN = os.environ.get("KUBETUNE_UPDATE_GOLDEN") == "1"
# The golden files pin the trainer image to a placeholder, so that a version bump (the default image is
# tagged with the operator's version) does not rewrite every one of them. The default is tested below.
GOLDEN_SETTINGS = TrainerSettings(image="ghcr.io/kubetune/trainer:golden")

GOLDEN_SOURCES = sorted(EXAMPLES.glob("*.yaml")) + sorted(INPUTS.glob("*.yaml"))

KINDS = ["ConfigMap", "Service", "ServiceAccount", "Role", "RoleBinding", "Job"]


# --- helpers -----------------------------------------------------------------------------------------


def _load(path: Path) -> dict[str, Any]:
    docs = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    assert len(docs) == 1, f"{path} should hold exactly one FineTuneJob"
    return docs[0]


# The shared spec on two nodes, without DeepSpeed (a test adds it where it matters), one dataset `train`.
BASE_SPEC: dict[str, Any] = specs.finetunejob_spec(
    dataset={"names": ["train"], "dir": "data", "info": {"train": {"file_name": "train.json"}}},
    resources={"nodes": 2, "gpusPerNode": 8},
    deepspeed=None,
    maxRestarts=None,
)


def make_spec(**changes: Any) -> FineTuneJobSpec:
    """BASE_SPEC with `changes` merged in (nested dicts merge; a None value removes the key)."""
    return FineTuneJobSpec.model_validate(specs.merge(BASE_SPEC, changes))


def make_target(spec: FineTuneJobSpec | None = None, **fields: Any) -> FineTuneJobTarget:
    spec = spec or make_spec()
    values: dict[str, Any] = {
        "name": "ner",
        "namespace": "team-a",
        "uid": UID,
        "spec": spec,
        "attempt": 1,
        "dataset_info": spec.dataset.info or {},
    }
    values.update(fields)
    return FineTuneJobTarget(**values)


def by_kind(target: FineTuneJobTarget) -> dict[str, dict[str, Any]]:
    children = render.children(target)
    return {child["kind"]: child for child in children}


def job_of(target: FineTuneJobTarget) -> dict[str, Any]:
    return by_kind(target)["Job"]


def pod_spec(target: FineTuneJobTarget) -> dict[str, Any]:
    return job_of(target)["spec"]["template"]["spec"]


def trainer(target: FineTuneJobTarget) -> dict[str, Any]:
    (container,) = pod_spec(target)["containers"]
    return container


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    """name -> value, or -> valueFrom when the variable is not a literal."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def llamafactory_yaml(target: FineTuneJobTarget) -> dict[str, Any]:
    return yaml.safe_load(by_kind(target)["ConfigMap"]["data"]["llamafactory.yaml"])


def dataset_info_json(target: FineTuneJobTarget) -> dict[str, Any]:
    return json.loads(by_kind(target)["ConfigMap"]["data"]["dataset_info.json"])


def deepspeed_json(target: FineTuneJobTarget) -> dict[str, Any]:
    return json.loads(by_kind(target)["ConfigMap"]["data"]["deepspeed.json"])


# --- golden files ------------------------------------------------------------------------------------


def _golden_target(source: Path) -> FineTuneJobTarget:
    doc = _load(source)
    spec, problems = finetunejob_spec(doc["spec"])
    assert spec is not None and problems == [], f"{source.name} is not a valid FineTuneJob: {problems}"
    meta = doc["metadata"]
    return FineTuneJobTarget(
        name=meta["name"],
        namespace=meta.get("namespace") or "default",
        uid=UID,
        spec=spec,
        attempt=1,
        dataset_info=spec.dataset.info or {},
        settings=GOLDEN_SETTINGS,
    )


@pytest.mark.parametrize("source", GOLDEN_SOURCES, ids=lambda path: path.stem)
def test_rendering_matches_golden_file(source: Path) -> None:
    rendered = yamlio.dump_all(render.children(_golden_target(source)))
    golden = GOLDEN / f"{source.stem}.yaml"
    if UPDATE_GOLDEN:
        golden.write_text(rendered, encoding="utf-8")
        return
    assert golden.exists(), f"no golden file {golden}: run with KUBETUNE_UPDATE_GOLDEN=1 and review it"
    assert rendered == golden.read_text(encoding="utf-8"), (
        f"the rendering of {source.name} changed: if intended, run with KUBETUNE_UPDATE_GOLDEN=1 and "
        "review the diff of the golden file"
    )


def test_golden_sources_exist_and_have_distinct_names() -> None:
    stems = [source.stem for source in GOLDEN_SOURCES]
    assert len(list(EXAMPLES.glob("*.yaml"))) >= 3
    assert len(list(INPUTS.glob("*.yaml"))) >= 3
    assert len(stems) == len(set(stems)), "an input in golden/inputs/ shadows an example of the same name"


def test_every_golden_file_has_a_source() -> None:
    """A golden file whose example was renamed or removed is stale, and would never be compared again."""
    stems = {source.stem for source in GOLDEN_SOURCES}
    stale = sorted(path.name for path in GOLDEN.glob("*.yaml") if path.stem not in stems)
    assert stale == []


@pytest.mark.parametrize("source", GOLDEN_SOURCES, ids=lambda path: path.stem)
def test_golden_file_is_the_six_children_in_apply_order(source: Path) -> None:
    golden = GOLDEN / f"{source.stem}.yaml"
    if not golden.exists():
        pytest.skip("no golden file yet")
    docs = list(yaml.safe_load_all(golden.read_text(encoding="utf-8")))
    assert [doc["kind"] for doc in docs] == KINDS


# --- the Job: one pod per node, pod 0 is the master ---------------------------------------------------


@pytest.mark.parametrize("nodes", [1, 2, 16])
def test_job_is_indexed_with_one_pod_per_node(nodes: int) -> None:
    target = make_target(make_spec(resources={"nodes": nodes}))
    children = by_kind(target)
    job_spec = children["Job"]["spec"]
    assert job_spec["completionMode"] == "Indexed"
    assert job_spec["completions"] == job_spec["parallelism"] == nodes
    # The operator owns retries: one failed pod fails the attempt; the next attempt resumes from a checkpoint.
    assert job_spec["backoffLimit"] == 0
    pod = job_spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["subdomain"] == children["Service"]["metadata"]["name"]


def test_rendezvous_service_is_headless_and_selects_the_pods() -> None:
    target = make_target()
    children = by_kind(target)
    service = children["Service"]["spec"]
    assert service["clusterIP"] == "None"
    # torchrun rendezvous happens before any pod is Ready.
    assert service["publishNotReadyAddresses"] is True
    pod_labels = children["Job"]["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= pod_labels.items()
    assert [p["port"] for p in service["ports"]] == [target.settings.master_port]


@pytest.mark.parametrize(
    ("nodes", "gpus_per_node", "nproc"),
    [(1, 8, "8"), (2, 8, "8"), (4, 1, "1"), (1, 0, "1")],
    ids=["1x8", "2x8", "4x1", "cpu-only"],
)
def test_torchrun_environment(nodes: int, gpus_per_node: int, nproc: str) -> None:
    target = make_target(make_spec(resources={"nodes": nodes, "gpusPerNode": gpus_per_node}))
    env = env_of(trainer(target))
    assert env["NNODES"] == str(nodes)
    assert env["NPROC_PER_NODE"] == nproc
    assert env["NODE_RANK"] == {
        "fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}
    }
    assert env["MASTER_ADDR"] == "ner-a1-0.ner-workers.team-a.svc"
    # Fixed, the same on every node: LLaMA-Factory would otherwise pick a random port on each.
    assert env["MASTER_PORT"] == "29500"
    assert env["FORCE_TORCHRUN"] == "1"


@pytest.mark.parametrize(
    ("resources", "nproc"),
    [({"nodes": 2, "gpusPerNode": 0}, "1"), ({"nodes": 2, "gpusPerNode": 0, "processesPerNode": 2}, "2")],
    ids=["2x1-cpu", "2x2-cpu"],
)
def test_a_cpu_rehearsal_has_the_multi_node_layout(resources: dict[str, Any], nproc: str) -> None:
    target = make_target(make_spec(resources=resources))
    env = env_of(trainer(target))
    assert env["NNODES"] == "2"
    assert env["NPROC_PER_NODE"] == nproc
    assert env["KUBETUNE_GPUS_PER_NODE"] == "0"
    assert "nvidia.com/gpu" not in trainer(target).get("resources", {}).get("limits", {})
    assert job_of(target)["spec"]["completions"] == 2


@pytest.mark.parametrize(("nodes", "gpus"), [(1, 1), (2, 8), (4, 1)])
def test_gpu_jobs_start_one_process_per_gpu_as_before(nodes: int, gpus: int) -> None:
    # processesPerNode only exists for CPU nodes: on GPUs, saying the default changes nothing rendered.
    resources = {"nodes": nodes, "gpusPerNode": gpus}
    implicit = render.children(make_target(make_spec(resources=resources)))
    explicit = render.children(make_target(make_spec(resources={**resources, "processesPerNode": gpus})))
    assert implicit == explicit
    assert env_of(trainer(make_target(make_spec(resources=resources))))["NPROC_PER_NODE"] == str(gpus)


def test_deepspeed_on_cpu_nodes_gets_use_cpu_false() -> None:
    # With use_cpu: true, accelerate initialises torch.distributed itself and DeepSpeed sees one process.
    cpu = make_spec(resources={"nodes": 2, "gpusPerNode": 0}, deepspeed={"preset": "zero3"})
    assert llamafactory_yaml(make_target(cpu))["use_cpu"] is False
    on_gpus = make_spec(deepspeed={"preset": "zero3"}, config={"use_cpu": True})
    assert llamafactory_yaml(make_target(on_gpus))["use_cpu"] is True, "a GPU job's config is left as it is"
    without = make_spec(resources={"nodes": 2, "gpusPerNode": 0}, config={"use_cpu": True})
    assert llamafactory_yaml(make_target(without))["use_cpu"] is True, "plain DDP on CPU needs nothing"


def test_deepspeed_pods_keep_compiled_ops_on_the_claim_by_image() -> None:
    def ops_dir(**changes: Any) -> str | None:
        return env_of(trainer(make_target(make_spec(**changes)))).get("KUBETUNE_TORCH_EXTENSIONS")

    assert ops_dir() is None, "plain DDP compiles nothing"
    ours = ops_dir(deepspeed={"preset": "zero3"})
    assert ours is not None and ours.startswith(f"{CLAIM_MOUNT_PATH}/.kubetune/torch-extensions/")
    assert ops_dir(deepspeed={"preset": "zero2-offload"}) == ours, "one image, one directory"
    theirs = ops_dir(deepspeed={"preset": "zero3"}, image="registry.example.com/ml/trainer:2025.01")
    assert theirs != ours and "registry.example.com_ml_trainer_2025.01" in theirs


def test_master_addr_is_pod_zero_of_the_job_behind_the_service() -> None:
    target = make_target(name="clue-ner-qwen7b", namespace="team-a")
    children = by_kind(target)
    job_name = children["Job"]["metadata"]["name"]
    service_name = children["Service"]["metadata"]["name"]
    assert env_of(trainer(target))["MASTER_ADDR"] == f"{job_name}-0.{service_name}.team-a.svc"


def test_master_port_follows_the_installation_settings() -> None:
    target = make_target(settings=TrainerSettings(master_port=23456))
    children = by_kind(target)
    assert env_of(trainer(target))["MASTER_PORT"] == "23456"
    assert children["Service"]["spec"]["ports"][0]["port"] == 23456
    assert {"name": "rendezvous", "containerPort": 23456} in trainer(target)["ports"]


@pytest.mark.parametrize("gpu_resource", ["nvidia.com/gpu", "amd.com/gpu", "habana.ai/gaudi"])
def test_gpus_are_requested_under_the_configured_resource_name(gpu_resource: str) -> None:
    target = make_target(make_spec(resources={"gpusPerNode": 4, "gpuResource": gpu_resource}))
    limits = trainer(target)["resources"]["limits"]
    assert limits == {gpu_resource: "4"}


def test_no_gpu_resource_without_gpus() -> None:
    target = make_target(make_spec(resources={"nodes": 1, "gpusPerNode": 0}))
    assert "nvidia.com/gpu" not in trainer(target).get("resources", {}).get("limits", {})


def test_cpu_and_memory_are_requested_and_limited_alike() -> None:
    target = make_target(make_spec(resources={"cpu": "32", "memory": "256Gi"}))
    resources = trainer(target)["resources"]
    assert resources["requests"] == {"cpu": "32", "memory": "256Gi"}
    assert resources["limits"] == {"nvidia.com/gpu": "8", "cpu": "32", "memory": "256Gi"}


def _volume_mounted_at(target: FineTuneJobTarget, mount_path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    (mount,) = [m for m in trainer(target)["volumeMounts"] if m["mountPath"] == mount_path]
    (volume,) = [v for v in pod_spec(target)["volumes"] if v["name"] == mount["name"]]
    return volume, mount


@pytest.mark.parametrize(
    ("shared_memory", "empty_dir"),
    [(None, {"medium": "Memory"}), ("64Gi", {"medium": "Memory", "sizeLimit": "64Gi"})],
    ids=["unbounded", "sized"],
)
def test_dev_shm_is_a_memory_backed_empty_dir(shared_memory: str | None, empty_dir: dict[str, Any]) -> None:
    target = make_target(make_spec(resources={"sharedMemory": shared_memory}))
    volume, _ = _volume_mounted_at(target, "/dev/shm")
    assert volume["emptyDir"] == empty_dir


@pytest.mark.parametrize(
    ("resources", "empty_dir"),
    [
        ({"memory": "256Gi"}, {"medium": "Memory"}),
        ({"memory": "256Gi", "sharedMemory": "64Gi"}, {"medium": "Memory", "sizeLimit": "64Gi"}),
    ],
)
def test_dev_shm_is_in_memory_and_bounded_only_when_asked(resources: dict, empty_dir: dict) -> None:
    target = make_target(make_spec(resources=resources))
    volume, _ = _volume_mounted_at(target, "/dev/shm")
    assert volume["emptyDir"] == empty_dir


def test_claim_is_mounted_read_write_at_the_fixed_path() -> None:
    target = make_target(make_spec(storage={"claim": "team-data"}))
    volume, mount = _volume_mounted_at(target, CLAIM_MOUNT_PATH)
    assert CLAIM_MOUNT_PATH == "/mnt/claim"
    assert volume["persistentVolumeClaim"] == {"claimName": "team-data"}
    assert not mount.get("readOnly")


def test_config_map_is_mounted_read_only_where_the_launcher_looks() -> None:
    target = make_target()
    children = by_kind(target)
    volume, mount = _volume_mounted_at(target, CONFIG_MOUNT_PATH)
    assert volume["configMap"]["name"] == children["ConfigMap"]["metadata"]["name"]
    assert mount["readOnly"] is True
    assert env_of(trainer(target))["KUBETUNE_CONFIG_DIR"] == CONFIG_MOUNT_PATH


def test_trainer_runs_the_launcher_with_the_pinned_image_by_default() -> None:
    container = trainer(make_target())
    assert container["image"] == TRAINER_IMAGE
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["command"] == ["kubetune"]
    assert container["args"] == ["launch"]


def test_spec_image_and_pull_policy_win_over_the_installation_defaults() -> None:
    target = make_target(make_spec(image="registry.example.com/trainer:1", imagePullPolicy="Always"))
    container = trainer(target)
    assert (container["image"], container["imagePullPolicy"]) == ("registry.example.com/trainer:1", "Always")


def test_placement_settings_land_on_the_pod() -> None:
    tolerations = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    affinity = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}
    spec = make_spec(
        resources={
            "nodeSelector": {"gpu": "h100"},
            "tolerations": tolerations,
            "affinity": affinity,
            "priorityClassName": "training-high",
        }
    )
    pod = pod_spec(make_target(spec))
    assert pod["nodeSelector"] == {"gpu": "h100"}
    assert pod["tolerations"] == tolerations
    assert pod["affinity"] == affinity
    assert pod["priorityClassName"] == "training-high"


def test_no_placement_keys_when_none_are_set() -> None:
    pod = pod_spec(make_target())
    assert not {"nodeSelector", "tolerations", "affinity", "priorityClassName"} & pod.keys()


def test_active_deadline_applies_to_the_attempts_job() -> None:
    assert "activeDeadlineSeconds" not in job_of(make_target())["spec"]
    target = make_target(make_spec(activeDeadlineSeconds=7200))
    assert job_of(target)["spec"]["activeDeadlineSeconds"] == 7200


# --- ownership ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_every_child_is_controlled_by_the_finetunejob(kind: str) -> None:
    child = by_kind(make_target(uid="1234-abcd"))[kind]
    assert child["metadata"]["namespace"] == "team-a"
    assert child["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "kubetune.io/v1alpha1",
            "kind": "FineTuneJob",
            "name": "ner",
            "uid": "1234-abcd",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert child["metadata"]["labels"]["kubetune.io/finetunejob"] == "ner"


def test_children_are_applied_with_the_job_last() -> None:
    assert [child["kind"] for child in render.children(make_target())] == KINDS


def test_label_values_are_valid_for_a_long_finetunejob_name() -> None:
    label_value = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
    target = make_target(name="a" * 80)
    for child in render.children(target):
        all_labels = dict(child["metadata"]["labels"])
        if child["kind"] == "Job":
            all_labels.update(child["spec"]["template"]["metadata"]["labels"])
        for key, value in all_labels.items():
            assert len(value) <= 63 and label_value.match(value), f"{child['kind']} label {key}={value}"


# --- the ConfigMap: LLaMA-Factory YAML, dataset_info.json, DeepSpeed JSON ------------------------------


def test_llamafactory_config_keeps_every_user_key_verbatim() -> None:
    config = {
        **BASE_SPEC["config"],
        "learning_rate": 1.0e-5,
        "warmup_ratio": 0.1,
        "report_to": "none",
        "flash_attn": "auto",
        "max_samples": 1000,
        "lora_dropout": 0,
        "ddp_timeout": 180000000,
        "val_size": 0.05,
    }
    target = make_target(make_spec(config=config))
    rendered = llamafactory_yaml(target)
    for key, value in config.items():
        assert key in rendered, key
        assert rendered[key] == value and type(rendered[key]) is type(value), key


def test_llamafactory_config_adds_the_keys_the_operator_owns() -> None:
    spec = make_spec(
        dataset={"names": ["a", "b"], "info": {"a": {"file_name": "a.json"}, "b": {"file_name": "b.json"}}},
        deepspeed={"preset": "zero2"},
        storage={"claim": "shared", "path": "experiments/ner"},
    )
    target = make_target(spec)
    config_map = by_kind(target)["ConfigMap"]
    rendered = llamafactory_yaml(target)
    owned = {k: rendered[k] for k in rendered if k not in BASE_SPEC["config"]}
    assert owned == {
        "model_name_or_path": "/mnt/claim/models/Qwen2.5-7B-Instruct",
        "template": "qwen",
        "dataset_dir": CONFIG_MOUNT_PATH,
        "dataset": "a,b",
        "output_dir": "/mnt/claim/experiments/ner",
        "deepspeed": f"{CONFIG_MOUNT_PATH}/deepspeed.json",
        "media_dir": "/mnt/claim/data",
    }
    # dataset_dir is where dataset_info.json is; deepspeed points at the file the ConfigMap holds.
    assert {"llamafactory.yaml", "dataset_info.json", "deepspeed.json"} == config_map["data"].keys()


@pytest.mark.parametrize(
    ("storage", "working_dir"),
    [
        ({"claim": "shared"}, CLAIM_MOUNT_PATH),
        ({"claim": "shared", "workingDir": "LLaMA-Factory"}, f"{CLAIM_MOUNT_PATH}/LLaMA-Factory"),
        ({"claim": "shared", "workingDir": "teams/a/"}, f"{CLAIM_MOUNT_PATH}/teams/a"),
    ],
    ids=["claim-root", "working-dir", "trailing-slash"],
)
def test_trainer_runs_in_its_working_directory_on_the_claim(
    storage: dict[str, Any], working_dir: str
) -> None:
    # LLaMA-Factory resolves relative paths (tokenized_path, media_dir, ...) against the working directory;
    # on the claim they land where they did by hand, and outlive the pod.
    target = make_target(make_spec(storage=storage, config={"tokenized_path": "saves/tok"}))
    assert trainer(target)["workingDir"] == working_dir
    assert llamafactory_yaml(target)["tokenized_path"] == "saves/tok"


@pytest.mark.parametrize(
    ("config", "dataset_dir", "media_dir"),
    [
        ({}, "data", "/mnt/claim/data"),
        ({}, "datasets/vlm", "/mnt/claim/datasets/vlm"),
        ({"media_dir": "images"}, "data", "images"),
        ({"media_dir": "/mnt/claim/media"}, "data", "/mnt/claim/media"),
    ],
    ids=["default", "nested-dir", "user-relative", "user-absolute"],
)
def test_media_dir_is_the_dataset_directory_unless_set(
    config: dict[str, Any], dataset_dir: str, media_dir: str
) -> None:
    # LLaMA-Factory looks for the images and videos a record names in media_dir (default: dataset_dir);
    # dataset_dir is the ConfigMap here, so the dataset's own directory on the claim takes its place.
    spec = make_spec(config={**BASE_SPEC["config"], **config}, dataset={"dir": dataset_dir})
    assert llamafactory_yaml(make_target(spec))["media_dir"] == media_dir


def test_eval_datasets_become_eval_dataset() -> None:
    spec = make_spec(
        dataset={
            "evalNames": ["dev", "test"],
            "info": {"dev": {"file_name": "dev.json"}, "test": {"file_name": "test.json"}},
        }
    )
    assert llamafactory_yaml(make_target(spec))["eval_dataset"] == "dev,test"
    assert "eval_dataset" not in llamafactory_yaml(make_target())


def test_no_deepspeed_without_spec_deepspeed() -> None:
    target = make_target()
    assert "deepspeed" not in llamafactory_yaml(target)
    assert "deepspeed.json" not in by_kind(target)["ConfigMap"]["data"]


@pytest.mark.parametrize(
    ("storage", "namespace", "name", "output_dir"),
    [
        ({"claim": "shared"}, "team-a", "ner", "/mnt/claim/runs/team-a/ner"),
        ({"claim": "shared"}, "team-b", "ner", "/mnt/claim/runs/team-b/ner"),
        ({"claim": "shared", "path": "saves/lora/run-1"}, "team-a", "ner", "/mnt/claim/saves/lora/run-1"),
        ({"claim": "shared", "path": "saves/lora/run-1/"}, "team-a", "ner", "/mnt/claim/saves/lora/run-1"),
    ],
    ids=["default", "default-other-namespace", "storage-path", "trailing-slash"],
)
def test_output_dir_is_on_the_claim(
    storage: dict[str, Any], namespace: str, name: str, output_dir: str
) -> None:
    target = make_target(make_spec(storage=storage), namespace=namespace, name=name)
    assert llamafactory_yaml(target)["output_dir"] == output_dir
    assert env_of(trainer(target))["KUBETUNE_OUTPUT_DIR"] == output_dir


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"file_name": "train.json"}, {"file_name": "/mnt/claim/data/train.json"}),
        ({"file_name": "sub/dir/train.jsonl"}, {"file_name": "/mnt/claim/data/sub/dir/train.jsonl"}),
        ({"file_name": "/mnt/claim/elsewhere/x.json"}, {"file_name": "/mnt/claim/elsewhere/x.json"}),
        ({"hf_hub_url": "llamafactory/alpaca_en"}, {"hf_hub_url": "llamafactory/alpaca_en"}),
        (
            {"file_name": "t.json", "formatting": "sharegpt", "columns": {"messages": "conversations"}},
            {
                "file_name": "/mnt/claim/data/t.json",
                "formatting": "sharegpt",
                "columns": {"messages": "conversations"},
            },
        ),
    ],
    ids=["relative", "nested", "absolute", "hub", "other-keys-verbatim"],
)
def test_dataset_info_file_names_are_made_absolute_on_the_claim(
    entry: dict[str, Any], expected: dict[str, Any]
) -> None:
    spec = FineTuneJobSpec.model_validate(
        {**BASE_SPEC, "dataset": {"names": ["train"], "dir": "data", "info": {"train": entry}}}
    )
    assert dataset_info_json(make_target(spec)) == {"train": expected}


def test_dataset_info_comes_from_the_target_not_the_spec() -> None:
    """With dataset.configMapRef the handler reads the entries and passes them in."""
    spec = make_spec(dataset={"info": None, "configMapRef": {"name": "datasets", "key": "dataset_info.json"}})
    target = make_target(spec, dataset_info={"train": {"file_name": "train.json"}})
    assert dataset_info_json(target) == {"train": {"file_name": "/mnt/claim/data/train.json"}}


@pytest.mark.parametrize(
    ("preset", "stage", "offload_optimizer", "offload_param"),
    [
        ("zero0", 0, False, False),
        ("zero2", 2, False, False),
        ("zero2-offload", 2, True, False),
        ("zero3", 3, False, False),
        ("zero3-offload", 3, True, True),
    ],
)
def test_deepspeed_presets(preset: str, stage: int, offload_optimizer: bool, offload_param: bool) -> None:
    config = deepspeed_json(make_target(make_spec(deepspeed={"preset": preset})))
    # The HF Trainer fills these from the LLaMA-Factory arguments.
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"):
        assert config[key] == "auto", key
    assert config["bf16"]["enabled"] == config["fp16"]["enabled"] == "auto"
    zero = config["zero_optimization"]
    assert zero["stage"] == stage
    cpu = {"device": "cpu", "pin_memory": True}
    assert zero.get("offload_optimizer") == (cpu if offload_optimizer else None)
    assert zero.get("offload_param") == (cpu if offload_param else None)
    if stage == 3:
        # Without it a ZeRO-3 run saves shards that from_pretrained cannot load.
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    else:
        assert not [key for key in zero if key.startswith("stage3_")]


def test_deepspeed_config_from_a_configmap_is_rendered_as_given() -> None:
    custom = {"train_micro_batch_size_per_gpu": "auto", "zero_optimization": {"stage": 1}}
    spec = make_spec(deepspeed={"configMapRef": {"name": "ds", "key": "ds.json"}})
    target = make_target(spec, deepspeed_config=custom)
    assert deepspeed_json(target) == custom
    assert llamafactory_yaml(target)["deepspeed"] == f"{CONFIG_MOUNT_PATH}/deepspeed.json"


# --- suspend and Kueue -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("queue_name", "suspend", "observed_job_suspend", "expected"),
    [
        (None, False, None, False),
        (None, False, True, False),  # resumed by the user: the operator unsuspends the Job
        (None, True, None, True),
        (None, True, False, True),  # suspended by the user
        ("gpu-queue", False, None, True),  # created suspended: Kueue admits it
        ("gpu-queue", False, True, True),  # still waiting for Kueue
        ("gpu-queue", False, False, False),  # admitted: Kueue's choice is kept
        ("gpu-queue", True, False, True),  # the user's suspend wins
    ],
)
def test_job_suspend(
    queue_name: str | None, suspend: bool, observed_job_suspend: bool | None, expected: bool
) -> None:
    target = make_target(
        make_spec(queueName=queue_name, suspend=suspend), observed_job_suspend=observed_job_suspend
    )
    assert job_of(target)["spec"]["suspend"] is expected


def test_queue_name_labels_the_job_for_kueue() -> None:
    job = job_of(make_target(make_spec(queueName="gpu-queue")))
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert "kueue.x-k8s.io/queue-name" not in job_of(make_target())["metadata"]["labels"]


# --- pod metadata ------------------------------------------------------------------------------------


def test_pod_metadata_lands_on_the_pod_template() -> None:
    spec = make_spec(
        podMetadata={
            "labels": {"team": "nlp", "cost-center": "4711"},
            "annotations": {"sidecar.istio.io/inject": "false"},
        }
    )
    meta = job_of(make_target(spec))["spec"]["template"]["metadata"]
    assert meta["annotations"] == {"sidecar.istio.io/inject": "false"}
    assert meta["labels"]["team"] == "nlp"
    assert meta["labels"]["cost-center"] == "4711"


def test_pod_labels_cannot_override_the_operators_labels() -> None:
    operator_labels = job_of(make_target())["spec"]["template"]["metadata"]["labels"]
    # (labels under kubetune.io/ are refused by the spec's rules already: tests/refusals.py)
    hijack = {k: "hijacked" for k in operator_labels if not k.startswith("kubetune.io/")}
    assert hijack
    target = make_target(make_spec(podMetadata={"labels": {**hijack, "team": "nlp"}}))
    children = by_kind(target)
    labels = children["Job"]["spec"]["template"]["metadata"]["labels"]
    assert labels == {**operator_labels, "team": "nlp"}
    assert labels["kubetune.io/finetunejob"] == "ner"
    assert labels["kubetune.io/attempt"] == "1"
    # The rendezvous Service still finds the pods.
    assert children["Service"]["spec"]["selector"].items() <= labels.items()


# --- hub models --------------------------------------------------------------------------------------


def test_hub_model_is_fetched_by_an_init_container_into_the_model_cache() -> None:
    spec = make_spec(
        model={
            "source": "hf://Qwen/Qwen2.5-0.5B",
            "template": "qwen",
            "hubTokenSecret": {"name": "hf-token", "key": "hf"},
        }
    )
    target = make_target(spec)
    pod = pod_spec(target)
    (fetch,) = pod["initContainers"]
    assert fetch["name"] == "fetch-model"
    assert fetch["command"] == ["kubetune"]
    dest = "/mnt/claim/models/hub/hf/Qwen/Qwen2.5-0.5B"
    assert fetch["args"] == ["fetch-model", "--source", "hf://Qwen/Qwen2.5-0.5B", "--dest", dest]
    assert llamafactory_yaml(target)["model_name_or_path"] == dest
    token = {"secretKeyRef": {"name": "hf-token", "key": "hf"}}
    assert env_of(fetch)["HF_TOKEN"] == token
    # Node rank 0 downloads, the others wait for it.
    assert "NODE_RANK" in env_of(fetch)
    assert [m["mountPath"] for m in fetch["volumeMounts"]] == [CLAIM_MOUNT_PATH]
    assert fetch["image"] == trainer(target)["image"]


@pytest.mark.parametrize(
    ("model", "model_cache", "dest", "token_variable", "extra_args"),
    [
        ({"source": "hf://Qwen/Qwen2.5-0.5B"}, None, "/mnt/claim/models/hub/hf/Qwen/Qwen2.5-0.5B", None, []),
        (
            {"source": "ms://qwen/Qwen2.5-0.5B", "hubTokenSecret": {"name": "ms"}},
            "cache/models",
            "/mnt/claim/cache/models/ms/qwen/Qwen2.5-0.5B",
            "MODELSCOPE_API_TOKEN",
            [],
        ),
        (
            {"source": "hf://meta-llama/Llama-3.1-8B", "revision": "v1.0", "hubTokenSecret": {"name": "hf"}},
            None,
            "/mnt/claim/models/hub/hf/meta-llama/Llama-3.1-8B@v1.0",
            "HF_TOKEN",
            ["--revision", "v1.0"],
        ),
    ],
    ids=["hf-public", "ms-token-custom-cache", "hf-revision"],
)
def test_hub_sources(
    model: dict[str, Any],
    model_cache: str | None,
    dest: str,
    token_variable: str | None,
    extra_args: list[str],
) -> None:
    storage = {"claim": "shared", "modelCache": model_cache}
    target = make_target(make_spec(model={**model, "template": "qwen"}, storage=storage))
    (fetch,) = pod_spec(target)["initContainers"]
    assert fetch["args"] == ["fetch-model", "--source", model["source"], "--dest", dest, *extra_args]
    assert llamafactory_yaml(target)["model_name_or_path"] == dest
    tokens = {"HF_TOKEN", "MODELSCOPE_API_TOKEN"} & env_of(fetch).keys()
    assert tokens == ({token_variable} if token_variable else set())


def test_hub_model_revisions_are_cached_apart() -> None:
    paths = {
        llamafactory_yaml(
            make_target(make_spec(model={"source": "hf://Qwen/Qwen2.5-0.5B", "revision": rev}))
        )["model_name_or_path"]
        for rev in ("main", "v2.0")
    }
    assert len(paths) == 2


def test_pvc_model_needs_no_init_container() -> None:
    assert "initContainers" not in pod_spec(make_target())


def test_pvc_model_on_another_claim_is_mounted_read_only() -> None:
    spec = make_spec(model={"source": "pvc://model-library/meta/Llama-3-8B"}, storage={"claim": "scratch"})
    target = make_target(spec)
    volume, mount = _volume_mounted_at(target, "/mnt/claims/model-library")
    assert volume["persistentVolumeClaim"] == {"claimName": "model-library", "readOnly": True}
    assert mount["readOnly"] is True
    assert llamafactory_yaml(target)["model_name_or_path"] == "/mnt/claims/model-library/meta/Llama-3-8B"
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod_spec(target)["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == ["scratch", "model-library"]


def test_pvc_model_on_the_storage_claim_uses_the_claim_mount() -> None:
    target = make_target()
    claims = [v for v in pod_spec(target)["volumes"] if "persistentVolumeClaim" in v]
    assert len(claims) == 1
    assert llamafactory_yaml(target)["model_name_or_path"] == "/mnt/claim/models/Qwen2.5-7B-Instruct"


# --- RBAC for the launcher ---------------------------------------------------------------------------


def test_role_allows_only_get_and_patch_on_this_jobs_status() -> None:
    role = by_kind(make_target())["Role"]
    assert role["rules"] == [
        {
            "apiGroups": ["kubetune.io"],
            "resources": ["finetunejobs/status"],
            "resourceNames": ["ner"],
            "verbs": ["get", "patch"],
        }
    ]


def test_role_is_bound_to_the_pods_service_account() -> None:
    children = by_kind(make_target())
    binding = children["RoleBinding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": children["Role"]["metadata"]["name"],
    }
    account = children["ServiceAccount"]["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": "team-a"}]
    assert children["Job"]["spec"]["template"]["spec"]["serviceAccountName"] == account


# --- attempts ----------------------------------------------------------------------------------------


def test_a_new_attempt_gets_its_own_job_and_keeps_the_output_dir() -> None:
    first, second = by_kind(make_target(attempt=1)), by_kind(make_target(attempt=2))
    assert first["Job"]["metadata"]["name"] == "ner-a1"
    assert second["Job"]["metadata"]["name"] == "ner-a2"
    env1, env2 = (
        env_of(first["Job"]["spec"]["template"]["spec"]["containers"][0]),
        env_of(second["Job"]["spec"]["template"]["spec"]["containers"][0]),
    )
    assert (env1["KUBETUNE_ATTEMPT"], env2["KUBETUNE_ATTEMPT"]) == ("1", "2")
    assert env2["MASTER_ADDR"] == "ner-a2-0.ner-workers.team-a.svc"
    assert second["Job"]["metadata"]["labels"]["kubetune.io/attempt"] == "2"
    assert second["Job"]["spec"]["template"]["metadata"]["labels"]["kubetune.io/attempt"] == "2"
    # The next attempt resumes from the checkpoints of the previous one: same output dir, same children.
    assert env1["KUBETUNE_OUTPUT_DIR"] == env2["KUBETUNE_OUTPUT_DIR"]
    for kind in KINDS[:-1]:
        assert first[kind] == second[kind], kind


def test_rendering_is_deterministic() -> None:
    assert render.children(make_target()) == render.children(make_target())


# --- where the results are ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("finetuning_type", "adapter"),
    [("lora", True), ("oft", True), ("full", False), ("freeze", False), (None, True)],
    ids=["lora", "oft", "full", "freeze", "unset-is-lora"],
)
def test_output_has_an_adapter_path_only_for_adapters(finetuning_type: str | None, adapter: bool) -> None:
    config = {**BASE_SPEC["config"], "finetuning_type": finetuning_type}
    if finetuning_type is None:
        del config["finetuning_type"]
    spec = FineTuneJobSpec.model_validate({**BASE_SPEC, "config": config})
    out = render.output(make_target(spec))
    assert out["claim"] == "shared"
    assert out["path"] == "runs/team-a/ner"
    assert ("adapterPath" in out) is adapter


# --- the YAML people read ----------------------------------------------------------------------------


def test_rendered_yaml_has_no_anchors() -> None:
    spec = make_spec(model={"source": "hf://Qwen/Qwen2.5-0.5B"})
    text = yamlio.dump_all(render.children(make_target(spec)))
    assert "&id" not in text and "*id" not in text
