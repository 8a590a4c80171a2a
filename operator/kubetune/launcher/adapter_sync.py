"""`kubetune adapter-sync`: the ModelServe pods' sidecar that keeps vLLM's adapter directory in step.

vLLM's lora_filesystem_resolver loads an adapter named N from `<dir>/N` on the first request for N. The
operator writes the adapters the ModelServe should serve into a ConfigMap (`{name: path on the claim}`),
mounted here; Kubernetes refreshes the mounted file when the ConfigMap changes, without a restart. This
sidecar turns that file into symlinks in `<dir>`, and asks vLLM to unload an adapter that was removed or
now points elsewhere, so the next request loads the new one.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("kubetune.adapter-sync")


@dataclass(frozen=True)
class SyncPlan:
    create: dict[str, str]
    update: dict[str, str]
    remove: list[str]

    @property
    def empty(self) -> bool:
        return not (self.create or self.update or self.remove)


def plan_sync(desired: dict[str, str], current: dict[str, str]) -> SyncPlan:
    """What to change to go from the links there are (`current`) to the ones asked for (`desired`)."""
    return SyncPlan(
        create={n: p for n, p in sorted(desired.items()) if n not in current},
        update={n: p for n, p in sorted(desired.items()) if n in current and current[n] != p},
        remove=sorted(n for n in current if n not in desired),
    )


def current_links(directory: Path) -> dict[str, str]:
    return {entry.name: os.readlink(entry) for entry in directory.iterdir() if entry.is_symlink()}


def read_desired(config: Path) -> dict[str, str]:
    try:
        data = json.loads(config.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as error:  # a half-written file: try again on the next round
        raise ValueError(f"{config}: {error}") from error
    return {str(k): str(v) for k, v in data.items()}


def unload(vllm: str | None, name: str) -> None:
    if not vllm:
        return
    request = urllib.request.Request(
        f"{vllm}/v1/unload_lora_adapter",
        data=json.dumps({"lora_name": name}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10):
            pass
    except (urllib.error.URLError, OSError) as error:
        # Not loaded yet (404), or vLLM still starting: nothing to unload.
        log.info("unload of %s: %s", name, error)


def sync_once(config: Path, directory: Path, vllm: str | None) -> SyncPlan:
    directory.mkdir(parents=True, exist_ok=True)
    plan = plan_sync(read_desired(config), current_links(directory))
    for name in plan.remove:
        (directory / name).unlink()
        unload(vllm, name)
        log.info("removed adapter %s", name)
    for name, path in plan.update.items():
        link = directory / name
        temporary = directory / f".{name}.new"
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(path)
        temporary.replace(link)  # atomic: a request never sees the name missing
        unload(vllm, name)
        log.info("adapter %s now at %s", name, path)
    for name, path in plan.create.items():
        (directory / name).symlink_to(path)
        log.info("added adapter %s at %s", name, path)
    return plan


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="kubetune adapter-sync", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="the mounted adapters.json")
    parser.add_argument("--dir", type=Path, required=True, help="vLLM's VLLM_LORA_RESOLVER_CACHE_DIR")
    parser.add_argument("--vllm", help="vLLM's URL in the pod, to unload removed adapters")
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--once", action="store_true", help="sync once and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[adapter-sync] %(asctime)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while True:
        try:
            sync_once(args.config, args.dir, args.vllm)
        except (OSError, ValueError) as error:
            log.warning("sync failed, will retry: %s", error)
        if args.once or stop.wait(args.interval):
            return 0
