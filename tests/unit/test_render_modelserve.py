"""ModelServe: the spec and the rendered children (pure), and the command checked by vLLM's own parser."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from kubetune.api.modelserve import VLLM_ENV, ModelServeSpec
from kubetune.render import modelserve as render
from tests import specs

BASE: dict[str, Any] = specs.modelserve_spec()


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
    assert "--lora-modules" not in args, "adapters are loaded by the sidecar, not named in the pod template"


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
        "readinessProbe": "/ready",  # the sidecar's: vLLM healthy and its adapters loaded once
        "livenessProbe": "/health",
    }
    assert vllm["readinessProbe"]["httpGet"]["port"] == render.SYNC_PORT
    assert vllm["startupProbe"]["periodSeconds"] * vllm["startupProbe"]["failureThreshold"] >= 1800
    env = {e["name"]: e.get("value") for e in vllm["env"]}
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert "VLLM_PLUGINS" not in env, "adapters are loaded through the API, not vLLM's resolver"
    sidecar = pod["initContainers"][-1]
    assert (sidecar["name"], sidecar["restartPolicy"]) == ("adapter-sync", "Always")
    assert next(v for v in pod["volumes"] if v["name"] == "dshm")["emptyDir"]["medium"] == "Memory"


def test_only_the_sidecar_has_an_api_token_and_it_may_only_watch_its_adapters_and_write_its_report() -> None:
    t = target()
    pod = render.deployment(t)["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == t.sidecar_account_name
    token_mounts = {
        c["name"]: [m for m in c.get("volumeMounts", []) if m["name"] == "adapter-sync-token"]
        for c in pod["containers"] + pod["initContainers"]
    }
    assert token_mounts == {"vllm": [], "adapter-sync": [ANY_TOKEN_MOUNT]}
    report, adapters = render.sidecar_role(t)["rules"]
    assert report == {
        "apiGroups": [""],
        "resources": ["configmaps"],
        "resourceNames": [t.report_config_map_name],
        "verbs": ["get", "patch"],
    }
    assert adapters == {
        "apiGroups": [""],
        "resources": ["configmaps"],
        "resourceNames": [t.config_map_name],
        "verbs": ["get", "list", "watch"],
    }
    sidecar = next(c for c in pod["initContainers"] if c["name"] == "adapter-sync")
    assert sidecar["args"][sidecar["args"].index("--configmap") + 1] == t.config_map_name
    assert "data" not in render.report_config_map(t), "the pods' reports are theirs: the operator owns no key"
    kinds = [c["kind"] for c in render.children(t)]
    assert kinds.index("RoleBinding") < kinds.index("Deployment")


ANY_TOKEN_MOUNT = {
    "name": "adapter-sync-token",
    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
    "readOnly": True,
}


def test_the_variables_refused_in_engine_env_are_those_the_operator_sets() -> None:
    # A name the operator sets would be a duplicate in the container (the Deployment cannot be applied);
    # a name it does not set must stay the user's.
    cpu = target(resources={"gpus": 0, "memory": "8Gi"})
    set_by_operator = {
        e["name"]
        for t in (target(), cpu)
        for e in render.deployment(t)["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert set_by_operator == VLLM_ENV


def test_on_cpu_the_pod_gets_vllms_cpu_build_and_a_gpu_pod_is_unchanged() -> None:
    gpu = render.deployment(target())["spec"]["template"]["spec"]["containers"][0]
    cpu_target = target(resources={"gpus": 0, "memory": "8Gi"}, engine={**BASE["engine"], "cpuKvCacheGib": 2})
    cpu = render.deployment(cpu_target)["spec"]["template"]["spec"]["containers"][0]
    assert gpu["image"] == "vllm/vllm-openai:v0.32.0"
    assert cpu["image"] == "public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v0.32.0"
    assert {e["name"]: e["value"] for e in cpu["env"]}["VLLM_CPU_KVCACHE_SPACE"] == "2"
    assert "VLLM_CPU_KVCACHE_SPACE" not in {e["name"] for e in gpu["env"]}
    assert "--gpu-memory-utilization" not in cpu["args"] and "--gpu-memory-utilization" in gpu["args"]
    assert "nvidia.com/gpu" not in str(cpu.get("resources")) and "nvidia.com/gpu" in str(gpu["resources"])


def test_a_hub_model_can_be_written_by_fetch_model_and_is_read_only_for_vllm() -> None:
    t = target(model={"source": "hf://Qwen/Qwen2.5-0.5B", "hubTokenSecret": {"name": "hf", "key": "token"}})
    pod = render.deployment(t)["spec"]["template"]["spec"]
    claim = next(v for v in pod["volumes"] if v["name"] == "claim")
    assert claim["persistentVolumeClaim"]["readOnly"] is False
    fetch = pod["initContainers"][0]
    assert fetch["name"] == "fetch-model" and fetch["volumeMounts"][0]["readOnly"] is False
    assert [e["name"] for e in fetch["env"]] == ["HF_TOKEN"]
    for container in [pod["containers"][0], pod["initContainers"][1]]:
        assert next(m for m in container["volumeMounts"] if m["name"] == "claim")["readOnly"] is True
    assert "HF_TOKEN" not in {e["name"] for e in pod["containers"][0]["env"]}, "vLLM runs offline"


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
