"""Putting a finished directory in place on the shared claim (launcher/publish.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

from kubetune.launcher.publish import move_into_place

MARKER = "done"


def complete(path: Path) -> bool:
    return (path / MARKER).is_file()


def finished(path: Path, who: str) -> Path:
    path.mkdir(parents=True)
    (path / "data").write_text(who)
    (path / MARKER).write_text("")
    return path


def test_a_finished_copy_goes_into_place(tmp_path: Path) -> None:
    dest = tmp_path / "dataset"
    assert move_into_place(finished(tmp_path / ".partial-a", "a"), dest, complete)
    assert (dest / "data").read_text() == "a"


def test_a_complete_copy_in_place_wins_and_ours_is_dropped(tmp_path: Path) -> None:
    dest = finished(tmp_path / "dataset", "other pod")
    partial = finished(tmp_path / ".partial-a", "a")
    assert not move_into_place(partial, dest, complete)
    assert (dest / "data").read_text() == "other pod" and not partial.exists()


def test_an_incomplete_copy_is_moved_aside_not_deleted(tmp_path: Path) -> None:
    dest = tmp_path / "dataset"
    dest.mkdir()
    (dest / "half").write_text("by hand")
    assert move_into_place(finished(tmp_path / ".partial-a", "a"), dest, complete)
    assert (dest / "data").read_text() == "a"
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("dataset.incomplete-")]
    assert len(aside) == 1 and (aside[0] / "half").read_text() == "by hand"


def test_a_copy_completed_by_another_pod_after_our_check_is_never_moved_aside(tmp_path: Path) -> None:
    """Between our check ("incomplete") and our move, the other pod's finished copy took its place."""
    dest = tmp_path / "dataset"
    dest.mkdir()
    (dest / "half").write_text("by hand")
    checks = []

    def complete_after_the_first_check(path: Path) -> bool:
        answer = complete(path)
        if path == dest and not checks:
            checks.append(path)
            shutil.rmtree(dest)  # the other pod moved the incomplete copy aside and put its own in place
            finished(dest, "other pod")
        return answer

    partial = finished(tmp_path / ".partial-a", "a")
    assert not move_into_place(partial, dest, complete_after_the_first_check)
    assert (dest / "data").read_text() == "other pod"
    assert not partial.exists()


def test_a_finished_output_is_made_readable_by_the_serving_pods_user(tmp_path: Path) -> None:
    """transformers writes the weights 0600; vLLM's pods run as another user than the trainer's."""
    from kubetune.launcher.publish import readable_by_all

    out = tmp_path / "run"
    (out / "checkpoint-4").mkdir(parents=True)
    weights, state = out / "adapter_model.safetensors", out / "checkpoint-4" / "optimizer.pt"
    for path in (weights, state):
        path.write_bytes(b"x")
        path.chmod(0o600)
    (out / "checkpoint-4").chmod(0o700)
    (out / "link").symlink_to("/etc/hostname")

    assert readable_by_all(out) == 3
    assert weights.stat().st_mode & 0o777 == 0o644 and state.stat().st_mode & 0o777 == 0o644
    assert (out / "checkpoint-4").stat().st_mode & 0o777 == 0o755
    assert readable_by_all(out) == 0
