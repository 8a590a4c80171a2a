"""Bad input is refused at the earliest point, with a message that names the field.

First the API server (the CRD's schema and CEL rules: `kubectl apply` fails), then the operator (the
LLaMA-Factory config against the pinned release: condition Failed, reason InvalidConfig, an Event).
"""

from __future__ import annotations

import copy
import json
import subprocess
from typing import Any

import pytest
from kubernetes import client

from tests.cluster import localcluster
from tests.integration.finetunejobs import FineTuneJobs, finetunejob
from tests.kube import wait_until

pytestmark = pytest.mark.usefixtures("operator")


def edit(path: str, value: Any, **more: Any) -> dict[str, Any]:
    """A FineTuneJob with spec fields set (None deletes one): `edit("resources.nodes", 0, deepspeed=None)`."""
    body = finetunejob("bad")
    for dotted, new in [(path, value), *more.items()]:
        node = body["spec"]
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        if new is None:
            node.pop(last, None)
        else:
            node[last] = copy.deepcopy(new)
    return body


def kubectl_apply(
    cluster: localcluster.ClusterInfo, namespace: str, body: dict
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [cluster.kubectl, "--kubeconfig", cluster.kubeconfig, "-n", namespace, "apply", "-f", "-"],
        input=json.dumps(body), capture_output=True, text=True,
    )  # fmt: skip


# (case, body, words the API server's refusal must contain)
REFUSED_BY_THE_API_SERVER = [
    ("zero nodes", edit("resources.nodes", 0), ["spec.resources.nodes", "greater than or equal to 1"]),
    ("negative GPUs", edit("resources.gpusPerNode", -1), ["spec.resources.gpusPerNode"]),
    ("nodes not a number", edit("resources.nodes", "two"), ["spec.resources.nodes", "integer"]),
    ("unknown model scheme", edit("model.source", "s3://bucket/qwen"), ["spec.model.source"]),
    ("no template", edit("model.template", None), ["spec.model.template", "Required"]),
    ("no model", edit("model", None), ["spec.model", "Required"]),
    ("no datasets", edit("dataset.names", []), ["spec.dataset.names"]),
    (
        "dataset info and configMapRef",
        edit("dataset.configMapRef", {"name": "info", "key": "dataset_info.json"}),
        ["spec.dataset", "exactly one of dataset.info"],
    ),
    ("dataset without info", edit("dataset.info", None), ["spec.dataset", "exactly one of dataset.info"]),
    (
        "dataset name without an entry",
        edit("dataset.names", ["alpaca_clue_train", "missing_set"]),
        ["spec.dataset.names", "needs an entry in dataset.info"],
    ),
    ("unknown preset", edit("deepspeed.preset", "zero4"), ["spec.deepspeed.preset", "zero3-offload"]),
    ("empty deepspeed", edit("deepspeed", {}), ["spec.deepspeed", "exactly one of deepspeed.preset"]),
    (
        "deepspeed without GPUs",
        edit("resources", {"nodes": 1, "gpusPerNode": 0}),
        ["spec.deepspeed", "deepspeed needs GPUs"],
    ),
    (
        "multi-node without GPUs",
        edit("resources", {"nodes": 2, "gpusPerNode": 0}, deepspeed=None),
        ["spec.resources.nodes", "multi-node training needs GPUs"],
    ),
    (
        "token for a pvc model",
        edit("model.hubTokenSecret", {"name": "hf-token"}),
        ["spec.model.hubTokenSecret", "only for hub sources"],
    ),
    ("no storage", edit("storage", None), ["spec.storage", "Required"]),
    ("bad claim name", edit("storage.claim", "Shared_Claim"), ["spec.storage.claim"]),
    ("absolute output path", edit("storage.path", "/data/out"), ["spec.storage.path"]),
    ("absolute dataset dir", edit("dataset.dir", "/data/clue"), ["spec.dataset.dir"]),
    ("negative restarts", edit("maxRestarts", -1), ["spec.maxRestarts"]),
    ("zero deadline", edit("activeDeadlineSeconds", 0), ["spec.activeDeadlineSeconds"]),
    ("bad pull policy", edit("imagePullPolicy", "Sometimes"), ["spec.imagePullPolicy", "IfNotPresent"]),
    ("a field that does not exist", edit("gpus", 8), ['unknown field "spec.gpus"']),
    ("config not a mapping", edit("config", ["stage", "sft"]), ["spec.config", "object"]),
]


@pytest.mark.parametrize(
    ("body", "words"), [pytest.param(b, w, id=case) for case, b, w in REFUSED_BY_THE_API_SERVER]
)
def test_refused_by_the_api_server(
    cluster: localcluster.ClusterInfo, namespace: str, api: client.ApiClient, body: dict, words: list[str]
) -> None:
    result = kubectl_apply(cluster, namespace, body)
    assert result.returncode != 0, f"accepted: {result.stdout}"
    for word in words:
        assert word in result.stderr, result.stderr
    assert not FineTuneJobs(api, namespace).exists("bad")


def test_storage_cannot_change_once_created(
    cluster: localcluster.ClusterInfo, namespace: str, api: client.ApiClient
) -> None:
    body = finetunejob("moving", suspend=True)
    assert kubectl_apply(cluster, namespace, body).returncode == 0
    body["spec"]["storage"] = {"claim": "shared", "path": "elsewhere"}
    result = kubectl_apply(cluster, namespace, body)
    assert result.returncode != 0
    assert "storage.claim and storage.path are immutable" in result.stderr


# (case, config change, words the Failed condition and the Event must contain)
FAILED_BY_THE_OPERATOR = [
    ("typo", {"lora_rnak": 16}, ["`lora_rnak`", "did you mean `lora_rank`"]),
    ("typo in learning rate", {"lerning_rate": 1e-4}, ["`lerning_rate`", "did you mean `learning_rate`"]),
    ("owned output_dir", {"output_dir": "saves/x"}, ["output_dir", "spec.storage.path"]),
    ("owned model path", {"model_name_or_path": "/data/m"}, ["model_name_or_path", "spec.model.source"]),
    ("owned deepspeed", {"deepspeed": "ds_z3_config.json"}, ["deepspeed", "spec.deepspeed"]),
    ("bad stage", {"stage": "sft2"}, ["stage", "sft2", "did you mean `sft`"]),
    ("bad finetuning type", {"finetuning_type": "loraa"}, ["finetuning_type", "did you mean `lora`"]),
]


@pytest.mark.parametrize(
    ("config", "words"), [pytest.param(c, w, id=case) for case, c, w in FAILED_BY_THE_OPERATOR]
)
def test_failed_by_the_operator_before_anything_is_allocated(
    namespace: str,
    claim: tuple[str, object],
    api: client.ApiClient,
    core: client.CoreV1Api,
    batch: client.BatchV1Api,
    config: dict,
    words: list[str],
) -> None:
    body = finetunejob("typo")
    body["spec"]["config"].update(config)
    ftjs = FineTuneJobs(api, namespace)
    ftjs.create(body)

    status = ftjs.wait_phase("typo", "Failed", timeout=30)
    assert status["reason"] == "InvalidConfig"
    failed = ftjs.condition("typo", "Failed")
    for word in words:
        assert word in failed["message"], failed["message"]
    assert not batch.list_namespaced_job(namespace).items, "a bad config must not cost an allocation"
    events = wait_until(
        lambda: [
            e
            for e in core.list_namespaced_event(namespace, field_selector="involvedObject.name=typo").items
            if e.reason == "InvalidConfig"
        ],
        "the InvalidConfig Event",
        timeout=15,
    )
    assert events[0].type == "Warning"
    assert all(word in events[0].message for word in words)


def test_bad_template_fails_with_a_suggestion(
    namespace: str, claim: tuple[str, object], api: client.ApiClient
) -> None:
    ftjs = FineTuneJobs(api, namespace)
    body = finetunejob("tpl")
    body["spec"]["model"]["template"] = "qwen3x"
    ftjs.create(body)
    status = ftjs.wait_phase("tpl", "Failed", timeout=30)
    assert "spec.model.template" in status["message"] or "qwen3x" in status["message"]
    assert "did you mean `qwen3`" in status["message"]


def test_missing_dataset_config_map_waits_and_says_which(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, core: client.CoreV1Api
) -> None:
    ftjs = FineTuneJobs(api, namespace)
    body = finetunejob("by-ref")
    body["spec"]["dataset"] = {
        "names": ["alpaca_clue_train"],
        "configMapRef": {"name": "clue-info", "key": "dataset_info.json"},
    }
    ftjs.create(body)
    status = ftjs.wait_reason("by-ref", "MissingConfigMap", timeout=30)
    assert status["phase"] == "Pending"
    assert "ConfigMap clue-info" in status["message"]

    core.create_namespaced_config_map(
        namespace,
        {
            "metadata": {"name": "clue-info"},
            "data": {"dataset_info.json": json.dumps({"alpaca_clue_train": {"file_name": "clue.json"}})},
        },
    )
    ftjs.wait_phase("by-ref", "Succeeded", timeout=60)
    rendered = core.read_namespaced_config_map("by-ref-config", namespace).data["dataset_info.json"]
    assert json.loads(rendered)["alpaca_clue_train"]["file_name"] == "/mnt/claim/datasets/clue.json"
