"""`kubetune plot`: the loss curves of a FineTuneJob's status, as a PNG and in the terminal (offline)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from kubetune import plot
from kubetune.status import curves
from tests.unit.test_curves import overfitting_curve


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's header, which must be a valid PNG's."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "a PNG signature"
    assert data[12:16] == b"IHDR"
    assert data[-8:-4] == b"IEND"
    return struct.unpack(">II", data[16:24])


FINETUNEJOB = {
    "metadata": {"name": "ner", "namespace": "team-a"},
    "status": {
        "phase": "Running",
        "progress": {
            "step": 800,
            "totalSteps": 1000,
            "loss": 1.2,
            "bestEvalLoss": 1.0,
            "bestEvalStep": 400,
            "history": curves.mark_checkpoints(overfitting_curve(), [400]),
        },
        "output": {"bestCheckpoint": "runs/team-a/ner/checkpoint-400"},
        "conditions": [
            {"type": "Overfitting", "status": "True", "message": "the eval loss has stayed above"}
        ],
    },
}


@pytest.mark.parametrize(
    ("target", "name"), [("ftj/ner", "ner"), ("finetunejob/ner", "ner"), ("ner", "ner"), ("FTJ/x", "x")]
)
def test_the_target_is_named_as_kubectl_names_it(target: str, name: str) -> None:
    assert plot.parse_target(target) == name


@pytest.mark.parametrize("target", ["mserve/ner", "ftj/"])
def test_other_targets_are_refused(target: str) -> None:
    with pytest.raises(ValueError):
        plot.parse_target(target)


def test_the_png_has_the_expected_size(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    plot.write_png(FINETUNEJOB, tmp_path / "out" / "curves.png")
    assert png_size(tmp_path / "out" / "curves.png") == plot.PNG_SIZE


def test_the_terminal_chart_shows_both_curves_and_the_summary_the_verdict() -> None:
    pytest.importorskip("plotext")
    chart = plot.terminal_chart(FINETUNEJOB, width=90, height=22)
    lines = chart.splitlines()
    assert len(lines) == 22 and max(len(line) for line in lines) <= 90
    assert "team-a/ner: loss  (train: line, eval: x)" in chart
    assert "x" in chart.split("\n", 1)[1] and "⠉" in chart, "both curves are drawn"
    assert plot.summary(FINETUNEJOB) == [
        "ner: Running, step 800 of 1000, loss 1.2",
        "best eval loss 1 at step 400",
        "best checkpoint: runs/team-a/ner/checkpoint-400",
        "Overfitting: the eval loss has stayed above",
    ]
