"""Where `make demo` runs each of its pods: on a real node (containerd, a kubelet: tests/cluster/realnode.py)
from the built images, as deployed, when this machine can run one; otherwise on a fake GPU node, with this
machine playing the pod's containers (the fallback, and the demo says why).

KUBETUNE_DEMO_NODE chooses: `auto` (the default) uses the real node for each pod whose image is built; `1`
requires all of it (`make demo KUBETUNE_DEMO_NODE=1` builds the images first); `0` plays every pod here.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from tests.cluster import realnode

MODES = ("auto", "1", "0")
# The images each part needs on the node: the ModelServe's pod runs the operator image's adapter-sync sidecar.
NEEDS = {"operator": ("operator",), "trainer": ("trainer",), "vllm": ("vllm-cpu", "operator")}
BUILD_ALL = 'make images IMAGES="operator trainer vllm-cpu"'


class DemoNodeUnavailable(RuntimeError):
    """KUBETUNE_DEMO_NODE=1 on a machine that cannot run the demo's pods on a real node."""


@dataclass(frozen=True)
class Placement:
    node: bool  # the cluster has a real node
    operator: bool  # the chart's operator Deployment runs there (else the operator runs here)
    trainer: bool  # the FineTuneJob's pod runs there, from the trainer image
    vllm: bool  # the ModelServe's pod runs there, from images/vllm-cpu and the operator image
    notes: tuple[str, ...] = ()


def plan(mode: str, missing_tools: list[str], built: dict[str, bool]) -> Placement:
    """The placement for `mode`, given what the node lacks on this machine and which images are built."""
    if mode not in MODES:
        raise DemoNodeUnavailable(f"KUBETUNE_DEMO_NODE={mode}: expected one of {', '.join(MODES)}")
    if mode == "0":
        return Placement(False, False, False, False, ("KUBETUNE_DEMO_NODE=0: every pod is played here",))
    if missing_tools:
        why = f"this machine lacks {', '.join(missing_tools)} for a real node (make node-tools, as root)"
        if mode == "1":
            raise DemoNodeUnavailable(f"KUBETUNE_DEMO_NODE=1, but {why}")
        return Placement(False, False, False, False, (f"no real node: {why}; every pod is played here",))
    runs = {part: all(built.get(image, False) for image in images) for part, images in NEEDS.items()}
    unbuilt = sorted({image for part, images in NEEDS.items() for image in images if not built.get(image)})
    if mode == "1" and unbuilt:
        raise DemoNodeUnavailable(f"KUBETUNE_DEMO_NODE=1, but not built: {', '.join(unbuilt)} ({BUILD_ALL})")
    if not any(runs.values()):
        why = f"not built: {', '.join(unbuilt)} ({BUILD_ALL})"
        return Placement(
            False, False, False, False, (f"no pod can run on a real node, {why}: all played here",)
        )
    notes = []
    if not runs["operator"]:
        notes.append("the operator image is not built (make images IMAGES=operator): the operator runs here")
    if not runs["trainer"]:
        notes.append(
            "the trainer image is not built (make images IMAGES=trainer, about 15 minutes): the FineTuneJob's"
            " pod lands on a fake GPU node and this machine runs its trainer"
        )
    if not runs["vllm"]:
        images = " ".join(i for i in NEEDS["vllm"] if i in unbuilt)
        notes.append(
            f'not built: {images} (make images IMAGES="{images}"): the ModelServe\'s pod lands on a fake GPU'
            " node and this machine runs its containers"
        )
    return Placement(True, runs["operator"], runs["trainer"], runs["vllm"], tuple(notes))


def finetunejob_on_the_node(body: dict[str, Any]) -> dict[str, Any]:
    """The demo's FineTuneJob with its one pod on the real node: no GPU, one process on the node's CPU."""
    placed = copy.deepcopy(body)
    placed["spec"]["resources"] = {"nodes": 1, "gpusPerNode": 0, **copy.deepcopy(realnode.PLACEMENT)}
    return placed


def modelserve_on_the_node(body: dict[str, Any], vllm_image: str) -> dict[str, Any]:
    """The demo's ModelServe with its pod on the real node, vLLM's engine from the locally built CPU image
    (no registry to pull from: IfNotPresent finds it in the node's containerd)."""
    placed = copy.deepcopy(body)
    # One core requested: the example's two are all a small machine has, and the operator's pod asks 100m.
    resources = {**placed["spec"]["resources"], "cpu": "1", **copy.deepcopy(realnode.PLACEMENT)}
    placed["spec"]["resources"] = resources
    placed["spec"]["engine"] = {
        **placed["spec"].get("engine", {}),
        "image": vllm_image,
        "imagePullPolicy": "IfNotPresent",
    }
    return placed
