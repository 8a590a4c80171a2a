"""vLLM's adapter management endpoints answer the pod's adapter-sync sidecar alone: the middleware
(kubetune/lora_guard.py) as an ASGI app, imported from the ConfigMap the way vLLM imports it, and the pod
that mounts it. tests/serve runs it inside the real vLLM."""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune import lora_guard
from kubetune.api.modelserve import ModelServeSpec
from kubetune.render import modelserve as render
from tests import specs

TOKEN = "s3cr3t-token"


class Inner:
    """vLLM's app behind the middleware: answers 200 and remembers what reached it."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.seen.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def call(app: Any, path: str, headers: dict[str, str] | None = None, kind: str = "http") -> tuple[int, bytes]:
    scope = {
        "type": kind,
        "method": "POST",
        "path": path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


# vLLM's own paths, and the SageMaker standard's for the same handlers (POST /adapters, DELETE
# /adapters/{name}).
MANAGEMENT = ["/v1/load_lora_adapter", "/v1/unload_lora_adapter", "/adapters", "/adapters/ner"]
# What a client might try to reach the same routes by: a trailing slash (redirected to the route), vLLM's
# --root-path, another case.
VARIANTS = [
    "/v1/load_lora_adapter/",
    "/prefix/v1/unload_lora_adapter",
    "/v1/LOAD_lora_adapter",
    "/prefix/adapters/ner/",
    "//adapters",
]


@pytest.mark.parametrize("path", MANAGEMENT + VARIANTS)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {lora_guard.TOKEN_HEADER: "wrong"},
        {lora_guard.TOKEN_HEADER: ""},
        {"Authorization": f"Bearer {TOKEN}"},
    ],
    ids=["none", "wrong", "empty", "elsewhere"],
)
def test_management_without_the_token_is_refused(token_file: Path, path: str, headers: dict) -> None:
    inner = Inner()
    code, body = call(lora_guard.LoraGuard(inner, str(token_file)), path, headers)
    assert code == 403 and inner.seen == []
    assert "adapter-sync sidecar only" in json.loads(body)["error"]["message"]


@pytest.mark.parametrize("path", MANAGEMENT)
def test_the_sidecar_with_the_token_passes(token_file: Path, path: str) -> None:
    inner = Inner()
    assert (
        call(lora_guard.LoraGuard(inner, str(token_file)), path, {lora_guard.TOKEN_HEADER: TOKEN})[0] == 200
    )
    assert [s["path"] for s in inner.seen] == [path]


@pytest.mark.parametrize("state", ["missing", "empty", "unset"])
def test_no_token_file_no_management_at_all(tmp_path: Path, state: str) -> None:
    """Fails closed: before the sidecar has written its token, nobody loads anything."""
    path = tmp_path / "token"
    if state == "empty":
        path.write_text("\n")
    guard = lora_guard.LoraGuard(Inner(), None if state == "unset" else str(path))
    assert call(guard, MANAGEMENT[0], {lora_guard.TOKEN_HEADER: ""})[0] == 403
    assert call(guard, MANAGEMENT[0], {lora_guard.TOKEN_HEADER: "anything"})[0] == 403


def test_a_new_token_is_taken_at_once(token_file: Path) -> None:
    guard = lora_guard.LoraGuard(Inner(), str(token_file))
    token_file.write_text("rotated")
    assert call(guard, MANAGEMENT[0], {lora_guard.TOKEN_HEADER: TOKEN})[0] == 403
    assert call(guard, MANAGEMENT[0], {lora_guard.TOKEN_HEADER: "rotated"})[0] == 200


@pytest.mark.parametrize(
    "path", ["/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics", "/load"]
)
def test_every_other_request_passes_untouched(token_file: Path, path: str) -> None:
    inner = Inner()
    code, body = call(lora_guard.LoraGuard(inner, str(token_file)), path)
    assert (code, body) == (200, b"ok") and [s["path"] for s in inner.seen] == [path]


def test_a_websocket_is_not_its_business(token_file: Path) -> None:
    inner = Inner()
    call(lora_guard.LoraGuard(inner, str(token_file)), "/v1/realtime", kind="websocket")
    assert len(inner.seen) == 1


# --- the pod ------------------------------------------------------------------------------------------


def target() -> render.ModelServeTarget:
    spec = ModelServeSpec.model_validate(specs.modelserve_spec())
    return render.ModelServeTarget(name="qwen", namespace="team-a", uid="u", spec=spec)


def pod_spec() -> dict[str, Any]:
    return render.deployment(target())["spec"]["template"]["spec"]


def test_vllm_runs_the_middleware_from_the_configmap(tmp_path: Path, monkeypatch, token_file: Path) -> None:
    t = target()
    pod = pod_spec()
    vllm = pod["containers"][0]
    args = vllm["args"]
    assert args[args.index("--middleware") + 1] == "kubetune_lora_guard.LoraGuard"
    env = {e["name"]: e["value"] for e in vllm["env"]}
    mounts = {m["name"]: m for m in vllm["volumeMounts"]}
    assert mounts["lora-guard"] == {"name": "lora-guard", "mountPath": env["PYTHONPATH"], "readOnly": True}
    volume = next(v for v in pod["volumes"] if v["name"] == "lora-guard")
    assert volume["configMap"]["name"] == t.lora_guard_name
    config_map = next(c for c in render.children(t) if c["metadata"]["name"] == t.lora_guard_name)
    [(file_name, source)] = config_map["data"].items()
    assert source == Path(lora_guard.__file__).read_text(), "the file the tests run, verbatim"

    # What vLLM does with `--middleware kubetune_lora_guard.LoraGuard`: import it from the mounted
    # directory on PYTHONPATH, then `app.add_middleware(cls)`, which calls cls(app=...).
    (tmp_path / file_name).write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(lora_guard.TOKEN_FILE_ENV, str(token_file))
    module_name, class_name = args[args.index("--middleware") + 1].rsplit(".", 1)
    module = importlib.import_module(module_name)
    try:
        guard = getattr(module, class_name)(app=Inner())
        assert call(guard, MANAGEMENT[0])[0] == 403
        assert call(guard, MANAGEMENT[0], {module.TOKEN_HEADER: TOKEN})[0] == 200
    finally:
        sys.modules.pop(module_name, None)


def test_the_token_is_in_memory_and_shared_by_vllm_and_the_sidecar_alone() -> None:
    pod = pod_spec()
    volume = next(v for v in pod["volumes"] if v["name"] == "adapter-token")
    assert volume["emptyDir"]["medium"] == "Memory"
    mounts = {
        c["name"]: [m for m in c.get("volumeMounts", []) if m["name"] == "adapter-token"]
        for c in pod["containers"] + pod["initContainers"]
    }
    assert mounts == {
        "vllm": [{"name": "adapter-token", "mountPath": render.ADAPTER_TOKEN_DIR, "readOnly": True}],
        "adapter-sync": [{"name": "adapter-token", "mountPath": render.ADAPTER_TOKEN_DIR}],
    }
    vllm, sidecar = pod["containers"][0], pod["initContainers"][-1]
    env = {e["name"]: e.get("value") for e in vllm["env"]}
    assert env[lora_guard.TOKEN_FILE_ENV] == render.ADAPTER_TOKEN_FILE
    assert sidecar["args"][sidecar["args"].index("--token-file") + 1] == render.ADAPTER_TOKEN_FILE
    # The sidecar is a native sidecar: up before vLLM, so its token is written before vLLM takes requests.
    assert sidecar["restartPolicy"] == "Always"


# --- the NetworkPolicy example of docs/modelserve.md ------------------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "modelserve.md"


def network_policies() -> list[dict[str, Any]]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), flags=re.S)
    return [doc for doc in map(yaml.safe_load, blocks) if doc.get("kind") == "NetworkPolicy"]


def test_the_documented_network_policy_selects_the_pods_and_opens_only_their_serving_port() -> None:
    [policy] = network_policies()
    assert policy["apiVersion"] == "networking.k8s.io/v1"
    t = target()
    assert policy["metadata"]["namespace"] == t.namespace
    deployment = render.deployment(t)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= labels.items(), "it selects the ModelServe's pods"
    assert selector.items() <= render.service(t)["spec"]["selector"].items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    ports = [p for rule in policy["spec"]["ingress"] for p in rule["ports"]]
    assert ports and {(p["port"], p["protocol"]) for p in ports} == {(render.VLLM_PORT, "TCP")}
    vllm = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "http", "containerPort": render.VLLM_PORT} in vllm["ports"]
    assert all(rule["from"] for rule in policy["spec"]["ingress"]), "no rule open to every source"
