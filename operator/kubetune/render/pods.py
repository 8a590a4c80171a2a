"""Pod-level pieces both kinds render the same way: resource requirements, where pods may run, and the
security context (Pod Security "restricted" unless the spec's `podSecurity` relaxes it)."""

from __future__ import annotations

from typing import Any, Protocol

from kubetune.api.podspec import PodSecurity, SecretEnvVar


class Placement(Protocol):
    """What a spec's `resources` say about the pods, for FineTuneJob and ModelServe alike."""

    gpu_resource: str
    cpu: str | None
    memory: str | None
    node_selector: dict[str, str] | None
    tolerations: list[dict[str, Any]] | None
    affinity: dict[str, Any] | None
    priority_class_name: str | None


def resource_requirements(res: Placement, gpus: int) -> dict[str, Any]:
    """GPU limits; CPU and memory with requests equal to limits (Guaranteed QoS when both are set)."""
    limits: dict[str, str] = {}
    requests: dict[str, str] = {}
    if gpus > 0:
        limits[res.gpu_resource] = str(gpus)
    for key, value in (("cpu", res.cpu), ("memory", res.memory)):
        if value is not None:
            limits[key] = requests[key] = value
    out: dict[str, Any] = {}
    if limits:
        out["limits"] = limits
    if requests:
        out["requests"] = requests
    return out


def place(pod_spec: dict[str, Any], res: Placement) -> dict[str, Any]:
    """Adds node selector, tolerations, affinity and priority class to a pod spec, when set."""
    if res.node_selector:
        pod_spec["nodeSelector"] = dict(res.node_selector)
    if res.tolerations:
        pod_spec["tolerations"] = list(res.tolerations)
    if res.affinity:
        pod_spec["affinity"] = dict(res.affinity)
    if res.priority_class_name:
        pod_spec["priorityClassName"] = res.priority_class_name
    return pod_spec


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
