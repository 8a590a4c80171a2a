"""One version, pyproject.toml's: the chart's version and appVersion, the default image tags, and the names
the release workflow publishes under are the ones the chart's defaults pull."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

from kubetune.api.defaults import TRAINER_IMAGE

REPO = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
CHART = yaml.safe_load((REPO / "charts" / "kubetune" / "Chart.yaml").read_text())
VALUES = yaml.safe_load((REPO / "charts" / "kubetune" / "values.yaml").read_text())
WORKFLOW = yaml.safe_load((REPO / ".github" / "workflows" / "release.yml").read_text())


def test_the_chart_and_the_images_carry_pyprojects_version() -> None:
    assert CHART["version"] == VERSION
    assert CHART["appVersion"] == VERSION
    assert VALUES["image"]["tag"] == "", "the operator's tag defaults to the appVersion"
    assert VALUES["trainer"]["image"] == f"ghcr.io/kubetune/trainer:{VERSION}"
    assert VALUES["trainer"]["image"] == TRAINER_IMAGE


def test_the_release_publishes_what_the_chart_pulls() -> None:
    env = WORKFLOW["env"]
    assert env["OPERATOR_IMAGE"] == VALUES["image"]["repository"]
    assert f"{env['TRAINER_IMAGE']}:{VERSION}" == VALUES["trainer"]["image"]
    jobs = WORKFLOW["jobs"]
    # PyYAML reads the `on:` key as True.
    assert WORKFLOW[True]["push"]["tags"] == ["v*.*.*"]
    builds = {
        name: next(s["with"] for s in jobs[name]["steps"] if "build-push-action" in s.get("uses", ""))
        for name in ("operator", "trainer")
    }
    assert builds["operator"]["platforms"] == "linux/amd64,linux/arm64"
    assert builds["trainer"]["platforms"] == "linux/amd64"
    for name, build in builds.items():
        assert build["file"] == f"images/{name}/Dockerfile" and build["push"] is True
        version = "${{ needs.version.outputs.version }}"
        assert build["tags"] == f"${{{{ env.{name.upper()}_IMAGE }}}}:{version}"
    assert "helm push" in jobs["chart"]["steps"][-1]["run"]
