"""Where `make demo` runs its pods: on the real node for each part whose images are built, else played here,
saying why (tests/cluster/demo_placement.py)."""

from __future__ import annotations

import pytest

from tests.cluster import demo_placement, realnode
from tests.cluster.demo_placement import DemoNodeUnavailable, plan

ALL = {"operator": True, "trainer": True, "vllm-cpu": True}
NONE = dict.fromkeys(ALL, False)


@pytest.mark.parametrize(
    ("mode", "missing", "built", "placed", "said"),
    [
        ("auto", [], ALL, (True, True, True, True), []),
        ("1", [], ALL, (True, True, True, True), []),
        ("0", [], ALL, (False, False, False, False), ["KUBETUNE_DEMO_NODE=0"]),
        ("auto", ["containerd"], ALL, (False, False, False, False), ["lacks containerd", "make node-tools"]),
        (
            "auto",
            [],
            NONE,
            (False, False, False, False),
            ["not built: operator, trainer, vllm-cpu", "make images"],
        ),
        # After `make test` on CI: the trainer image is built only when its inputs changed.
        (
            "auto",
            [],
            {**ALL, "trainer": False},
            (True, True, False, True),
            ["IMAGES=trainer", "fake GPU node"],
        ),
        # vLLM's pod also runs the operator image's sidecar.
        (
            "auto",
            [],
            {**ALL, "operator": False},
            (True, False, True, False),
            ["operator runs here", "operator"],
        ),
        (
            "auto",
            [],
            {**NONE, "vllm-cpu": True},
            (False, False, False, False),
            ["not built: operator, trainer", "all played here"],
        ),
    ],
)
def test_each_part_runs_on_the_real_node_when_it_can_and_the_demo_says_why_not(
    mode: str, missing: list[str], built: dict[str, bool], placed: tuple[bool, ...], said: list[str]
) -> None:
    placement = plan(mode, missing, built)
    assert (placement.node, placement.operator, placement.trainer, placement.vllm) == placed
    notes = " ".join(placement.notes)
    assert all(words in notes for words in said), notes
    assert bool(placement.notes) == bool(said)


@pytest.mark.parametrize(
    ("mode", "missing", "built", "error"),
    [
        ("1", ["root"], ALL, "lacks root"),
        ("1", [], {**ALL, "trainer": False}, "not built: trainer"),
        ("yes", [], ALL, "expected one of auto, 1, 0"),
    ],
)
def test_asking_for_the_real_node_where_it_cannot_run_is_refused_by_name(
    mode: str, missing: list[str], built: dict[str, bool], error: str
) -> None:
    with pytest.raises(DemoNodeUnavailable, match=error):
        plan(mode, missing, built)


def test_the_examples_are_placed_on_the_real_node_without_changing_the_files_shape() -> None:
    ftj = {"spec": {"resources": {"nodes": 1, "gpusPerNode": 1}, "config": {"use_cpu": True}}}
    placed = demo_placement.finetunejob_on_the_node(ftj)
    assert placed["spec"]["resources"] == {"nodes": 1, "gpusPerNode": 0, **realnode.PLACEMENT}
    assert ftj["spec"]["resources"]["gpusPerNode"] == 1  # a copy

    mserve = {"spec": {"resources": {"gpus": 0, "cpu": "2"}, "engine": {"dtype": "float32"}}}
    placed = demo_placement.modelserve_on_the_node(mserve, "ghcr.io/kubetune/vllm-cpu:0.1.0")
    assert placed["spec"]["resources"] == {"gpus": 0, "cpu": "1", **realnode.PLACEMENT}
    assert placed["spec"]["engine"] == {
        "dtype": "float32", "image": "ghcr.io/kubetune/vllm-cpu:0.1.0", "imagePullPolicy": "IfNotPresent"
    }  # fmt: skip
    assert "image" not in mserve["spec"]["engine"]
