"""DeepSpeed's JIT-compiled ops, kept on the claim: compiled once, not in every pod of every attempt.

DeepSpeed builds its ops at the first use (deepspeed_shm_comm on CPU nodes, cpu_adam for the offload presets,
fused kernels on GPUs) with torch's cpp_extension, into TORCH_EXTENSIONS_DIR: by default the container's
home, which goes with the pod. The operator gives DeepSpeed pods KUBETUNE_TORCH_EXTENSIONS, a directory on
the claim keyed by the trainer image; the launcher adds what else changes the binaries, known only in the
pod: Python, torch and DeepSpeed versions and the GPUs' CUDA architectures, so that nodes of another GPU kind
never build over each other's ops. torch serialises the build of one op with a lock file beside it: the
first process builds, the others (other ranks, other nodes) wait and load it.

That lock file stays when its process is killed while it builds (a drain, the OOM killer: cpu_adam takes
5 GiB to build), and torch then waits for it forever, in every later pod. So each launcher holds a shared
flock on the directory while it trains; one that finds nobody else holding it knows every torch lock file
there is stale, and removes them before it starts.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import IO

log = logging.getLogger("kubetune.launch")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "none"


def cuda_architectures(environ: Mapping[str, str], nvidia_smi: str | None) -> str:
    """`sm80-sm90` for the architectures the ops are built for: TORCH_CUDA_ARCH_LIST when set (DeepSpeed
    builds for it), else the visible GPUs' compute capabilities; `cpu` without GPUs."""
    listed = environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
    if listed:
        found = re.findall(r"\d+\.\d+(?:\+PTX)?", listed)
    elif nvidia_smi:
        try:
            out = subprocess.run(
                [nvidia_smi, "--query-gpu=compute_cap", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=30, check=True,
            ).stdout  # fmt: skip
        except (OSError, subprocess.SubprocessError) as error:
            log.warning("could not read the GPUs' compute capability: %s", error)
            return "gpu-unknown"
        found = out.split()
    else:
        return "cpu"
    arches = sorted({"sm" + cap.replace(".", "").replace("+PTX", "-ptx") for cap in found})
    return "-".join(arches) or "cpu"


def ops_key(python: str, torch: str, deepspeed: str, arches: str) -> str:
    """One directory name for what the compiled ops depend on (besides the image)."""
    key = f"py{python}_torch-{torch}_deepspeed-{deepspeed}_{arches}"
    return re.sub(r"[^A-Za-z0-9._+-]", "_", key)


def current_key(environ: Mapping[str, str] | None = None) -> str:
    """The key of this pod: its Python, torch and DeepSpeed, and its GPUs (or `cpu`)."""
    environ = os.environ if environ is None else environ
    python = f"{sys.version_info.major}{sys.version_info.minor}"
    arches = cuda_architectures(environ, shutil.which("nvidia-smi"))
    return ops_key(python, _version("torch"), _version("deepspeed"), arches)


IN_USE = ".kubetune-in-use"


def use(directory: Path) -> IO[str] | None:
    """Marks `directory` in use by this pod for as long as the returned file stays open; first, when no other
    pod uses it, removes the lock files that torch left there. None (and nothing done) when it cannot."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        marker = open(directory / IN_USE, "a")  # noqa: SIM115 - held open for the whole training
    except OSError as error:
        log.warning("compiled ops: cannot use %s: %s", directory, error)
        return None
    try:
        fcntl.flock(marker, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        log.info("compiled ops: %s is in use by another pod; its lock files are left alone", directory)
    else:
        for lock in sorted(directory.glob("*/lock")):
            log.warning("compiled ops: removing %s, left by a pod stopped while it compiled", lock)
            lock.unlink(missing_ok=True)
    fcntl.flock(marker, fcntl.LOCK_SH)
    return marker
