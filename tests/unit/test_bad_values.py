"""Bad values never crash a reconcile: random JSON, put anywhere in a valid FineTuneJob or ModelServe spec (or
in a dataset_info.json ConfigMap), either is refused by the project's own validation (a pydantic
ValidationError, or a Problem naming the field) or renders children, without any other exception.

The handlers run exactly these functions before anything is applied, so an exception here would be one in
the operator's log instead of a condition on the resource.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from kubetune.api.datasetinfo import dataset_info_problems
from kubetune.api.modelserve import ModelServeSpec
from kubetune.api.podspec import QUANTITY
from kubetune.api.validation import finetunejob_spec
from kubetune.render import finetunejob as ftj_render
from kubetune.render import modelserve as ms_render
from tests import specs

# The shared specs with every other field a user sets.
FTJ: dict[str, Any] = specs.finetunejob_spec(
    dataset={"names": ["clue"], "info": {"clue": {"file_name": "clue.json"}}},
    resources={"nodes": 1, "gpusPerNode": 1, "cpu": "8", "memory": "32Gi"},
    queueName="team-a",
    podMetadata={"labels": {"team": "a"}, "annotations": {"note": "x"}},
    podSecurity={"runAsUser": 1000},
    secretEnv=[{"name": "WANDB_API_KEY", "secretKeyRef": {"name": "wandb"}}],
    postTraining={"merge": {}, "predict": {"datasets": ["clue"]}},
)
MS: dict[str, Any] = specs.modelserve_spec(
    model={"source": "hf://Qwen/Qwen2.5-0.5B", "servedModelName": "qwen", "hubTokenSecret": {"name": "hf"}},
    adapters=[{"name": "ner", "path": "adapters/ner"}, {"name": "sql", "fineTuneJob": "sql"}],
    resources={"gpus": 1, "cpu": "4", "nodeSelector": {"gpu": "h100"}},
    engine={"maxModelLen": 1024, "extraArgs": ["--enforce-eager"], "env": [{"name": "A", "value": "b"}]},
    autoscaling={
        "minReplicas": 1,
        "maxReplicas": 3,
        "provider": "keda",
        "prometheusAddress": "http://p:9090",
    },
    podSecurity={"fsGroup": 1000},
)

# Every field of the two specs that a user sets, plus a few that do not exist.
FTJ_PATHS = [
    "model", "model.source", "model.template", "model.revision", "model.hubTokenSecret",
    "dataset", "dataset.names", "dataset.evalNames", "dataset.dir", "dataset.info", "dataset.info.clue",
    "dataset.info.clue.file_name", "dataset.info.clue.columns", "dataset.configMapRef",
    "config", "config.stage", "config.finetuning_type", "config.lora_rank", "config.learning_rate",
    "config.swanlab_api_key", "config.output_dir", "config.nonsense",
    "resources", "resources.nodes", "resources.gpusPerNode", "resources.gpuResource", "resources.cpu",
    "resources.memory", "resources.sharedMemory", "resources.nodeSelector", "resources.tolerations",
    "resources.affinity", "resources.priorityClassName", "deepspeed", "deepspeed.preset",
    "storage", "storage.claim", "storage.path", "storage.modelCache", "image", "imagePullPolicy",
    "podMetadata", "podMetadata.labels", "podMetadata.labels.team", "podMetadata.annotations", "suspend",
    "maxRestarts", "activeDeadlineSeconds", "ttlSecondsAfterFinished", "queueName", "postTraining",
    "postTraining.merge", "postTraining.predict.datasets", "podSecurity", "podSecurity.runAsUser",
    "podSecurity.addCapabilities", "secretEnv", "nosuchfield",
]  # fmt: skip
MS_PATHS = [
    "model", "model.source", "model.servedModelName", "model.revision", "model.hubTokenSecret",
    "storage", "storage.claim", "storage.modelCache", "adapters", "replicas", "resources", "resources.gpus",
    "resources.cpu", "resources.memory", "resources.nodeSelector", "resources.tolerations",
    "resources.gpuResource", "engine", "engine.image", "engine.tensorParallelSize", "engine.maxModelLen",
    "engine.gpuMemoryUtilization", "engine.dtype", "engine.maxLoraRank", "engine.maxLoras",
    "engine.extraArgs", "engine.env", "autoscaling", "autoscaling.minReplicas", "autoscaling.maxReplicas",
    "autoscaling.provider", "autoscaling.targetWaitingRequests", "podMetadata", "podSecurity",
    "podSecurity.seccompProfile", "nosuchfield",
]  # fmt: skip

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**40), max_value=2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["lora", "sft", "32 cores", "1Gi", "pvc://shared/x", 'a"b', "", "0", "-1"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


def edits_of(paths: list[str]) -> st.SearchStrategy[list[tuple[str, Any]]]:
    """A few edits to the valid spec: (path, new JSON value, or "<delete>")."""
    return st.lists(st.tuples(st.sampled_from(paths), JSON | st.just("<delete>")), min_size=1, max_size=3)


def edited(base: dict[str, Any], edits: list[tuple[str, Any]]) -> dict[str, Any]:
    spec = copy.deepcopy(base)
    for path, value in edits:
        node: Any = spec
        *parents, last = path.split(".")
        for part in parents:
            if not isinstance(node, dict):
                break
            node = node.setdefault(part, {})
        else:
            if isinstance(node, dict):
                if value == "<delete>":
                    node.pop(last, None)
                else:
                    node[last] = value
    return spec


def check_quantities(children: list[dict[str, Any]]) -> None:
    for child in children:
        template = (child.get("spec") or {}).get("template") or {}
        for container in (template.get("spec") or {}).get("containers", []):
            for values in (container.get("resources") or {}).values():
                for key, value in values.items():
                    assert re.fullmatch(QUANTITY, value), (key, value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=edits_of(FTJ_PATHS))
def test_a_finetunejob_spec_is_refused_or_renders(edits: list[tuple[str, Any]]) -> None:
    raw = edited(FTJ, edits)
    spec, problems = finetunejob_spec(raw)  # never raises: the problems are what the handler reports
    assert all(p.reason and p.message for p in problems)
    if spec is None or problems:
        return
    target = ftj_render.FineTuneJobTarget(
        name="ner", namespace="team-a", uid="u", spec=spec, dataset_info=dict(spec.dataset.info or {})
    )
    children = ftj_render.children(target)
    json.dumps(children)
    check_quantities(children)
    ftj_render.output(target)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=edits_of(MS_PATHS))
def test_a_modelserve_spec_is_refused_or_renders(edits: list[tuple[str, Any]]) -> None:
    raw = edited(MS, edits)
    try:
        spec = ModelServeSpec.model_validate(raw)
    except ValidationError:
        return
    adapters = [ms_render.ResolvedAdapter(a.name, f"/mnt/claim/{a.path or a.name}", 8) for a in spec.adapters]
    target = ms_render.ModelServeTarget(
        name="qwen", namespace="team-a", uid="u", spec=spec, adapters=adapters
    )
    children = ms_render.children(target)
    json.dumps(children)
    check_quantities(children)


@settings(max_examples=300, deadline=None)
@given(info=JSON | st.dictionaries(st.sampled_from(["clue", "other"]), JSON, max_size=2))
def test_a_dataset_info_config_map_is_refused_or_renders(info: Any) -> None:
    spec, problems = finetunejob_spec(
        {**FTJ, "dataset": {"names": ["clue"], "configMapRef": {"name": "info", "key": "dataset_info.json"}}}
    )
    assert spec is not None and not problems
    if dataset_info_problems(info, "ConfigMap info"):
        return
    target = ftj_render.FineTuneJobTarget(
        name="ner", namespace="team-a", uid="u", spec=spec, dataset_info=info
    )
    json.dumps(ftj_render.config_map(target))


@pytest.mark.parametrize(
    ("path", "value", "words"),
    [
        ("config.finetuning_type", ["lora"], "finetuning_type"),
        ("config.stage", {"sft": True}, "stage"),
        ("config.lora_rank", "eight", "lora_rank"),
        ("resources.cpu", "32 cores", "resources.cpu"),
        ("resources.memory", "lots", "resources.memory"),
        ("queueName", "team a/gpus", "queueName"),
        ("podMetadata.labels", {"team": "a b"}, "podMetadata.labels"),
        ("resources.nodeSelector", {"bad key!": "x"}, "resources.nodeSelector"),
        ("dataset.preprocess", {"nodeSelector": {"bad key!": "x"}}, "dataset.preprocess.nodeSelector"),
        ("dataset.preprocess", {"resources": {"cpu": "8 cores"}}, "dataset.preprocess.resources.cpu"),
        ("dataset.info.clue", None, "dataset.info"),
        ("dataset.info.clue", "clue.json", "dataset.info"),
        ("dataset.info.clue", 3, "dataset.info"),
    ],
)
def test_wrong_shapes_name_the_field(path: str, value: Any, words: str) -> None:
    spec, problems = finetunejob_spec(edited(FTJ, [(path, value)]))
    assert spec is None or problems
    assert words in "; ".join(p.message for p in problems)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ('qwen"} or vector(1000) or {a="', "servedModelName"),
        ("qwen 7b", "servedModelName"),
        ("qwen\\", "servedModelName"),
    ],
)
def test_a_served_model_name_cannot_change_the_keda_query(value: str, words: str) -> None:
    with pytest.raises(ValidationError) as error:
        ModelServeSpec.model_validate(edited(MS, [("model.servedModelName", value)]))
    assert words in str(error.value)


def test_the_specs_the_edits_start_from_are_valid() -> None:
    assert finetunejob_spec(FTJ)[1] == []
    ModelServeSpec.model_validate(MS)


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ([{"value": "x"}], "engine.env[0].name"),
        ([{"name": "A B", "value": "x"}], "engine.env[0].name"),
        ([{"name": "HF_HUB_OFFLINE", "value": "0"}], "set by the operator"),
        # The adapter management guard's module path and token file: not the user's to move.
        ([{"name": "PYTHONPATH", "value": "/x"}], "PYTHONPATH is set by the operator"),
        ([{"name": "KUBETUNE_ADAPTER_TOKEN_FILE", "value": "/x"}], "set by the operator"),
        ([{"name": "A", "value": "1"}, {"name": "A", "value": "2"}], "unique"),
    ],
)
def test_engine_env_that_would_break_the_deployment_is_refused(env: list, words: str) -> None:
    with pytest.raises(ValidationError) as error:
        ModelServeSpec.model_validate(edited(MS, [("engine.env", env)]))
    assert words in str(error.value)
