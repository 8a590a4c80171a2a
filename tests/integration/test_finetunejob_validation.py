"""Bad input is refused at the earliest point, with a message that names the field.

First the API server (the CRD's schema and CEL rules: `kubectl apply` fails), then the operator (the
LLaMA-Factory config against the pinned release: condition Failed, reason InvalidConfig, an Event).
"""

from __future__ import annotations

import json
import subprocess

import pytest
from kubernetes import client

from tests.cluster import localcluster
from tests.integration.finetunejobs import FineTuneJobs
from tests.integration.test_modelserve import ModelServes
from tests.kube import wait_until
from tests.refusals import (
    REFUSED_BY_THE_API_SERVER,
    SERVE_REFUSED_BY_THE_API_SERVER,
    edit,
    serve_edit,
)
from tests.specs import finetunejob

pytestmark = pytest.mark.usefixtures("operator")


def log_since(operator, offset: int) -> str:
    """What the operator logged since `offset` (the log's size when the test began)."""
    with open(operator.log_path, "rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def kubectl_apply(
    cluster: localcluster.ClusterInfo, namespace: str, body: dict
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [cluster.kubectl, "--kubeconfig", cluster.kubeconfig, "-n", namespace, "apply", "-f", "-"],
        input=json.dumps(body), capture_output=True, text=True,
    )  # fmt: skip


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


@pytest.mark.parametrize(
    "resources",
    [
        {"nodes": 2, "gpusPerNode": 0},
        {"nodes": 2, "gpusPerNode": 0, "processesPerNode": 4},
        {"nodes": 1, "gpusPerNode": 0, "processesPerNode": 2},
        {"nodes": 2, "gpusPerNode": 8, "processesPerNode": 8},
    ],
    ids=["2-cpu-nodes", "2x4-cpu", "1x2-cpu", "gpus-said-twice"],
)
def test_a_cpu_rehearsal_with_deepspeed_is_accepted(
    cluster: localcluster.ClusterInfo, namespace: str, resources: dict
) -> None:
    body = edit("resources", resources, deepspeed={"preset": "zero3"})
    result = subprocess.run(
        [cluster.kubectl, "--kubeconfig", cluster.kubeconfig, "-n", namespace, "apply", "--dry-run=server",
         "-f", "-"],
        input=json.dumps(body), capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


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
    (
        "SwanLab key",
        {"swanlab_api_key": "sk-1"},
        ["spec.config.swanlab_api_key", "spec.secretEnv", "SWANLAB_API_KEY"],
    ),
    ("Lark secret", {"swanlab_lark_secret": "s"}, ["spec.config.swanlab_lark_secret", "Secret"]),
    ("hub token", {"hf_hub_token": "hf_x"}, ["hf_hub_token", "spec.model.hubTokenSecret"]),
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


# (case, body, the reason, words the Failed condition must contain): checks only the operator can make,
# or values only the API server can judge once they are in a child (issue 10, point 13).
OPERATOR_REFUSES = [
    (
        "finetuning type in a list",
        edit("config.finetuning_type", ["lora"]),
        "InvalidSpec",
        ["finetuning_type"],
    ),
    ("stage a mapping", edit("config.stage", {"sft": True}), "InvalidSpec", ["config.stage", "string"]),
    ("LoRA rank in words", edit("config.lora_rank", "eight"), "InvalidSpec", ["config.lora_rank"]),
    (
        "pod label value",
        edit("podMetadata", {"labels": {"team": "a b"}}),
        "InvalidSpec",
        ["podMetadata.labels"],
    ),
    ("node selector key", edit("resources.nodeSelector", {"bad key!": "x"}), "InvalidSpec", ["nodeSelector"]),
    (
        "secret env of the operator",
        edit("secretEnv", [{"name": "MASTER_ADDR", "secretKeyRef": {"name": "s"}}]),
        "InvalidSpec",
        ["secretEnv", "MASTER_ADDR", "set by the operator"],
    ),
    (
        "toleration operator",
        edit("resources.tolerations", [{"key": "gpu", "operator": "Sometimes"}]),
        "InvalidValue",
        ["Job bad-a1", "tolerations", "Sometimes"],
    ),
    (
        "pod annotation key",
        edit("podMetadata", {"annotations": {"not a key!": "x"}}),
        "InvalidValue",
        ["annotations", "not a key!"],
    ),
]


@pytest.mark.parametrize(
    ("body", "reason", "words"), [pytest.param(b, r, w, id=case) for case, b, r, w in OPERATOR_REFUSES]
)
def test_refused_by_the_operator_with_the_field_named(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, core: client.CoreV1Api,
    operator, body: dict, reason: str, words: list[str],
) -> None:  # fmt: skip
    offset = operator.log_path.stat().st_size
    ftjs = FineTuneJobs(api, namespace)
    ftjs.create(body)
    status = ftjs.wait_phase("bad", "Failed", timeout=30)
    assert status["reason"] == reason, status
    for word in words:
        assert word in status["message"], status["message"]
    wait_until(
        lambda: [
            e
            for e in core.list_namespaced_event(namespace, field_selector="involvedObject.name=bad").items
            if e.reason == reason
        ],
        f"the {reason} Event",
        timeout=15,
    )
    assert "Traceback" not in log_since(operator, offset), log_since(operator, offset)[-3000:]


@pytest.mark.parametrize(
    ("content", "words"),
    [
        pytest.param({"alpaca_clue_train": None}, ["entry 'alpaca_clue_train'", "got null"], id="null entry"),
        pytest.param({"alpaca_clue_train": "x.json"}, ["got a string"], id="string entry"),
        pytest.param({"alpaca_clue_train": 3}, ["got a number"], id="number entry"),
        pytest.param(["alpaca_clue_train"], ["must be a JSON object"], id="a list"),
        pytest.param(
            {"alpaca_clue_train": {"file_name": 7}}, ["alpaca_clue_train.file_name"], id="number file"
        ),
    ],
)
def test_a_dataset_info_config_map_of_the_wrong_shape_is_named(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, core: client.CoreV1Api,
    operator, content: object, words: list[str],
) -> None:  # fmt: skip
    offset = operator.log_path.stat().st_size
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "clue-info"}, "data": {"dataset_info.json": json.dumps(content)}}
    )
    ftjs = FineTuneJobs(api, namespace)
    ftjs.create(
        edit(
            "dataset",
            {
                "names": ["alpaca_clue_train"],
                "configMapRef": {"name": "clue-info", "key": "dataset_info.json"},
            },
        )
    )
    status = ftjs.wait_phase("bad", "Failed", timeout=30)
    assert status["reason"] == "InvalidConfigMap"
    assert "ConfigMap clue-info key dataset_info.json (spec.dataset.configMapRef)" in status["message"]
    for word in words:
        assert word in status["message"], status["message"]
    assert "Traceback" not in log_since(operator, offset), log_since(operator, offset)[-3000:]


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


# --- ModelServes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "words"), [pytest.param(b, w, id=case) for case, b, w in SERVE_REFUSED_BY_THE_API_SERVER]
)
def test_a_modelserve_refused_by_the_api_server(
    cluster: localcluster.ClusterInfo, namespace: str, api: client.ApiClient, body: dict, words: list[str]
) -> None:
    result = kubectl_apply(cluster, namespace, body)
    assert result.returncode != 0, f"accepted: {result.stdout}"
    for word in words:
        assert word in result.stderr, result.stderr


SERVE_REFUSED_BY_THE_OPERATOR = [
    (
        "model on another claim",
        serve_edit("model.source", "pvc://other/models/qwen"),
        "InvalidSpec",
        ["spec.model.source is on claim other"],
    ),
    (
        "node selector key",
        serve_edit("resources.nodeSelector", {"bad key!": "x"}),
        "InvalidSpec",
        ["nodeSelector"],
    ),
    (
        "toleration operator",
        serve_edit("resources.tolerations", [{"key": "gpu", "operator": "Sometimes"}]),
        "InvalidValue",
        ["Deployment bad-vllm", "tolerations", "Sometimes"],
    ),
]


@pytest.mark.parametrize(
    ("body", "reason", "words"),
    [pytest.param(b, r, w, id=case) for case, b, r, w in SERVE_REFUSED_BY_THE_OPERATOR],
)
def test_a_modelserve_refused_by_the_operator_with_the_field_named(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, operator, body: dict, reason: str,
    words: list[str],
) -> None:  # fmt: skip
    offset = operator.log_path.stat().st_size
    serves = ModelServes(api, namespace)
    serves.create(body)
    status = serves.wait("bad", lambda s: s.get("phase") == "Failed", "Failed", timeout=30)
    assert status["reason"] == reason, status
    for word in words:
        assert word in status["message"], status["message"]
    assert "Traceback" not in log_since(operator, offset), log_since(operator, offset)[-3000:]


def test_the_table_has_fifty_malformed_resources() -> None:
    count = sum(
        map(
            len,
            (
                REFUSED_BY_THE_API_SERVER,
                FAILED_BY_THE_OPERATOR,
                OPERATOR_REFUSES,
                SERVE_REFUSED_BY_THE_API_SERVER,
                SERVE_REFUSED_BY_THE_OPERATOR,
            ),
        )
    )
    assert count >= 50, count
