"""A FineTuneJob and a ModelServe agree on every piece of a pod they have in common: the same model source
gives the same model path, the same fetch-model init container and the same hub token variable (the one
the hub's client reads); the same resources give the same /dev/shm, requests and placement; both carry the
same kind of metadata, and report a stuck pod and keep their conditions' transition times the same way
(pure)."""

from __future__ import annotations

import copy
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune.api.common import HUB_TOKEN_ENV
from kubetune.api.finetunejob import FineTuneJobSpec
from kubetune.api.modelserve import ModelServeSpec
from kubetune.launcher import fetch
from kubetune.render import finetunejob as ftj_render
from kubetune.render import modelserve as ms_render
from kubetune.status import finetunejob as ftj_status
from kubetune.status import modelserve as ms_status

FTJ: dict[str, Any] = {
    "model": {"source": "pvc://shared/models/Qwen2.5-7B-Instruct", "template": "qwen"},
    "dataset": {"names": ["clue"], "info": {"clue": {"file_name": "clue.json"}}},
    "config": {"stage": "sft", "finetuning_type": "lora"},
    "resources": {"nodes": 1, "gpusPerNode": 1},
    "storage": {"claim": "shared"},
}
MS: dict[str, Any] = {
    "model": {"source": "pvc://shared/models/Qwen2.5-7B-Instruct"},
    "storage": {"claim": "shared"},
}
TOKEN_VARIABLES = set(HUB_TOKEN_ENV.values())


def ftj_target(model: dict[str, Any], storage: dict[str, Any] | None = None, **changes: Any):
    raw = {**copy.deepcopy(FTJ), **changes, "model": {**model, "template": "qwen"}}
    if storage:
        raw["storage"] = storage
    spec = FineTuneJobSpec.model_validate(raw)
    return ftj_render.FineTuneJobTarget(name="ner", namespace="team-a", uid="u-ftj", spec=spec)


def ms_target(model: dict[str, Any], storage: dict[str, Any] | None = None, **changes: Any):
    raw = {**copy.deepcopy(MS), **changes, "model": model}
    if storage:
        raw["storage"] = storage
    spec = ModelServeSpec.model_validate(raw)
    return ms_render.ModelServeTarget(name="qwen", namespace="team-a", uid="u-ms", spec=spec)


def ftj_pod(target: ftj_render.FineTuneJobTarget) -> dict[str, Any]:
    return ftj_render.job(target)["spec"]["template"]


def ms_pod(target: ms_render.ModelServeTarget) -> dict[str, Any]:
    return ms_render.deployment(target)["spec"]["template"]


def init_container(pod: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((c for c in pod["spec"].get("initContainers", []) if c["name"] == name), None)


def token_env(container: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in container.get("env", []) if e["name"] in TOKEN_VARIABLES]


# --- the model source -------------------------------------------------------------------------------

SOURCES = [
    # (model, storage, model path in both kinds' pods, hub token variable)
    ({"source": "pvc://shared/models/Qwen2.5-7B"}, None, "/mnt/claim/models/Qwen2.5-7B", None),
    ({"source": "hf://Qwen/Qwen2.5-0.5B"}, None, "/mnt/claim/models/hub/hf/Qwen/Qwen2.5-0.5B", None),
    (
        {"source": "hf://meta-llama/Llama-3-8B", "hubTokenSecret": {"name": "hf", "key": "token"}},
        None,
        "/mnt/claim/models/hub/hf/meta-llama/Llama-3-8B",
        "HF_TOKEN",
    ),
    (
        {"source": "hf://Qwen/Qwen2.5-0.5B", "revision": "v1", "hubTokenSecret": {"name": "hf"}},
        {"claim": "shared", "modelCache": "cache/models"},
        "/mnt/claim/cache/models/hf/Qwen/Qwen2.5-0.5B@v1",
        "HF_TOKEN",
    ),
    (
        {"source": "ms://qwen/Qwen2.5-0.5B", "hubTokenSecret": {"name": "ms", "key": "api-token"}},
        None,
        "/mnt/claim/models/hub/ms/qwen/Qwen2.5-0.5B",
        "MODELSCOPE_API_TOKEN",
    ),
    ({"source": "ms://qwen/Qwen2.5-0.5B"}, None, "/mnt/claim/models/hub/ms/qwen/Qwen2.5-0.5B", None),
]
SOURCE_IDS = ["pvc", "hf", "hf-token", "hf-revision-cache", "ms-token", "ms"]


@pytest.mark.parametrize(("model", "storage", "path", "variable"), SOURCES, ids=SOURCE_IDS)
def test_the_same_source_is_the_same_model_path_in_both_kinds(
    model: dict[str, Any], storage: dict[str, Any] | None, path: str, variable: str | None
) -> None:
    ftj, ms = ftj_target(model, storage), ms_target(model, storage)
    config = yaml.safe_load(ftj_render.config_map(ftj)["data"]["llamafactory.yaml"])
    # What the adapter was trained against is what vLLM serves: the adapter's base model matches.
    assert config["model_name_or_path"] == path
    assert ms_render.vllm_args(ms)[0] == path
    sidecar = init_container(ms_pod(ms), "adapter-sync")
    assert sidecar is not None and sidecar["args"][sidecar["args"].index("--model") + 1] == path


@pytest.mark.parametrize(("model", "storage", "path", "variable"), SOURCES, ids=SOURCE_IDS)
def test_the_same_source_gets_the_same_fetch_model_container_and_token_variable(
    model: dict[str, Any], storage: dict[str, Any] | None, path: str, variable: str | None
) -> None:
    ftj_fetch = init_container(ftj_pod(ftj_target(model, storage)), "fetch-model")
    ms_fetch = init_container(ms_pod(ms_target(model, storage)), "fetch-model")
    if model["source"].startswith("pvc://"):
        assert ftj_fetch is None and ms_fetch is None, "a model on the claim is not downloaded"
        return
    assert ftj_fetch is not None and ms_fetch is not None
    for key in ("command", "args", "volumeMounts"):
        assert ftj_fetch[key] == ms_fetch[key], key
    assert ms_fetch["args"][ms_fetch["args"].index("--dest") + 1] == path
    assert ms_fetch["volumeMounts"] == [{"name": "claim", "mountPath": "/mnt/claim", "readOnly": False}]
    secret = model.get("hubTokenSecret")
    expected = (
        [
            {
                "name": variable,
                "valueFrom": {"secretKeyRef": {"name": secret["name"], "key": secret.get("key", "token")}},
            }
        ]
        if secret
        else []
    )
    assert token_env(ftj_fetch) == token_env(ms_fetch) == expected


@pytest.mark.parametrize(("model", "storage", "path", "variable"), SOURCES, ids=SOURCE_IDS)
def test_the_token_goes_where_it_is_used(
    model: dict[str, Any], storage: dict[str, Any] | None, path: str, variable: str | None
) -> None:
    """The trainer and its preprocessing may reach the hub themselves; vLLM runs offline from the claim."""
    ftj = ftj_target(model, storage)
    trainer = ftj_pod(ftj)["spec"]["containers"][0]
    fetch_in_trainer_pod = init_container(ftj_pod(ftj), "fetch-model") or {}
    assert token_env(trainer) == token_env(fetch_in_trainer_pod)
    vllm = ms_pod(ms_target(model, storage))["spec"]["containers"][0]
    assert token_env(vllm) == []
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in vllm["env"]


@pytest.mark.parametrize(("scheme", "client_module"), [("hf", "huggingface_hub"), ("ms", "modelscope")])
def test_fetch_model_downloads_with_the_token_from_the_variable_the_pod_is_given(
    scheme: str, client_module: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Render and fetch-model name the token's variable from one table: the download gets the token."""
    calls: list[dict[str, Any]] = []
    fake = types.ModuleType(client_module)
    fake.snapshot_download = lambda **kwargs: calls.append(kwargs)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, client_module, fake)
    model = {"source": f"{scheme}://org/name", "hubTokenSecret": {"name": "s"}}
    [variable] = [e["name"] for e in token_env(init_container(ms_pod(ms_target(model)), "fetch-model"))]
    for other in TOKEN_VARIABLES:
        monkeypatch.delenv(other, raising=False)
    monkeypatch.setenv(variable, "secret-value")

    fetch.hub_download(scheme, "org/name", None, tmp_path / "into")
    assert [c["token"] for c in calls] == ["secret-value"]


# --- /dev/shm, requests and placement ---------------------------------------------------------------

PLACEMENTS = [
    {},
    {"sharedMemory": "8Gi"},
    {"cpu": "8", "memory": "64Gi", "gpuResource": "amd.com/gpu"},
    {
        "nodeSelector": {"pool": "a100"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                    ]
                }
            }
        },
        "priorityClassName": "training-high",
    },
]


def _pods_with(resources: dict[str, Any], gpus: int) -> tuple[dict[str, Any], dict[str, Any]]:
    ftj = ftj_target(FTJ["model"], resources={**resources, "gpusPerNode": gpus})
    ms = ms_target(MS["model"], resources={**resources, "gpus": gpus})
    return ftj_pod(ftj)["spec"], ms_pod(ms)["spec"]


@pytest.mark.parametrize("resources", PLACEMENTS, ids=["defaults", "shm-limit", "requests", "placement"])
@pytest.mark.parametrize("gpus", [1, 4])
def test_the_same_resources_give_the_same_shm_requests_and_placement(
    resources: dict[str, Any], gpus: int
) -> None:
    ftj, ms = _pods_with(resources, gpus)

    def shm(pod: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        volume = next(v for v in pod["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory")
        mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == "/dev/shm")
        return volume, mount

    assert shm(ftj) == shm(ms)
    assert shm(ms)[0]["emptyDir"].get("sizeLimit") == resources.get("sharedMemory")
    assert ftj["containers"][0]["resources"] == ms["containers"][0]["resources"]
    assert ftj["containers"][0]["resources"]["limits"][resources.get("gpuResource", "nvidia.com/gpu")] == str(
        gpus
    )
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName"):
        assert ftj.get(key) == ms.get(key), key
        assert ms.get(key) == resources.get(key), key


# --- metadata ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pod_metadata",
    [
        None,
        {"labels": {"team": "nlp"}, "annotations": {"cost-center": "42"}},
        # The operator's own labels win over a user's of the same key: selectors depend on them.
        {"labels": {"app.kubernetes.io/managed-by": "someone-else"}},
    ],
    ids=["none", "extra", "clash"],
)
def test_both_kinds_merge_pod_metadata_and_own_their_children_the_same_way(
    pod_metadata: dict[str, Any] | None,
) -> None:
    extra = {"podMetadata": pod_metadata} if pod_metadata else {}
    ftj, ms = ftj_target(FTJ["model"], **extra), ms_target(MS["model"], **extra)
    pods = [ftj_pod(ftj)["metadata"], ms_pod(ms)["metadata"]]
    for pod in pods:
        assert pod["labels"]["app.kubernetes.io/managed-by"] == "kubetune"
        for key, value in ((pod_metadata or {}).get("labels") or {}).items():
            if not key.startswith("app.kubernetes.io/"):
                assert pod["labels"][key] == value
        assert pod.get("annotations") == (pod_metadata or {}).get("annotations")

    children = [*ftj_render.children(ftj), *ms_render.children(ms)]
    for child in children:
        [owner] = child["metadata"]["ownerReferences"]
        mine = (
            ("FineTuneJob", "ner", "u-ftj")
            if owner["kind"] == "FineTuneJob"
            else ("ModelServe", "qwen", "u-ms")
        )
        assert owner == {
            "apiVersion": "kubetune.io/v1alpha1",
            "kind": mine[0],
            "name": mine[1],
            "uid": mine[2],
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert child["metadata"]["namespace"] == "team-a"
        assert child["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kubetune"


# --- status: a stuck pod, and conditions' transition times -------------------------------------------

STUCK_PODS = [
    {
        "metadata": {"name": "p"},
        "status": {
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes"}
            ],
        },
    },
    {
        "metadata": {"name": "p"},
        "status": {
            "phase": "Pending",
            "initContainerStatuses": [
                {
                    "name": "fetch-model",
                    "state": {"waiting": {"reason": "ImagePullBackOff", "message": "nope"}},
                }
            ],
        },
    },
    {
        "metadata": {"name": "p"},
        "status": {
            "phase": "Pending",
            "initContainerStatuses": [
                {
                    "name": "fetch-model",
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "message": "401 Unauthorized"}},
                    "restartCount": 3,
                }
            ],
        },
    },
]


def _ftj_status(pods: list[dict[str, Any]], previous: dict[str, Any], now: str) -> dict[str, Any]:
    job = {"metadata": {"name": "ner-a1", "labels": {"kubetune.io/attempt": "1"}}, "spec": {}, "status": {}}
    return ftj_status.compute(
        ftj_status.Observation(generation=2, now=now, previous=previous, job=job, pods=pods)
    )


def _ms_status(pods: list[dict[str, Any]], previous: dict[str, Any], now: str) -> dict[str, Any]:
    deployment = {"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "replicas": 1}}
    observation = ms_status.Observation(
        generation=2,
        now=now,
        previous=previous,
        endpoint="http://qwen-vllm.team-a.svc:8000/v1",
        served_model_name="qwen",
        selector="kubetune.io/modelserve=qwen",
        desired_replicas=1,
        deployment=deployment,
        pods=pods,
    )
    return ms_status.compute(observation)


@pytest.mark.parametrize("pod", STUCK_PODS, ids=["unschedulable", "image-pull", "crash-loop"])
def test_both_kinds_say_the_same_about_a_stuck_pod(pod: dict[str, Any]) -> None:
    ftj, ms = _ftj_status([pod], {}, "2026-01-01T00:00:00Z"), _ms_status([pod], {}, "2026-01-01T00:00:00Z")
    assert ftj["phase"] == ms["phase"] == "Pending"
    assert (ftj["reason"], ftj["message"]) == (ms["reason"], ms["message"])


@pytest.mark.parametrize("compute", [_ftj_status, _ms_status], ids=["FineTuneJob", "ModelServe"])
def test_conditions_keep_their_transition_time_until_their_status_flips(compute: Any) -> None:
    first = compute([STUCK_PODS[0]], {}, "2026-01-01T00:00:00Z")
    again = compute([STUCK_PODS[1]], first, "2026-01-01T00:05:00Z")
    for before, after in zip(first["conditions"], again["conditions"], strict=True):
        assert before["type"] == after["type"]
        assert after["observedGeneration"] == 2
        assert set(after) == {
            "type",
            "status",
            "reason",
            "message",
            "lastTransitionTime",
            "observedGeneration",
        }
        if before["status"] == after["status"]:
            assert after["lastTransitionTime"] == "2026-01-01T00:00:00Z", after["type"]
        else:
            assert after["lastTransitionTime"] == "2026-01-01T00:05:00Z", after["type"]


@pytest.mark.parametrize("pod", STUCK_PODS, ids=["unschedulable", "image-pull", "crash-loop"])
def test_a_stuck_pod_is_a_warning_event_in_both_kinds(pod: dict[str, Any]) -> None:
    previous = {"phase": "Pending", "reason": "Starting", "message": "starting"}
    ftj = _ftj_status([pod], previous, "2026-01-01T00:00:00Z")
    ms = _ms_status([pod], previous, "2026-01-01T00:00:00Z")
    [ftj_event] = ftj_status.transitions(previous, ftj)
    [ms_event] = ms_status.transitions(previous, ms)
    assert ftj_event == ms_event
    assert ms_event.type == "Warning"
