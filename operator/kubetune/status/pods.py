"""Reading pods, for both kinds: whether one is ready, and why one is not running yet, in words a person can
act on (unschedulable, an image that cannot be pulled, a container that keeps crashing)."""

from __future__ import annotations

from typing import Any

from kubetune.status import conditions

# A container waiting for one of these will not get further by itself: the reason it is reported under
# (each gets a Warning Event: conditions.WARNING_REASONS).
WAITING_PROBLEMS = {
    "ErrImagePull": "ImagePullError",
    "ImagePullBackOff": "ImagePullError",
    "InvalidImageName": "ImagePullError",
    "ErrImageNeverPull": "ImagePullError",
    "CreateContainerConfigError": "ContainerConfigError",
    "CreateContainerError": "ContainerConfigError",
    "CrashLoopBackOff": "CrashLoopBackOff",
    "RunContainerError": "CrashLoopBackOff",
}


def owned_by(obj: dict[str, Any], uid: str) -> bool:
    """Whether `uid` is among the object's owners: children are recognised by their owner, not a label."""
    return any(ref.get("uid") == uid for ref in (obj.get("metadata") or {}).get("ownerReferences") or [])


def of_deployment(pod: dict[str, Any], deployment: str) -> bool:
    """Whether the pod is one of the Deployment's: its controller is the ReplicaSet the Deployment made for
    the pod's template (`<deployment>-<pod-template-hash>`). A pod that only copies the labels is not."""
    meta = pod.get("metadata") or {}
    template_hash = (meta.get("labels") or {}).get("pod-template-hash")
    return bool(template_hash) and any(
        ref.get("controller")
        and ref.get("kind") == "ReplicaSet"
        and ref.get("name") == f"{deployment}-{template_hash}"
        for ref in meta.get("ownerReferences") or []
    )


def terminating(pod: dict[str, Any]) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def pod_ready(pod: dict[str, Any]) -> bool:
    """Ready and not on its way out."""
    return not terminating(pod) and conditions.true_of(pod, "Ready") is not None


def containers(status: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(`init container x` or `container x`, its status), init containers first: they run first."""
    return [(f"init container {c.get('name')}", c) for c in status.get("initContainerStatuses") or []] + [
        (f"container {c.get('name')}", c) for c in status.get("containerStatuses") or []
    ]


def exit_summary(terminated: dict[str, Any]) -> str:
    """`code 137 (OOMKilled): <last line of the termination message>`."""
    message = (terminated.get("message") or "").strip().splitlines()
    detail = f": {message[-1]}" if message else ""
    return f"code {terminated.get('exitCode')} ({terminated.get('reason') or 'Error'}){detail}"


def failed_container(status: dict[str, Any], main: str) -> str | None:
    """What follows `pod x` when a container of it failed: ` exited with code 1 (Error): ...` for the
    pod's `main` container, ` init container y exited with ...` for another; None when none failed."""
    for label, container in containers(status):
        terminated = (container.get("state") or {}).get("terminated")
        if terminated and terminated.get("exitCode", 0) != 0:
            who = "" if label == f"container {main}" else f" {label}"
            return f"{who} exited with {exit_summary(terminated)}"
    return None


def pod_pending_reason(pod: dict[str, Any]) -> tuple[str, str] | None:
    """Why a pod is not running yet, in words a person can act on; None when nothing is wrong yet."""
    status = pod.get("status") or {}
    name = pod.get("metadata", {}).get("name", "?")
    scheduled = conditions.find(status.get("conditions"), "PodScheduled")
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        return "Unschedulable", f"pod {name} cannot be scheduled: {scheduled.get('message', '')}"
    for label, container in containers(status):
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason not in WAITING_PROBLEMS:
            continue
        message = f"pod {name}: {label}: {reason}"
        if waiting.get("message"):
            message += f": {waiting['message']}"
        last = (container.get("lastState") or {}).get("terminated")
        if last:
            restarts = container.get("restartCount", 0)
            message += f" (last exited with {exit_summary(last)}; restarted {restarts} times)"
        return WAITING_PROBLEMS[reason], message
    return None
