"""Running the built images as a kubelet would run a pod's container, with podman (runc, the project's own
containers.conf): the pod spec's user, read-only root, capabilities, environment (the downward API filled in
from the pod), volumes and the ServiceAccount token where the kubelet projects it, on the host's network.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = REPO / "images" / "podman" / "containers.conf"
TERMINATION_MESSAGE_PATH = "/dev/termination-log"


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    result = subprocess.run(
        ["podman", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def missing_image(image: str) -> str | None:
    """Why `image` cannot run here (no podman, or not built: `make images`), or None."""
    if shutil.which("podman") is None:
        return "podman is not installed (make images installs it)"
    if podman("image", "exists", image, check=False).returncode != 0:
        return f"{image} is not built (make images)"
    return None


def require_image(image: str) -> None:
    """Skips the test when `image` cannot run here; fails it instead when make built it for this run
    (KUBETUNE_IMAGES lists the images it built: `operator trainer`)."""
    if reason := missing_image(image):
        if image.rsplit("/", 1)[-1].split(":")[0] in os.environ.get("KUBETUNE_IMAGES", "").split():
            pytest.fail(reason)
        pytest.skip(reason)


def memory_bytes(quantity: str) -> str:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return str(int(quantity[: -len(suffix)]) * factor)
    return quantity


@dataclass
class PodContainer:
    """One container of a pod spec (a dict, as the API server returns it), run by podman."""

    pod: dict[str, Any]  # spec, and metadata for the downward API
    workdir: Path
    mounts: dict[str, Path] = field(default_factory=dict)  # volume name -> host directory
    extra_env: dict[str, str] = field(default_factory=dict)  # what the kubelet adds (service host, ...)
    name: str = field(default_factory=lambda: f"kubetune-test-{uuid.uuid4().hex[:8]}")

    @property
    def termination_log(self) -> Path:
        return self.workdir / "termination-log"

    @property
    def container(self) -> dict[str, Any]:
        return self.pod["spec"]["containers"][0]

    def token_volume(self) -> str:
        """The projected volume the API server's ServiceAccount admission added (kube-api-access-*)."""
        for volume in self.pod["spec"]["volumes"]:
            if any("serviceAccountToken" in s for s in (volume.get("projected") or {}).get("sources", [])):
                return volume["name"]
        raise AssertionError("the pod has no ServiceAccount token volume")

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for variable in self.container.get("env") or []:
            if "value" in variable:
                values[variable["name"]] = variable["value"]
            else:  # the downward API: metadata.name, metadata.namespace, metadata.annotations['...']
                path = variable["valueFrom"]["fieldRef"]["fieldPath"]
                if match := re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path):
                    value = (self.pod["metadata"].get(match[1]) or {}).get(match[2], "")
                else:
                    section, key = path.split(".", 1)
                    value = self.pod[section][key]
                values[variable["name"]] = value
        return {**values, **self.extra_env}

    def run_args(self) -> list[str]:
        spec, container = self.pod["spec"], self.container
        pod_security = spec.get("securityContext") or {}
        security = container.get("securityContext") or {}
        user = security.get("runAsUser", pod_security.get("runAsUser"))
        group = security.get("runAsGroup", pod_security.get("runAsGroup", user))
        args = ["--name", self.name, "--network", "host", "--pull", "never"]
        args += ["--hostname", spec.get("hostname") or self.pod["metadata"]["name"]]
        # The file the kubelet mounts for the container's termination message.
        self.termination_log.touch(mode=0o666)
        self.termination_log.chmod(0o666)
        args += ["--volume", f"{self.termination_log}:{TERMINATION_MESSAGE_PATH}:rw"]
        if user is not None:
            args += ["--user", f"{user}:{group}"]
        if security.get("readOnlyRootFilesystem"):
            args.append("--read-only")
        if "ALL" in (security.get("capabilities") or {}).get("drop", []):
            args.append("--cap-drop=all")
        if security.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
        if limit:
            args += ["--memory", memory_bytes(limit)]
        if container.get("workingDir"):
            args += ["--workdir", container["workingDir"]]
        for name, value in self.env().items():
            args += ["--env", f"{name}={value}"]
        for mount in container.get("volumeMounts") or []:
            source = self.mounts.get(mount["name"])
            if source is None:  # an emptyDir: the kubelet makes a fresh directory, writable by anyone
                source = self.workdir / "volumes" / mount["name"]
                source.mkdir(parents=True, exist_ok=True)
                source.chmod(0o1777)
            mode = "ro" if mount.get("readOnly") else "rw"
            args += ["--volume", f"{source}:{mount['mountPath']}:{mode}"]
        if container.get("command"):
            args += ["--entrypoint", container["command"][0]]
        image_and_args = [
            container["image"],
            *(container.get("command") or [])[1:],
            *(container.get("args") or []),
        ]
        return [*args, *image_and_args]

    def start(self) -> None:
        podman("run", "--detach", *self.run_args())

    def run(self, timeout: float) -> subprocess.CompletedProcess[str]:
        return podman("run", "--rm", *self.run_args(), check=False, timeout=timeout)

    def exec(self, *command: str) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, *command, check=False)

    def running(self) -> bool:
        result = podman("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return result.stdout.strip() == "true"

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def remove(self) -> None:
        podman("rm", "--force", "--time", "10", self.name, check=False)
