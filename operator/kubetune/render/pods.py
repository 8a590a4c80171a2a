"""Pod-level pieces both kinds render the same way: the security context (Pod Security "restricted" unless
the spec's `podSecurity` relaxes it), environment variables from Secrets, and the memory-backed /dev/shm.
Requests and placement are in render/placement.py."""

from __future__ import annotations

from typing import Any

from kubetune.api.podspec import PodSecurity, SecretEnvVar


def pod_security_context(security: PodSecurity | None) -> dict[str, Any]:
    """The pod-level half of Pod Security "restricted" (non-root, RuntimeDefault seccomp), as relaxed."""
    security = security or PodSecurity()
    context: dict[str, Any] = {
        "runAsNonRoot": security.run_as_non_root,
        "seccompProfile": {"type": security.seccomp_profile},
    }
    for key, value in (
        ("runAsUser", security.run_as_user),
        ("runAsGroup", security.run_as_group),
        ("fsGroup", security.fs_group),
    ):
        if value is not None:
            context[key] = value
    return context


def container_security_context(security: PodSecurity | None) -> dict[str, Any]:
    """The container-level half: no privilege escalation, every capability dropped (some added back)."""
    security = security or PodSecurity()
    capabilities: dict[str, Any] = {"drop": ["ALL"]}
    if security.add_capabilities:
        capabilities["add"] = list(security.add_capabilities)
    return {"allowPrivilegeEscalation": security.allow_privilege_escalation, "capabilities": capabilities}


def secure(pod_spec: dict[str, Any], security: PodSecurity | None) -> dict[str, Any]:
    """Sets the security context of the pod and of every container in it (init containers included)."""
    pod_spec["securityContext"] = pod_security_context(security)
    for container in [*pod_spec.get("initContainers", []), *pod_spec.get("containers", [])]:
        container["securityContext"] = {
            **container_security_context(security),
            **container.get("securityContext", {}),
        }
    return pod_spec


def secret_env(variables: list[SecretEnvVar] | None) -> list[dict[str, Any]]:
    """Environment variables read from Secrets by the kubelet: the values never pass through the operator."""
    return [
        {
            "name": v.name,
            "valueFrom": {"secretKeyRef": {"name": v.secret_key_ref.name, "key": v.secret_key_ref.key}},
        }
        for v in variables or []
    ]


SHM_VOLUME = "dshm"


def shared_memory(size_limit: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(volume, mount) of /dev/shm as a memory-backed emptyDir: the runtime's default 64 MiB is too small for
    NCCL and PyTorch's dataloader workers (training) and for vLLM's tensor-parallel workers (serving). Its
    pages count against the container's memory limit; `resources.sharedMemory` caps it."""
    empty_dir: dict[str, Any] = {"medium": "Memory"}
    if size_limit:
        empty_dir["sizeLimit"] = size_limit
    return {"name": SHM_VOLUME, "emptyDir": empty_dir}, {"name": SHM_VOLUME, "mountPath": "/dev/shm"}


# Where a container finds its API token (what automounting would give, at the same place).
API_TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def api_token_volume(name: str) -> dict[str, Any]:
    """The ServiceAccount's token as a volume, for a pod that does not automount it: only the container
    that mounts it (`api_token_mount`) holds a token; the others (an init container fetching a model
    from a hub, say) have none."""
    return {
        "name": name,
        "projected": {
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {
                    "downwardAPI": {
                        "items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]
                    }
                },
            ]
        },
    }


def api_token_mount(name: str) -> dict[str, Any]:
    return {"name": name, "mountPath": API_TOKEN_DIR, "readOnly": True}
