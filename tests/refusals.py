"""What the API server refuses, as tables that two tests share.

tests/integration/test_finetunejob_validation.py applies each case to the real API server (the CRD's schema
and CEL rules); tests/unit/test_validate_offline.py runs each through `kubetune validate`, offline. Both must
refuse every case; a case that only the cluster can refuse goes in NEEDS_THE_CLUSTER, with the reason.
"""

from __future__ import annotations

import copy
from typing import Any

from kubetune.api.cel import Rule
from kubetune.api.common import Model
from tests.specs import finetunejob, modelserve


def declared_rules() -> list[Rule]:
    """Every CEL rule on every model (on the class, or on a field), once."""
    found: list[Rule] = []
    pending, seen = list(Model.__subclasses__()), set()
    while pending:
        model = pending.pop()
        if model in seen:
            continue
        seen.add(model)
        pending += model.__subclasses__()
        found += model.cel_rules
        for info in model.model_fields.values():
            found += [m for m in info.metadata if isinstance(m, Rule)]
    return list(dict.fromkeys(found))


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


def named(name: str, body: dict[str, Any]) -> dict[str, Any]:
    body["metadata"]["name"] = name
    return body


# (case, body, words the API server's refusal must contain)
REFUSED_BY_THE_API_SERVER = [
    (
        "a pod label that would make the pods pass for a ModelServe's",
        edit("podMetadata", {"labels": {"kubetune.io/modelserve": "qwen"}}),
        ["spec.podMetadata.labels", "kubetune.io/ are the operator's own"],
    ),
    ("zero nodes", edit("resources.nodes", 0), ["spec.resources.nodes", "greater than or equal to 1"]),
    ("negative GPUs", edit("resources.gpusPerNode", -1), ["spec.resources.gpusPerNode"]),
    ("nodes not a number", edit("resources.nodes", "two"), ["spec.resources.nodes", "integer"]),
    ("nodes as a string", edit("resources.nodes", "2"), ["spec.resources.nodes", "integer"]),
    ("suspend as a string", edit("suspend", "true"), ["spec.suspend", "boolean"]),
    ("name not a DNS label", named("qwen2.5-lora", edit("maxRestarts", 1)), ["a DNS label"]),
    ("unknown model scheme", edit("model.source", "s3://bucket/qwen"), ["spec.model.source"]),
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
        ["spec.dataset.names", "needs an entry in dataset.info: missing_set has none"],
    ),
    ("unknown preset", edit("deepspeed.preset", "zero4"), ["spec.deepspeed.preset", "zero3-offload"]),
    ("empty deepspeed", edit("deepspeed", {}), ["spec.deepspeed", "exactly one of deepspeed.preset"]),
    (
        "processes per node on GPUs",
        edit("resources", {"nodes": 2, "gpusPerNode": 8, "processesPerNode": 4}),
        ["spec.resources.processesPerNode", "is for CPU nodes (gpusPerNode: 0)"],
    ),
    (
        "processes per node on the default GPU",
        edit("resources", {"nodes": 1, "processesPerNode": 2}),
        ["spec.resources.processesPerNode", "is for CPU nodes (gpusPerNode: 0)"],
    ),
    ("zero processes per node", edit("resources.processesPerNode", 0), ["spec.resources.processesPerNode"]),
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
    # Values that reach a pod: refused in the shape Kubernetes itself needs (issue 10, point 13).
    ("cpu in words", edit("resources.cpu", "32 cores"), ["spec.resources.cpu", "should match"]),
    ("memory in words", edit("resources.memory", "lots"), ["spec.resources.memory"]),
    ("shared memory with a space", edit("resources.sharedMemory", "1 GB"), ["spec.resources.sharedMemory"]),
    ("queue name not a label value", edit("queueName", "team a/gpus"), ["spec.queueName"]),
    ("queue name too long", edit("queueName", "q" * 64), ["spec.queueName", "63"]),
    ("priority class not a name", edit("resources.priorityClassName", "High_Prio"), ["priorityClassName"]),
    (
        "GPU resource with a space",
        edit("resources.gpuResource", "nvidia gpu"),
        ["spec.resources.gpuResource"],
    ),
    ("too many nodes", edit("resources.nodes", 513), ["spec.resources.nodes", "less than or equal"]),
    ("too many GPUs per node", edit("resources.gpusPerNode", 65), ["spec.resources.gpusPerNode"]),
    ("negative TTL", edit("ttlSecondsAfterFinished", -1), ["spec.ttlSecondsAfterFinished"]),
    ("claim name in capitals", edit("model.source", "pvc://Shared/models/x"), ["spec.model.source"]),
    ("revision on a pvc model", edit("model.revision", "main"), ["spec.model", "revision is only for hub"]),
    ("empty template", edit("model.template", ""), ["spec.model.template"]),
    ("dataset names not a list", edit("dataset.names", "alpaca_clue_train"), ["spec.dataset.names"]),
    ("absolute model cache", edit("storage.modelCache", "/cache"), ["spec.storage.modelCache"]),
    (
        "preset and configMapRef",
        edit("deepspeed.configMapRef", {"name": "ds", "key": "ds.json"}),
        ["spec.deepspeed", "exactly one of deepspeed.preset"],
    ),
    ("predict on nothing", edit("postTraining", {"predict": {"datasets": []}}), ["postTraining.predict"]),
    ("merge on a GPU name", edit("postTraining", {"merge": {"exportDevice": "gpu"}}), ["exportDevice"]),
    (
        "root without consent",
        edit("podSecurity", {"runAsUser": 0}),
        ["spec.podSecurity", "runAsUser 0 is root"],
    ),
    (
        "local seccomp",
        edit("podSecurity", {"seccompProfile": "Localhost"}),
        ["spec.podSecurity.seccompProfile"],
    ),
    ("capability in lowercase", edit("podSecurity", {"addCapabilities": ["sys_admin"]}), ["addCapabilities"]),
    (
        "privileged",
        edit("podSecurity", {"privileged": True}),
        ['unknown field "spec.podSecurity.privileged"'],
    ),
    ("negative uid", edit("podSecurity", {"runAsUser": -1}), ["spec.podSecurity.runAsUser"]),
    (
        "secret env name",
        edit("secretEnv", [{"name": "1KEY", "secretKeyRef": {"name": "s"}}]),
        ["spec.secretEnv[0].name"],
    ),
    (
        "secret env without a Secret",
        edit("secretEnv", [{"name": "WANDB_API_KEY"}]),
        ["secretKeyRef", "Required"],
    ),
    (
        "secret env twice",
        edit(
            "secretEnv",
            [{"name": "K", "secretKeyRef": {"name": "a"}}, {"name": "K", "secretKeyRef": {"name": "b"}}],
        ),
        ["Duplicate value", "spec.secretEnv"],
    ),
]


def serve_edit(path: str, value: Any) -> dict[str, Any]:
    """A ModelServe `bad` with one spec field set (None deletes it)."""
    body = modelserve("bad")
    node = body["spec"]
    *parents, last = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    if value is None:
        node.pop(last, None)
    else:
        node[last] = copy.deepcopy(value)
    return body


def serve_with_model(model: dict[str, Any]) -> dict[str, Any]:
    body = modelserve("bad")
    body["spec"]["model"] = copy.deepcopy(model)
    return body


SERVE_REFUSED_BY_THE_API_SERVER = [
    (
        "a pod label of the operator's",
        serve_edit("podMetadata", {"labels": {"kubetune.io/finetunejob": "ner"}}),
        ["spec.podMetadata.labels", "kubetune.io/ are the operator's own"],
    ),
    (
        "served name that would change the KEDA query",
        serve_edit("model.servedModelName", 'qwen"} or vector(1) or {a="'),
        ["spec.model.servedModelName", "should match"],
    ),
    (
        "served name with a space",
        serve_edit("model.servedModelName", "qwen 7b"),
        ["spec.model.servedModelName"],
    ),
    ("cpu in words", serve_edit("resources.cpu", "32 cores"), ["spec.resources.cpu"]),
    ("GPUs as a string", serve_edit("resources.gpus", "1"), ["spec.resources.gpus", "integer"]),
    ("a field that does not exist", serve_edit("gpus", 1), ['unknown field "spec.gpus"']),
    (
        "adapter name twice",
        serve_edit("adapters", [{"name": "a", "path": "x"}, {"name": "a", "path": "y"}]),
        ["Duplicate value", "spec.adapters"],
    ),
    ("negative replicas", serve_edit("replicas", -1), ["spec.replicas"]),
    ("no tensor parallelism", serve_edit("engine.tensorParallelSize", 0), ["spec.engine.tensorParallelSize"]),
    ("memory share above 1", serve_edit("engine.gpuMemoryUtilization", 1.5), ["gpuMemoryUtilization"]),
    ("LoRA rank vLLM refuses", serve_edit("engine.maxLoraRank", 48), ["spec.engine.maxLoraRank"]),
    (
        "min above max",
        serve_edit("autoscaling", {"minReplicas": 4, "maxReplicas": 2}),
        ["minReplicas must not exceed"],
    ),
    (
        "KEDA without Prometheus",
        serve_edit("autoscaling", {"maxReplicas": 2, "provider": "keda"}),
        ["prometheusAddress is needed"],
    ),
    ("root without consent", serve_edit("podSecurity", {"runAsUser": 0}), ["runAsUser 0 is root"]),
    ("unknown model scheme", serve_edit("model.source", "s3://bucket/qwen"), ["spec.model.source"]),
    ("token for a pvc model", serve_edit("model.hubTokenSecret", {"name": "hf"}), ["only for hub sources"]),
    ("a revision for a pvc model", serve_edit("model.revision", "main"), ["only for hub sources"]),
    (
        "a model from a source and a FineTuneJob",
        serve_edit("model.fineTuneJob", "ner"),
        ["spec.model", "exactly one of source and fineTuneJob"],
    ),
    ("a model from nowhere", serve_edit("model.source", None), ["exactly one of source and fineTuneJob"]),
    (
        "a hub token for a FineTuneJob's model",
        serve_with_model({"fineTuneJob": "ner", "hubTokenSecret": {"name": "hf"}}),
        ["only for hub sources"],
    ),
    ("no storage", serve_edit("storage", None), ["spec.storage", "Required"]),
    (
        "adapter without a source",
        serve_edit("adapters", [{"name": "a"}]),
        ["spec.adapters[0]", "exactly one of path and fineTuneJob"],
    ),
]


# Cases that `kubetune validate` cannot refuse offline (only the API server can), each with the reason. None
# today. The one rule it cannot check is not a case here: storage is immutable (a transition rule, it needs
# the stored object), tested against the API server in test_storage_cannot_change_once_created.
NEEDS_THE_CLUSTER: dict[str, str] = {}
