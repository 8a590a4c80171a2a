"""Putting a finished directory in place on the shared claim, where other pods may race to do the same.

A model download and a tokenized dataset are written into a private `.partial-*` directory and renamed
into place when complete. Two pods can finish the same one at once; a directory without its completion
marker can also be in the way (a copy by hand). The rules: a complete copy already in place wins (ours is
dropped); an incomplete one is moved aside, never deleted; and a complete copy is never moved aside, even
when another pod put it in place between our check and our move.
"""

from __future__ import annotations

import logging
import shutil
import stat
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger("kubetune.publish")


def move_into_place(partial: Path, dest: Path, complete: Callable[[Path], bool]) -> bool:
    """Renames `partial` to `dest`; False when a complete `dest` was there first (then `partial` is gone)."""
    for _ in range(3):
        if complete(dest):
            log.info("%s was completed by another pod meanwhile; discarding this copy", dest)
            shutil.rmtree(partial, ignore_errors=True)
            return False
        if not (dest.exists() or dest.is_symlink()):
            try:
                # Refused when another pod's rename got there first (dest is then a non-empty directory).
                partial.rename(dest)
                return True
            except OSError:
                continue
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        aside = dest.parent / f"{dest.name}.incomplete-{stamp}-{uuid.uuid4().hex[:6]}"
        try:
            dest.rename(aside)
        except FileNotFoundError:
            continue  # moved by another pod meanwhile
        if complete(aside):
            # Completed by another pod between the check and the move: it goes back, and ours is dropped.
            try:
                aside.rename(dest)
            except OSError:
                log.warning("%s was completed by another pod and could not be put back from %s", dest, aside)
            shutil.rmtree(partial, ignore_errors=True)
            return False
        log.warning("%s existed but was not marked complete; moved it to %s", dest, aside)
    partial.rename(dest)
    return True


def readable_by_all(root: Path) -> int:
    """Makes a finished output readable by every user of the claim: the serving pods run as vLLM's user,
    not the trainer's, and the trainer leaves the adapter's weights 0600. Who may read the claim at all is
    the namespace's business (who may mount it). Returns the files changed; one that cannot be changed
    (another user's) is logged and left."""
    changed = 0
    for path in (root, *root.rglob("*")):
        try:
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                continue
            wanted = mode | (0o555 if stat.S_ISDIR(mode) else 0o444)
            if wanted != mode:
                path.chmod(wanted & 0o7777)
                changed += 1
        except OSError as error:
            log.warning("could not make %s readable: %s", path, error)
    return changed
