"""ModelServe: the spec, the rendered children and the status computation (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from kubetune.api.modelserve import ModelServeSpec
from kubetune.api.validation import Problem
from kubetune.render import modelserve as render
from kubetune.status.modelserve import AdapterState, Observation, compute, transitions

BASE: dict[str, Any] = {
    "model": {"source": "pvc://shared/models/Qwen2.5-7B-Instruct", "servedModelName": "qwen2.5-7b"},
    "storage": {"claim": "shared"},
    "engine": {"maxModelLen": 1024, "gpuMemoryUtilization": 0.8},
}


def target(adapters: list[render.ResolvedAdapter] | None = None, observed_rank: int | None = None, **spec):
    return render.ModelServeTarget(
        name="qwen",
        namespace="team-a",
        uid="u",
        spec=ModelServeSpec.model_validate({**BASE, **spec}),
        adapters=adapters or [],
        observed_max_lora_rank=observed_rank,
    )


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_the_reference_command_is_what_the_deployment_runs() -> None:
    # tests/data/reference/vllm-serve-lora.sh, as a ModelServe.
    args = render.vllm_args(target([render.ResolvedAdapter("clue-ner-lora-sft", "/mnt/claim/x", 8)]))
    assert args[0] == "/mnt/claim/models/Qwen2.5-7B-Instruct"
    assert flag(args, "--served-model-name") == "qwen2.5-7b"
    assert "--enable-lora" in args
    assert flag(args, "--gpu-memory-utilization") == "0.8"
    assert flag(args, "--max-model-len") == "1024"
    assert (flag(args, "--host"), flag(args, "--port")) == ("0.0.0.0", "8000")
    assert "--lora-modules" not in args, "adapters come from the resolver directory, not the pod template"


@pytest.mark.parametrize(
    ("ranks", "observed", "engine_rank", "expected"),
    [
        ([], None, None, 16),
        ([8], None, None, 16),
        ([64], None, None, 64),
        ([8, 48], None, None, 64),
        ([600], None, None, 512),
        ([8], 64, None, 64),  # removing the rank-64 adapter does not shrink the rank (and restart pods)
        ([64], None, 32, 32),  # the engine's explicit setting wins
    ],
)
def test_max_lora_rank_is_what_the_adapters_need(ranks, observed, engine_rank, expected) -> None:
    adapters = [render.ResolvedAdapter(f"a{i}", f"/p/{i}", r) for i, r in enumerate(ranks)]
    engine = {**BASE["engine"], **({"maxLoraRank": engine_rank} if engine_rank else {})}
    args = render.vllm_args(target(adapters, observed, engine=engine))
    assert flag(args, "--max-lora-rank") == str(expected)


def test_the_pod_template_does_not_depend_on_the_adapters() -> None:
    one = render.deployment(target([render.ResolvedAdapter("a", "/mnt/claim/a", 8)]))
    two = render.deployment(
        target(
            [render.ResolvedAdapter("b", "/mnt/claim/b", 8), render.ResolvedAdapter("c", "/mnt/claim/c", 16)]
        )
    )
    assert one["spec"]["template"] == two["spec"]["template"]
    assert (
        render.adapters_config_map(target([render.ResolvedAdapter("a", "/mnt/claim/a")]))["data"]
        != (render.adapters_config_map(target([]))["data"])
    )


def test_deployment_mounts_the_claim_read_only_and_probes_health() -> None:
    deployment = render.deployment(target())
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    claim = next(v for v in pod["volumes"] if v["name"] == "claim")
    assert claim["persistentVolumeClaim"] == {"claimName": "shared", "readOnly": True}
    vllm = pod["containers"][0]
    assert {p: vllm[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")} == {
        "startupProbe": "/health",
        "readinessProbe": "/health",
        "livenessProbe": "/health",
    }
    assert vllm["startupProbe"]["periodSeconds"] * vllm["startupProbe"]["failureThreshold"] >= 1800
    env = {e["name"]: e.get("value") for e in vllm["env"]}
    assert env["VLLM_PLUGINS"] == "lora_filesystem_resolver"
    assert env["VLLM_LORA_RESOLVER_CACHE_DIR"] == render.ADAPTERS_DIR
    sidecar = pod["initContainers"][-1]
    assert (sidecar["name"], sidecar["restartPolicy"]) == ("adapter-sync", "Always")
    assert next(v for v in pod["volumes"] if v["name"] == "dshm")["emptyDir"]["medium"] == "Memory"


def test_hub_models_are_fetched_into_the_same_cache_the_trainer_uses() -> None:
    t = target(model={"source": "hf://Qwen/Qwen2.5-0.5B", "hubTokenSecret": {"name": "hf"}})
    pod = render.deployment(t)["spec"]["template"]["spec"]
    fetch = pod["initContainers"][0]
    assert fetch["args"][:2] == ["fetch-model", "--source"]
    assert render.model_path(t) == "/mnt/claim/models/hub/hf/Qwen/Qwen2.5-0.5B"
    assert pod["containers"][0]["args"][0] == render.model_path(t)


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"adapters": [{"name": "a"}]}, "exactly one of path and fineTuneJob"),
        ({"adapters": [{"name": "a", "path": "x"}, {"name": "a", "path": "y"}]}, "unique"),
        ({"adapters": [{"name": "qwen2.5-7b", "path": "x"}]}, "differ from the served model"),
        ({"autoscaling": {"minReplicas": 3, "maxReplicas": 2}}, "minReplicas"),
        ({"autoscaling": {"maxReplicas": 2, "provider": "keda"}}, "prometheusAddress"),
        ({"engine": {"maxLoraRank": 24}}, "maxLoraRank"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: dict, error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        ModelServeSpec.model_validate({**BASE, **spec})


def test_autoscaler_targets_the_modelserve_scale_subresource() -> None:
    hpa = render.autoscaler(target(autoscaling={"maxReplicas": 4}))
    assert hpa["kind"] == "HorizontalPodAutoscaler"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "ModelServe",
        "name": "qwen",
    }
    keda = render.autoscaler(
        target(autoscaling={"maxReplicas": 4, "provider": "keda", "prometheusAddress": "http://prom:9090"})
    )
    assert keda["kind"] == "ScaledObject"
    assert "vllm:num_requests_waiting" in keda["spec"]["triggers"][0]["metadata"]["query"]
    assert render.autoscaler(target()) is None


# --- status ----------------------------------------------------------------------------------------


def deployment(ready: int, desired: int = 1, updated: int | None = None, progress: str = "") -> dict:
    updated = desired if updated is None else updated
    complete = updated >= desired and ready >= desired
    reason = progress or ("NewReplicaSetAvailable" if complete else "ReplicaSetUpdated")
    return {
        "metadata": {"generation": 1},
        "spec": {"replicas": desired},
        "status": {
            "observedGeneration": 1,
            "replicas": max(desired, updated),
            "readyReplicas": ready,
            "updatedReplicas": updated,
            "availableReplicas": ready,
            "conditions": [{"type": "Progressing", "status": "True", "reason": reason}],
        },
    }


def observe(**fields: Any) -> Observation:
    return Observation(
        generation=2,
        now="2026-11-23T10:00:00Z",
        previous=fields.pop("previous", {}),
        endpoint="http://qwen.team-a.svc:8000/v1",
        served_model_name="qwen2.5-7b",
        selector="kubetune.io/modelserve=qwen",
        desired_replicas=fields.pop("desired", 1),
        **fields,
    )


TWO = {"desired": 2}
DONE, STUCK = "NewReplicaSetAvailable", "ProgressDeadlineExceeded"
WAITING = AdapterState("ner", False, None, "WaitingForFineTuneJob", "waiting for FineTuneJob ner to succeed")
FAILED = AdapterState("ner", False, None, "FineTuneJobFailed", "FineTuneJob ner failed: OOM")
READY = AdapterState("ner", True, "runs/team-a/ner")


@pytest.mark.parametrize(
    ("fields", "phase", "ready", "progressing", "degraded", "adapters_ready"),
    [
        ({}, "Pending", "False", "True", "False", "True"),
        ({"deployment": deployment(0)}, "Pending", "False", "True", "False", "True"),
        ({"deployment": deployment(1)}, "Ready", "True", "False", "False", "True"),
        ({"deployment": deployment(1, 2, updated=1), **TWO}, "Progressing", "True", "True", "False", "True"),
        # Rolled out earlier, then a replica stopped being ready.
        ({"deployment": deployment(1, 2, progress=DONE), **TWO}, "Degraded", "True", "False", "True", "True"),
        ({"deployment": deployment(1), "adapters": [WAITING]}, "Ready", "True", "False", "False", "False"),
        ({"deployment": deployment(1), "adapters": [FAILED]}, "Degraded", "True", "False", "True", "False"),
        ({"deployment": deployment(1), "adapters": [READY]}, "Ready", "True", "False", "False", "True"),
        ({"problems": [Problem("InvalidSpec", "bad", True)]}, "Failed", "False", "False", "True", "True"),
        ({"problems": [Problem("MissingClaim", "no", False)]}, "Pending", "False", "True", "False", "True"),
        ({"deployment": deployment(1, 2, progress=STUCK), **TWO}, "Degraded", "True", "False",
         "True", "True"),
        ({"deployment": deployment(0, 0), "desired": 0}, "Pending", "False", "False", "False", "True"),
    ],
    ids=[
        "creating", "starting", "ready", "rolling-out", "degraded", "adapter-waiting", "adapter-failed",
        "adapter-ready", "invalid", "missing-claim", "stuck", "scaled-to-zero",
    ],
)  # fmt: skip
def test_status(fields, phase, ready, progressing, degraded, adapters_ready) -> None:
    status = compute(observe(**fields))
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert status["phase"] == phase
    assert (conditions["Ready"], conditions["Progressing"], conditions["Degraded"]) == (
        ready,
        progressing,
        degraded,
    )
    assert conditions["AdaptersReady"] == adapters_ready
    assert all(c["observedGeneration"] == 2 for c in status["conditions"])


def test_served_models_are_the_base_and_the_ready_adapters() -> None:
    other = AdapterState("sql", True, "adapters/sql")
    status = compute(observe(deployment=deployment(1), adapters=[WAITING, other]))
    assert status["servedModels"] == ["qwen2.5-7b", "sql"]
    assert status["adaptersDisplay"] == "1/2"
    assert status["endpoint"] == "http://qwen.team-a.svc:8000/v1"


def test_unschedulable_pods_are_quoted() -> None:
    pod = {
        "metadata": {"name": "qwen-vllm-x"},
        "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                            "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."}],
        },
    }  # fmt: skip
    status = compute(observe(deployment=deployment(0), pods=[pod]))
    assert (status["phase"], status["reason"]) == ("Pending", "Unschedulable")
    assert "Insufficient nvidia.com/gpu" in status["message"]


def test_events_for_phase_changes_and_adapters() -> None:
    before = compute(observe(deployment=deployment(1), adapters=[WAITING]))
    after = compute(observe(deployment=deployment(1), adapters=[READY], previous=before))
    assert transitions(before, after) == [("Normal", "AdapterAdded", "serving ner")]
    assert transitions(after, after) == []


# --- the rendered command, checked by vLLM's own parser (the pinned release, on the CPU) ----------------


RENDERED = {
    "reference": {},
    "rank-64-adapter": {"adapters": [render.ResolvedAdapter("ner", "/mnt/claim/runs/ner", 64)]},
    "every-engine-field": {
        "engine": {
            "tensorParallelSize": 2,
            "maxModelLen": 4096,
            "gpuMemoryUtilization": 0.9,
            "dtype": "bfloat16",
            "maxLoras": 8,
            "maxCpuLoras": 16,
            "extraArgs": ["--enable-prefix-caching", "--uvicorn-log-level", "warning"],
        }
    },
    "hub-model": {"model": {"source": "hf://Qwen/Qwen2.5-0.5B-Instruct", "revision": "main"}},
}


def test_every_rendered_deployment_parses_with_vllms_own_parser() -> None:
    from tests.vllm import parse_vllm_args

    cases = {}
    for case, fields in RENDERED.items():
        adapters = fields.pop("adapters", None) if "adapters" in fields else None
        container = render.deployment(target(adapters, **fields))["spec"]["template"]["spec"]["containers"][0]
        cases[case] = container["command"] + container["args"]
    answers = dict(zip(cases, parse_vllm_args(list(cases.values())), strict=True))
    for case, answer in answers.items():
        assert answer["ok"], f"{case}: {answer.get('error')}"
        assert answer["args"]["enable_lora"] is True
        assert answer["args"]["port"] == 8000
    assert answers["reference"]["args"]["served_model_name"] == ["qwen2.5-7b"]
    assert answers["reference"]["args"]["max_model_len"] == 1024
    assert answers["rank-64-adapter"]["args"]["max_lora_rank"] == 64
    assert answers["every-engine-field"]["args"]["tensor_parallel_size"] == 2
    assert answers["every-engine-field"]["args"]["max_cpu_loras"] == 16
    assert answers["hub-model"]["args"]["model"] == "/mnt/claim/models/hub/hf/Qwen/Qwen2.5-0.5B-Instruct@main"


def test_a_bad_extra_arg_is_caught_before_a_pod_runs() -> None:
    from tests.vllm import parse_vllm_args

    container = render.deployment(target(engine={"extraArgs": ["--disable-log-requests"]}))["spec"][
        "template"
    ]["spec"]["containers"][0]
    [answer] = parse_vllm_args([container["args"]])
    assert not answer["ok"]
    assert "--disable-log-requests" in answer["error"]
