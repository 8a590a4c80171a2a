"""The check that keeps every test input inside the repository (tests/repo_only.py)."""

from __future__ import annotations

import json

import pytest

from tests import repo_only

BESIDE = repo_only.REPO.parent / "shared" / "reference" / "llamafactory-configs" / "dataset_info.json"


def test_a_read_beside_the_checkout_is_refused_and_remembered() -> None:
    with pytest.raises(repo_only.OutsideRepositoryRead, match="tests/data/"):
        BESIDE.read_text(encoding="utf-8")
    with pytest.raises(repo_only.OutsideRepositoryRead):
        list((repo_only.REPO.parent / "shared").iterdir())
    # Remembered even when the code under test swallows it; the autouse fixture fails the test on it.
    assert repo_only.take_reads() == [str(BESIDE), str(repo_only.REPO.parent / "shared")]


@pytest.mark.parametrize(
    "path",
    [
        str(repo_only.REPO / "pyproject.toml"),
        str(repo_only.REPO),
        "/etc/hostname",
        json.__file__,
        str(repo_only.REPO.parent / ".cache" / "x"),
    ],
)
def test_the_repository_the_system_and_the_caches_are_allowed(path: str) -> None:
    assert not repo_only.is_outside(path)


def test_tmp_path_is_allowed(tmp_path) -> None:
    (tmp_path / "x").write_text("x")
    assert (tmp_path / "x").read_text() == "x"


def test_a_clone_under_the_temporary_directory_still_refuses_what_is_beside_it(monkeypatch) -> None:
    """A user may clone anywhere: under /tmp the temporary directory holds the checkout's parent, and
    allowing it would allow everything beside the checkout."""
    import tempfile

    parent = tempfile.gettempdir().rstrip("/") + "/someone/"
    monkeypatch.setattr(repo_only, "_PARENT", parent)
    monkeypatch.setattr(repo_only, "_REPO", parent + "kubetune")
    monkeypatch.setattr(repo_only, "_ALLOWED", repo_only._allowed_prefixes(parent))
    assert repo_only.is_outside(parent + "shared/reference/x.json")
    assert not repo_only.is_outside(parent + "kubetune/pyproject.toml")
