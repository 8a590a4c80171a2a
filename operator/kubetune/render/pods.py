"""Pod-level pieces both kinds render the same way: resource requirements and where pods may run."""

from __future__ import annotations

from typing import Any, Protocol


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
