"""A ModelServe pod on this machine: the rendered vLLM container and adapter-sync sidecar as processes.

The operator renders the Deployment on the local control plane and KWOK runs its pod there as a stand-in;
this module plays the kubelet for that pod: it starts the two containers' exact commands, arguments and
environment, the claim bind-mounted where the pod mounts it (in a mount namespace of each process's own),
the other mount points mapped onto directories of the test (the adapters and lora-guard ConfigMaps, the
adapter token's emptyDir) and the ports onto free ones of 127.0.0.1, and
refreshes the mounted adapters file when the ConfigMap changes, as the kubelet does. The sidecar's API
token is its ServiceAccount's, as the projected volume gives it.
"""

from __future__ import annotations

import json
import os
import posixpath
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from tests.cluster import localcluster
from tests.cluster.localcluster import token_kubeconfig
from tests.kube import wait_for_running_pods

__all__ = ["ServePod", "play", "token_kubeconfig", "vllm_bin"]

from kubetune import lora_guard
from kubetune.api.common import CLAIM_MOUNT_PATH
from kubetune.api.defaults import CONFIG_MOUNT_PATH
from kubetune.render import modelserve as render

REPO = Path(__file__).resolve().parents[2]
VLLM_BIN = Path.home() / ".cache" / "kubetune" / "vllm-venv" / "bin"


def vllm_bin() -> Path:
    python = os.environ.get("KUBETUNE_VLLM_PYTHON")
    return Path(python).parent if python else VLLM_BIN


def play(
    cluster: localcluster.ClusterInfo, api: Any, namespace: str, name: str, claim: Path, workdir: Path
) -> ServePod:
    """The ModelServe `name`'s pod, once KWOK runs it, as this machine will play it: its Deployment's
    containers, the sidecar's ServiceAccount token, the adapters and lora-guard ConfigMaps mounted as the
    kubelet mounts them at the pod's start. Not started."""
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    pods = wait_for_running_pods(
        core, namespace, f"kubetune.io/modelserve={name}", "KWOK to run the ModelServe's pod"
    )
    workdir.mkdir(parents=True, exist_ok=True)
    pod = ServePod(
        deployment=api.sanitize_for_serialization(apps.read_namespaced_deployment(f"{name}-vllm", namespace)),
        pod_name=pods[0].metadata.name,
        namespace=namespace,
        claim=claim,
        workdir=workdir,
        sidecar_kubeconfig=token_kubeconfig(
            cluster, namespace, f"{name}-adapter-sync", workdir / "sa.kubeconfig"
        ),
    )
    pod.write_adapters(core.read_namespaced_config_map(f"{name}-adapters", namespace).data)
    pod.mount_lora_guard(core.read_namespaced_config_map(f"{name}-lora-guard", namespace).data)
    return pod


@dataclass
class ServePod:
    """The two containers of one ModelServe pod, started on this machine."""

    deployment: dict[str, Any]
    pod_name: str
    namespace: str
    claim: Path
    workdir: Path
    sidecar_kubeconfig: Path | None = None
    vllm_port: int = field(default_factory=localcluster.free_port)
    sync_port: int = field(default_factory=localcluster.free_port)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def config_dir(self) -> Path:
        return self.workdir / "adapters-config"

    @property
    def lora_guard_dir(self) -> Path:
        return self.workdir / "lora-guard"

    @property
    def token_dir(self) -> Path:
        """The memory-backed emptyDir that the sidecar and vLLM share (the adapter token)."""
        return self.workdir / "adapter-token"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.vllm_port}"

    def _map(self, text: str) -> str:
        return (
            text.replace(CONFIG_MOUNT_PATH, str(self.config_dir))
            .replace(render.LORA_GUARD_DIR, str(self.lora_guard_dir))
            .replace(render.ADAPTER_TOKEN_DIR, str(self.token_dir))
            .replace(f"0.0.0.0:{render.SYNC_PORT}", f"127.0.0.1:{self.sync_port}")
            .replace(f"127.0.0.1:{render.VLLM_PORT}", f"127.0.0.1:{self.vllm_port}")
        )

    def _args(self, args: list[str]) -> list[str]:
        out = [self._map(a) for a in args]
        for flag, value in (("--host", "127.0.0.1"), ("--port", str(self.vllm_port))):
            if flag in out:
                out[out.index(flag) + 1] = value
        return out

    def _env(self, container: dict[str, Any]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "KUBETUNE_"))}
        env.pop("KUBECONFIG", None)
        env.update({"HOME": str(self.workdir / "home"), "PYTHONUNBUFFERED": "1"})
        for variable in container.get("env") or []:
            if "value" in variable:
                env[variable["name"]] = self._map(variable["value"])
                continue
            path = variable["valueFrom"]["fieldRef"]["fieldPath"]
            env[variable["name"]] = {"metadata.name": self.pod_name, "metadata.namespace": self.namespace}[
                path
            ]
        return env

    def containers(self) -> tuple[dict[str, Any], dict[str, Any]]:
        spec = self.deployment["spec"]["template"]["spec"]
        vllm = next(c for c in spec["containers"] if c["name"] == "vllm")
        sidecar = next(c for c in spec["initContainers"] if c["name"] == "adapter-sync")
        return vllm, sidecar

    def write_adapters(self, config_map_data: dict[str, str]) -> None:
        """What the kubelet does when the adapters ConfigMap changes: the mounted file is replaced whole."""
        self._mount(self.config_dir, {k: self._map(v) for k, v in config_map_data.items()})

    def mount_lora_guard(self, config_map_data: dict[str, str]) -> None:
        """The lora-guard ConfigMap's files where the vLLM container mounts them (vLLM imports the module)."""
        self._mount(self.lora_guard_dir, config_map_data)

    @staticmethod
    def _mount(directory: Path, files: dict[str, str]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            temporary = directory / f".{name}.tmp"
            temporary.write_text(content)
            temporary.replace(directory / name)

    def start(self) -> None:
        self.start_vllm()
        self.start_sidecar()

    def start_vllm(self) -> None:
        vllm, _ = self.containers()
        (self.workdir / "home").mkdir(parents=True, exist_ok=True)
        self.token_dir.mkdir(parents=True, exist_ok=True)  # the kubelet's empty emptyDir
        assert vllm["command"] == ["vllm", "serve"], vllm["command"]
        module = self.lora_guard_dir / f"{render.LORA_GUARD_MODULE}.py"
        assert render.LORA_GUARD_MIDDLEWARE not in vllm["args"] or module.exists(), (
            "vLLM imports the lora guard at start: mount its ConfigMap first (mount_lora_guard)"
        )
        self.processes["vllm"] = self._spawn(
            "vllm", [str(vllm_bin() / "vllm"), "serve", *self._args(vllm["args"])], self._env(vllm)
        )

    def start_sidecar(self) -> None:
        _, sidecar = self.containers()
        assert sidecar["command"] == ["kubetune"], sidecar["command"]
        env = self._env(sidecar)
        if self.sidecar_kubeconfig is not None:  # the projected token, as a kubeconfig
            env["KUBECONFIG"] = str(self.sidecar_kubeconfig)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "operator"), str(REPO)])
        self.processes["adapter-sync"] = self._spawn(
            "adapter-sync", [sys.executable, "-m", "kubetune.cli", *self._args(sidecar["args"])], env
        )

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        """The container's process, seeing the claim where the pod mounts it: paths the operator writes into
        the adapters ConfigMap (read by the sidecar's watch, passed on to vLLM) are the pod's own. A mount
        namespace of its own (the host's /mnt is left alone), as the kubelet gives each container."""
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - the process owns it until it exits
        parent = posixpath.dirname(CLAIM_MOUNT_PATH)
        mount_claim = (
            f"mount -t tmpfs kubetune-pod {parent} && mkdir -p {CLAIM_MOUNT_PATH}"
            f' && mount --bind "$0" {CLAIM_MOUNT_PATH} && exec "$@"'
        )
        argv = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            mount_claim,
            str(self.claim),
            *argv,
        ]
        return subprocess.Popen(argv, env=env, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 600) -> float:
        """Until the readiness probe the Deployment gives the vLLM container answers 200; seconds waited."""
        vllm, _ = self.containers()
        probe = vllm["readinessProbe"]["httpGet"]
        port = {render.SYNC_PORT: self.sync_port, "http": self.vllm_port}[probe["port"]]
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise AssertionError(f"{name} exited ({process.returncode}):\n{self.log_tail(name)}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{probe['path']}", timeout=5) as r:
                    if r.status == 200:
                        return time.monotonic() - started
            except OSError:
                pass
            time.sleep(1)
        raise AssertionError(
            f"not ready after {timeout}s:\n{self.log_tail('vllm')}\n{self.log_tail('adapter-sync')}"
        )

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.workdir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    # --- the OpenAI API, as a client in the cluster would call it ---------------------------------------

    def request(
        self, method: str, path: str, body: dict | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw.strip().startswith(b"{") else {
                    "text": raw.decode()
                }
        except urllib.error.HTTPError as error:
            raw = error.read()
            try:
                return error.code, json.loads(raw)
            except ValueError:
                return error.code, {"text": raw.decode(errors="replace")}

    def token(self) -> str:
        """The pod's adapter token, as the sidecar wrote it (what only the sidecar and vLLM can read)."""
        return (self.token_dir / "token").read_text().strip()

    def manage(self, path: str, body: dict, token: str | None = None) -> tuple[int, dict[str, Any]]:
        """A management call as the sidecar makes it: with the pod's token (or the one given)."""
        return self.request("POST", path, body, {lora_guard.TOKEN_HEADER: token or self.token()})

    def served_paths(self) -> dict[str, str]:
        """{adapter: the path vLLM loaded it from} (its model list's `root`)."""
        code, body = self.request("GET", "/v1/models")
        assert code == 200, body
        return {m["id"]: m["root"] for m in body["data"] if m.get("parent")}

    def models(self) -> list[str]:
        code, body = self.request("GET", "/v1/models")
        assert code == 200, body
        return [m["id"] for m in body["data"]]

    def complete(self, model: str, prompt: str = "The quick brown fox", tokens: int = 4) -> tuple[int, dict]:
        return self.request(
            "POST",
            "/v1/completions",
            {"model": model, "prompt": prompt, "max_tokens": tokens, "temperature": 0, "logprobs": 3},
        )
