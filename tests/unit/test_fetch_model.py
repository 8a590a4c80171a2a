"""The hub model cache on the claim: downloaded once, never half-done, shared by the ranks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubetune.launcher.fetch import MARKER, fetch


class FakeHub:
    """Stands in for the hub (nothing can be downloaded here): writes a model, or dies half-way."""

    def __init__(self, fail_after_files: int | None = None):
        self.calls = 0
        self.fail_after_files = fail_after_files

    def __call__(self, scheme: str, repo_id: str, revision: str | None, into: Path) -> None:
        self.calls += 1
        into.mkdir(parents=True)
        for i, name in enumerate(["config.json", "model.safetensors", "tokenizer.json"]):
            if self.fail_after_files is not None and i >= self.fail_after_files:
                raise ConnectionError("connection reset by peer")
            (into / name).write_text(f"{scheme}:{repo_id}@{revision}:{name}")


def test_downloads_once_then_reuses_the_cache(tmp_path: Path) -> None:
    dest = tmp_path / "models/hub/hf/Qwen/Qwen2.5-0.5B"
    hub = FakeHub()
    assert fetch("hf://Qwen/Qwen2.5-0.5B", dest, revision="main", download=hub) == "downloaded"
    assert (dest / "model.safetensors").read_text() == "hf:Qwen/Qwen2.5-0.5B@main:model.safetensors"
    assert json.loads((dest / MARKER).read_text())["source"] == "hf://Qwen/Qwen2.5-0.5B"

    assert fetch("hf://Qwen/Qwen2.5-0.5B", dest, download=hub) == "cached"
    assert hub.calls == 1


def test_an_interrupted_download_never_counts_as_done(tmp_path: Path) -> None:
    dest = tmp_path / "models/hub/hf/org/m"
    with pytest.raises(ConnectionError):
        fetch("hf://org/m", dest, download=FakeHub(fail_after_files=1))
    assert not dest.exists(), "a partial download must never be at the final path"

    assert fetch("hf://org/m", dest, download=FakeHub()) == "downloaded"
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        [MARKER, "config.json", "model.safetensors", "tokenizer.json"]
    )


def test_unmarked_files_at_the_destination_are_moved_aside_not_deleted(tmp_path: Path) -> None:
    dest = tmp_path / "cache/m"
    dest.mkdir(parents=True)
    (dest / "half.bin").write_text("someone's bytes")
    assert fetch("ms://org/m", dest, download=FakeHub()) == "downloaded"
    assert (dest / MARKER).exists()
    aside = [p for p in dest.parent.iterdir() if p.name.startswith("m.incomplete-")]
    assert len(aside) == 1 and (aside[0] / "half.bin").read_text() == "someone's bytes"


def test_a_download_finished_first_by_another_pod_is_kept(tmp_path: Path) -> None:
    """Two ModelServe replicas (or two FineTuneJobs) of one hub model both download: the first complete copy
    stays where it is (a vLLM may be loading it), the later one is dropped."""
    dest = tmp_path / "cache/m"
    first = FakeHub()

    def other_pod_finishes_meanwhile(scheme: str, repo_id: str, revision: str | None, into: Path) -> None:
        fetch("hf://org/m", dest, download=first)
        FakeHub()(scheme, repo_id, revision, into)

    assert fetch("hf://org/m", dest, download=other_pod_finishes_meanwhile) == "cached"
    assert first.calls == 1 and (dest / MARKER).exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["m"], "no copy moved aside, no partial left"


def test_other_ranks_wait_for_rank_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kubetune.launcher import fetch as fetch_module

    dest = tmp_path / "cache/m"
    hub = FakeHub()
    waits: list[float] = []

    def rank_zero_downloads_while_rank_one_waits(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 1:  # rank 1 is waiting: now rank 0 comes, whatever the machine's speed
            fetch("hf://org/m", dest, rank=0, download=hub)

    monkeypatch.setattr(fetch_module.time, "sleep", rank_zero_downloads_while_rank_one_waits)
    assert fetch("hf://org/m", dest, rank=1, download=hub, poll=0.05, wait_timeout=10) == "waited"
    assert waits == [0.05]
    assert hub.calls == 1, "only rank 0 downloads"


def test_a_rank_gives_up_after_its_timeout(tmp_path: Path) -> None:
    with pytest.raises(TimeoutError, match="did not appear complete"):
        fetch("hf://org/m", tmp_path / "never", rank=2, download=FakeHub(), poll=0.01, wait_timeout=0.05)
