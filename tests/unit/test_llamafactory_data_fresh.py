"""The committed LLaMA-Factory argument data matches the release installed in the trainer venv.

Needs the trainer venv (`make trainer-venv`: LLaMA-Factory, transformers and PyTorch, several GB); skipped
without it. Point KUBETUNE_TRAINER_PYTHON at another interpreter that has the `trainer` extra installed.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "gen_llamafactory_args.py"
DEFAULT_TRAINER_PYTHON = Path.home() / ".cache" / "kubetune" / "trainer-venv" / "bin" / "python"


def trainer_python() -> Path:
    return Path(os.environ.get("KUBETUNE_TRAINER_PYTHON") or DEFAULT_TRAINER_PYTHON)


def test_committed_data_matches_the_installed_release() -> None:
    python = trainer_python()
    if not python.exists():
        pytest.skip(f"no trainer venv at {python}: run `make trainer-venv` (or set KUBETUNE_TRAINER_PYTHON)")
    env = {k: v for k, v in os.environ.items() if k not in ("USE_MCA", "ALLOW_EXTRA_ARGS")}
    out = subprocess.run(
        [str(python), str(SCRIPT), "--check"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, f"{SCRIPT.name} --check failed:\n{out.stdout}{out.stderr}"
    assert "is up to date" in out.stdout
