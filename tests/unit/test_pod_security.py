"""Every pod the operator makes meets Pod Security "restricted" by default, `podSecurity` relaxes it, pods get
no ServiceAccount token or hub token they do not need, and credentials never go into a ConfigMap (pure)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from kubetune.api.finetunejob import FineTuneJobSpec
from kubetune.api.modelserve import ModelServeSpec
from kubetune.api.validation import SECRET_ARGUMENTS, finetunejob_spec
from kubetune.render import finetunejob as ftj_render
from kubetune.render import modelserve as ms_render
from tests import specs

FTJ: dict[str, Any] = specs.finetunejob_spec(
    config={**specs.FINETUNEJOB_SPEC["config"], "report_to": "swanlab"}
)
MS: dict[str, Any] = specs.modelserve_spec()
HUB = {"source": "hf://Qwen/Qwen2.5-0.5B", "hubTokenSecret": {"name": "hf", "key": "token"}}


def ftj_pod(**changes: Any) -> dict[str, Any]:
    spec = FineTuneJobSpec.model_validate({**copy.deepcopy(FTJ), **changes})
    target = ftj_render.FineTuneJobTarget(name="ner", namespace="team-a", uid="u", spec=spec)
    return ftj_render.job(target)["spec"]["template"]["spec"]


def ms_pod(**changes: Any) -> dict[str, Any]:
    spec = ModelServeSpec.model_validate({**copy.deepcopy(MS), **changes})
    target = ms_render.ModelServeTarget(name="qwen", namespace="team-a", uid="u", spec=spec)
    return ms_render.deployment(target)["spec"]["template"]["spec"]


def containers(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in [*pod.get("initContainers", []), *pod["containers"]]}


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """The Pod Security "restricted" checks (v1.36) that a pod template can fail."""
    found = []
    context = pod.get("securityContext") or {}
    if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
        found.append("host namespaces")
    if any("hostPath" in v for v in pod.get("volumes", [])):
        found.append("hostPath volumes")
    if (context.get("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
        found.append("seccompProfile")
    for name, container in containers(pod).items():
        own = container.get("securityContext") or {}
        if own.get("privileged"):
            found.append(f"{name}: privileged")
        if own.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation != false")
        capabilities = own.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            found.append(f"{name}: unrestricted capabilities")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: capabilities added")
        if own.get("runAsNonRoot", context.get("runAsNonRoot")) is not True:
            found.append(f"{name}: runAsNonRoot != true")
        if own.get("runAsUser", context.get("runAsUser")) == 0:
            found.append(f"{name}: runAsUser=0")
        if any(p.get("hostPort") for p in container.get("ports", [])):
            found.append(f"{name}: hostPort")
    return found


@pytest.mark.parametrize(
    ("kind", "pod"),
    [
        ("trainer", lambda: ftj_pod()),
        ("trainer + fetch-model", lambda: ftj_pod(model={**HUB, "template": "qwen"})),
        ("vllm + adapter-sync", lambda: ms_pod()),
        ("vllm + fetch-model + adapter-sync", lambda: ms_pod(model=HUB)),
    ],
)
def test_every_pod_meets_restricted_by_default(kind: str, pod) -> None:
    rendered = pod()
    assert restricted_violations(rendered) == [], kind
    assert rendered["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


def test_vllm_runs_as_a_non_root_uid_its_image_does_not_have() -> None:
    pod = ms_pod()
    assert containers(pod)["vllm"]["securityContext"]["runAsUser"] == 1000
    # The sidecar keeps its image's own non-root USER.
    assert "runAsUser" not in containers(pod)["adapter-sync"]["securityContext"]
    pinned = ms_pod(podSecurity={"runAsUser": 2000})
    assert pinned["securityContext"]["runAsUser"] == 2000
    assert "runAsUser" not in containers(pinned)["vllm"]["securityContext"]


def test_pod_security_relaxes_what_it_names_and_nothing_else() -> None:
    relaxed = {
        "runAsNonRoot": False,
        "runAsUser": 0,
        "fsGroup": 100,
        "allowPrivilegeEscalation": True,
        "seccompProfile": "Unconfined",
        "addCapabilities": ["SYS_PTRACE"],
    }
    for pod in (ftj_pod(podSecurity=relaxed), ms_pod(podSecurity=relaxed)):
        assert pod["securityContext"] == {
            "runAsNonRoot": False,
            "runAsUser": 0,
            "fsGroup": 100,
            "seccompProfile": {"type": "Unconfined"},
        }
        for container in containers(pod).values():
            assert container["securityContext"]["allowPrivilegeEscalation"] is True
            assert container["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["SYS_PTRACE"]}
        assert set(restricted_violations(pod)) >= {"seccompProfile"}


@pytest.mark.parametrize(
    ("pod_security", "words"),
    [
        ({"runAsUser": 0}, "runAsUser 0 is root"),
        ({"seccompProfile": "Localhost"}, "seccompProfile"),
        ({"addCapabilities": ["cap_sys_admin"]}, "addCapabilities"),
        ({"runAsUser": -1}, "runAsUser"),
        ({"privileged": True}, "privileged"),
    ],
)
def test_pod_security_is_validated(pod_security: dict[str, Any], words: str) -> None:
    for model, base in ((FineTuneJobSpec, FTJ), (ModelServeSpec, MS)):
        with pytest.raises(ValidationError) as error:
            model.model_validate({**base, "podSecurity": pod_security})
        assert words in str(error.value)


def test_vllm_gets_no_service_account_token_the_trainer_does() -> None:
    pod = ms_pod()
    assert pod["automountServiceAccountToken"] is False
    # Only the adapter-sync sidecar mounts a token (its own account's, to write its report).
    token_volumes = {v["name"] for v in pod["volumes"] if "projected" in v}
    for name, container in containers(pod).items():
        mounted = {m["name"] for m in container.get("volumeMounts", [])} & token_volumes
        assert bool(mounted) == (name == "adapter-sync"), name
    # The launcher reports progress into the FineTuneJob's status with its own ServiceAccount.
    trainer = ftj_pod()
    assert trainer["serviceAccountName"] == "ner-launcher"


def test_only_the_trainer_container_holds_the_launchers_token_not_the_model_fetch() -> None:
    """fetch-model runs the hub's client on a download from the internet: it needs no API token."""
    pod = ftj_pod(model={"source": "hf://Qwen/Qwen2.5-0.5B", "template": "qwen"})
    assert pod["automountServiceAccountToken"] is False
    token_volumes = {v["name"] for v in pod["volumes"] if "projected" in v}
    assert token_volumes
    every = {**containers(pod), **{c["name"]: c for c in pod.get("initContainers", [])}}
    assert "fetch-model" in every
    for name, container in every.items():
        mounted = [m for m in container.get("volumeMounts", []) if m["name"] in token_volumes]
        assert bool(mounted) == (name == "trainer"), name
        if mounted:
            assert mounted[0]["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"


def test_offline_vllm_gets_no_hub_token_only_fetch_model_does() -> None:
    pod = containers(ms_pod(model=HUB))
    env_names = {e["name"] for e in pod["vllm"].get("env", [])}
    assert "HF_TOKEN" not in env_names and {"name": "HF_HUB_OFFLINE", "value": "1"} in pod["vllm"]["env"]
    assert pod["fetch-model"]["env"] == [
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}
    ]


def test_secret_arguments_are_the_credentials_not_the_tokenizer_options() -> None:
    assert {"swanlab_api_key", "swanlab_lark_secret", "swanlab_lark_webhook_url"} <= SECRET_ARGUMENTS
    assert not SECRET_ARGUMENTS & {
        "add_special_tokens",
        "max_new_tokens",
        "skip_special_tokens",
        "add_tokens",
    }


@pytest.mark.parametrize("key", ["swanlab_api_key", "swanlab_lark_secret", "swanlab_lark_webhook_url"])
def test_tracker_credentials_in_config_are_refused_with_the_way_to_pass_them(key: str) -> None:
    spec, problems = finetunejob_spec({**FTJ, "config": {**FTJ["config"], key: "sk-123"}})
    assert spec is not None and problems
    message = "; ".join(p.message for p in problems)
    assert f"spec.config.{key}" in message and "Secret" in message
    if key == "swanlab_api_key":
        assert "spec.secretEnv" in message and "SWANLAB_API_KEY" in message


def test_secret_env_reaches_the_trainer_from_the_secret_never_the_config_map() -> None:
    spec = FineTuneJobSpec.model_validate(
        {
            **FTJ,
            "secretEnv": [{"name": "SWANLAB_API_KEY", "secretKeyRef": {"name": "swanlab", "key": "api-key"}}],
        }
    )
    target = ftj_render.FineTuneJobTarget(name="ner", namespace="team-a", uid="u", spec=spec)
    trainer = containers(ftj_render.job(target)["spec"]["template"]["spec"])["trainer"]
    assert {
        "name": "SWANLAB_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "swanlab", "key": "api-key"}},
    } in trainer["env"]
    # Only the reference is in the pod template; the ConfigMap holds no trace of the Secret.
    config_map = yaml.safe_dump(ftj_render.config_map(target))
    assert "api-key" not in config_map and "SWANLAB_API_KEY" not in config_map


@pytest.mark.parametrize("name", ["KUBETUNE_ATTEMPT", "MASTER_ADDR", "NODE_RANK", "HF_TOKEN", "1BAD", "A-B"])
def test_secret_env_cannot_replace_the_operators_variables(name: str) -> None:
    with pytest.raises(ValidationError) as error:
        FineTuneJobSpec.model_validate({**FTJ, "secretEnv": [{"name": name, "secretKeyRef": {"name": "s"}}]})
    assert "secretEnv" in str(error.value)


# --- the installation's limit on spec.podSecurity --------------------------------------------------------


@pytest.mark.parametrize(
    ("security", "needs"),
    [
        ({}, "restricted"),
        ({"addCapabilities": ["NET_BIND_SERVICE"]}, "restricted"),
        ({"runAsNonRoot": False, "runAsUser": 0}, "baseline"),
        ({"allowPrivilegeEscalation": True}, "baseline"),
        ({"addCapabilities": ["CHOWN"]}, "baseline"),
        ({"addCapabilities": ["SYS_ADMIN"]}, "privileged"),
        ({"addCapabilities": ["IPC_LOCK"]}, "privileged"),
        ({"seccompProfile": "Unconfined"}, "privileged"),
    ],
)
def test_each_relaxation_needs_its_pod_security_level(security: dict, needs: str) -> None:
    from kubetune.api.podspec import POD_SECURITY_LEVELS, PodSecurity, pod_security_needs, pod_security_over

    parsed = PodSecurity.model_validate(security)
    levels = [level for level, _ in pod_security_needs(parsed)] or ["restricted"]
    assert max(levels, key=POD_SECURITY_LEVELS.index) == needs
    for limit in POD_SECURITY_LEVELS:
        refused = bool(pod_security_over(parsed, limit))
        assert refused == (POD_SECURITY_LEVELS.index(needs) > POD_SECURITY_LEVELS.index(limit))


def test_the_limit_comes_from_the_installation_and_a_wrong_one_stops_the_operator() -> None:
    from kubetune.config import OperatorConfig

    assert OperatorConfig.from_env({}).trainer.pod_security_limit == "baseline"
    assert OperatorConfig.from_env({"KUBETUNE_POD_SECURITY_LIMIT": "privileged"}).trainer.pod_security_limit
    with pytest.raises(ValueError, match="restricted, baseline, privileged"):
        OperatorConfig.from_env({"KUBETUNE_POD_SECURITY_LIMIT": "anything"})
