"""`kubetune fetch-model`: a hub model, downloaded once into the model cache on the shared claim.

The init container of every trainer pod runs it. Node rank 0 downloads into a private partial directory
and renames it into place only when complete, with a marker file inside; the other ranks wait for the
marker. A later job finds the marker and skips the download. A partial download never counts as done:
it is never at the final path, and a directory at the final path without the marker is moved aside
(kept, not deleted) and downloaded again.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from kubetune.api.common import HUB_TOKEN_ENV
from kubetune.launcher.publish import move_into_place

log = logging.getLogger("kubetune.fetch")

MARKER = ".kubetune-complete"
Downloader = Callable[[str, str, str | None, Path], None]  # (scheme, repo id, revision, into)


def hub_download(scheme: str, repo_id: str, revision: str | None, into: Path) -> None:
    """The real download, with the hub's own client. The token is in the variable the operator sets for
    the source (HUB_TOKEN_ENV, the one that hub's client reads by itself too), passed on explicitly."""
    if scheme not in HUB_TOKEN_ENV:
        raise ValueError(f"not a hub source: {scheme}://{repo_id}")
    token = os.environ.get(HUB_TOKEN_ENV[scheme]) or None
    if scheme == "hf":
        from huggingface_hub import snapshot_download

        snapshot_download(repo_id=repo_id, revision=revision, local_dir=str(into), token=token)
    else:
        from modelscope import snapshot_download as ms_snapshot_download

        ms_snapshot_download(model_id=repo_id, revision=revision, local_dir=str(into), token=token)


def is_complete(dest: Path) -> bool:
    return (dest / MARKER).is_file()


def fetch(
    source: str,
    dest: Path,
    *,
    revision: str | None = None,
    rank: int = 0,
    download: Downloader = hub_download,
    wait_timeout: float = 6 * 3600,
    poll: float = 5.0,
) -> str:
    """Makes `dest` hold the complete model; returns what it did: `cached`, `downloaded` or `waited`."""
    scheme, _, repo_id = source.partition("://")
    if is_complete(dest):
        log.info("model %s is in the cache at %s", source, dest)
        return "cached"
    if rank != 0:
        log.info("waiting for node rank 0 to download %s into %s", source, dest)
        deadline = time.monotonic() + wait_timeout
        while not is_complete(dest):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{source} did not appear complete at {dest} within {wait_timeout:.0f}s")
            time.sleep(poll)
        return "waited"

    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex[:8]}"
    log.info("downloading %s (revision %s) into %s", source, revision or "default", partial)
    started = time.monotonic()
    download(scheme, repo_id, revision, partial)
    (partial / MARKER).write_text(
        json.dumps(
            {"source": source, "revision": revision, "completedAt": datetime.now(UTC).isoformat()}, indent=2
        )
    )
    if not move_into_place(partial, dest, is_complete):
        return "cached"  # another pod finished the same download first: its copy may be in use already
    log.info("downloaded %s in %.0fs", source, time.monotonic() - started)
    return "downloaded"


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="kubetune fetch-model", description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="hf://org/name or ms://org/name")
    parser.add_argument("--dest", required=True, type=Path, help="the model's directory in the cache")
    parser.add_argument("--revision")
    parser.add_argument("--wait-timeout", type=float, default=6 * 3600)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    rank = int(os.environ.get("NODE_RANK", "0") or 0)
    try:
        fetch(args.source, args.dest, revision=args.revision, rank=rank, wait_timeout=args.wait_timeout)
    except Exception as error:
        message = f"model download failed: {source_hint(args.source)}: {error}"
        log.error(message)
        write_termination_message(message)
        return 1
    return 0


def write_termination_message(message: str, path: str = "/dev/termination-log") -> None:
    """What Kubernetes shows as the container's termination message (and the operator in its status)."""
    try:
        with open(path, "w") as out:
            out.write(message[:4000])
    except OSError:
        pass  # not in a pod


def source_hint(source: str) -> str:
    return f"{source} (check the id, the revision, and spec.model.hubTokenSecret for gated models)"
