"""What a pod asks for and where it may run, for both kinds: requests and limits (GPUs as the spec's
extended resource), node selector, tolerations, affinity and priority class."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class Where(Protocol):
    """Where a spec's pods may run: `spec.resources` of either kind (or a pod's own, like preprocessing)."""

    @property
    def node_selector(self) -> dict[str, str] | None: ...

    @property
    def tolerations(self) -> list[dict[str, Any]] | None: ...

    @property
    def affinity(self) -> dict[str, Any] | None: ...

    @property
    def priority_class_name(self) -> str | None: ...


@dataclass(frozen=True)
class Placement:
    """A `Where` put together from parts (the preprocessing pod: its own selector, the job's priority)."""

    node_selector: dict[str, str] | None = None
    tolerations: list[dict[str, Any]] | None = None
    affinity: dict[str, Any] | None = None
    priority_class_name: str | None = None


def resource_requirements(
    *, cpu: str | None, memory: str | None, gpus: int = 0, gpu_resource: str = "nvidia.com/gpu"
) -> dict[str, Any]:
    """GPU limits; CPU and memory with requests equal to limits (Guaranteed QoS when both are set)."""
    limits: dict[str, str] = {}
    requests: dict[str, str] = {}
    if gpus > 0:
        limits[gpu_resource] = str(gpus)
    for key, value in (("cpu", cpu), ("memory", memory)):
        if value is not None:
            limits[key] = requests[key] = value
    out: dict[str, Any] = {}
    if limits:
        out["limits"] = limits
    if requests:
        out["requests"] = requests
    return out


def place(pod_spec: dict[str, Any], where: Where) -> dict[str, Any]:
    """Adds node selector, tolerations, affinity and priority class to a pod spec, when set."""
    if where.node_selector:
        pod_spec["nodeSelector"] = dict(where.node_selector)
    if where.tolerations:
        pod_spec["tolerations"] = list(where.tolerations)
    if where.affinity:
        pod_spec["affinity"] = dict(where.affinity)
    if where.priority_class_name:
        pod_spec["priorityClassName"] = where.priority_class_name
    return pod_spec
