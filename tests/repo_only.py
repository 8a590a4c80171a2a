"""Every test input lives in the repository: a test that reads a file beside the checkout fails.

A user's `git clone` has nothing next to it, so a test that reads `../shared/...` passes here and breaks
there. An audit hook (sys.addaudithook) sees every file the test process opens or lists; a path under the
checkout's parent directory but outside the checkout is refused on the spot (the read raises
`OutsideRepositoryRead`) and remembered, so that the test fails even when the code under test swallowed the
error. Temporary files, the interpreters' own trees (virtual environments included) and the caches
(`~/.cache`, `$KUBETUNE_CACHE`, the cluster's state) and the import path stay allowed, and so do hidden
folders beside the checkout (the checkout's parent may be the home directory). Child processes are not
watched: the hook is in-process and costs one string comparison per open.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_REPO = str(REPO)
_PARENT = str(REPO.parent).rstrip(os.sep) + os.sep
_EVENTS = frozenset({"open", "os.listdir", "os.scandir"})


class OutsideRepositoryRead(AssertionError):
    """A test read a path outside the repository."""


def _allowed_prefixes(parent: str = _PARENT) -> tuple[str, ...]:
    """The places a test may read from. One that holds the checkout's parent (a clone under /tmp, or in
    ~/.cache) is left out: it would allow everything beside the checkout."""
    places = [
        tempfile.gettempdir(),
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        os.environ.get("XDG_CACHE_HOME"),
        os.environ.get("KUBETUNE_CACHE"),
        os.environ.get("KUBETUNE_CLUSTER_DIR"),
        str(Path.home() / ".cache"),
    ]
    # Where code is imported from (an editable install of another checkout appends its folder to sys.path,
    # and the import system lists every entry): code, not test input.
    places += [entry for entry in sys.path if entry and os.path.abspath(entry) != _PARENT.rstrip(os.sep)]
    prefixes = set()
    for place in filter(None, places):
        for form in (os.path.abspath(place), os.path.realpath(place)):
            prefix = form.rstrip(os.sep) + os.sep
            if not parent.startswith(prefix):
                prefixes.add(prefix)
    return tuple(sorted(prefixes))


_ALLOWED: tuple[str, ...] = ()
_reads: list[str] = []


def is_outside(path: str) -> bool:
    """Whether `path` (absolute, or relative to the working directory) is beside the checkout, not in it."""
    for form in (os.path.abspath(path), os.path.realpath(path)):
        if not form.startswith(_PARENT) or form == _REPO or form.startswith(_REPO + os.sep):
            return False
        if form.startswith(_ALLOWED) or form[len(_PARENT) :].startswith("."):
            return False
    return True


def _audit(event: str, args: tuple) -> None:
    if event not in _EVENTS or not args:
        return
    path = args[0]
    if not isinstance(path, str | bytes | os.PathLike):
        return  # a file descriptor, or os.listdir() of the working directory
    text = os.fsdecode(path)
    if not text.startswith(_PARENT) and os.path.isabs(text):
        return  # the common case, without touching the file system
    if is_outside(text):
        _reads.append(text)
        raise OutsideRepositoryRead(
            f"a test read {text}, outside the repository {_REPO}: copy the input under tests/data/ "
            "(with a line in tests/data/README.md saying where it came from)"
        )


def install() -> None:
    global _ALLOWED
    _ALLOWED = _allowed_prefixes()
    sys.addaudithook(_audit)


def take_reads() -> list[str]:
    """The outside paths read since the last call (and forget them)."""
    reads = list(_reads)
    _reads.clear()
    return reads
