from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import kubetune
from kubetune.cli import main
from tests import specs


def test_version_command(capsys) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == f"kubetune {kubetune.__version__}"


def test_package_is_importable_as_kubetune_not_operator() -> None:
    import operator

    # The folder is operator/, but the standard library's operator module must stay untouched.
    assert hasattr(operator, "itemgetter")
    assert kubetune.__file__.endswith("operator/kubetune/__init__.py")


def test_console_script_is_installed() -> None:
    out = subprocess.run([sys.executable, "-m", "kubetune.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout.startswith("kubetune ")


# --- kubetune render / validate ------------------------------------------------------------------------

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "finetune").glob("*.yaml"))
CHILD_KINDS = ["ConfigMap", "Service", "ServiceAccount", "Role", "RoleBinding", "Job"]

SPEC: dict[str, Any] = specs.finetunejob_spec(
    dataset={"names": ["train"], "dir": "data", "info": {"train": {"file_name": "train.json"}}}
)


def _write(tmp_path: Path, spec: dict[str, Any], name: str = "ner", **metadata: Any) -> Path:
    doc = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name, **metadata},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**doc, "spec": spec}, sort_keys=False), encoding="utf-8")
    return path


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_render_prints_the_children_as_yaml(example: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", str(example)]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [doc["kind"] for doc in docs] == CHILD_KINDS
    name = yaml.safe_load(example.read_text(encoding="utf-8"))["metadata"]["name"]
    for doc in docs:
        assert doc["metadata"]["namespace"] == "default"
        assert doc["metadata"]["ownerReferences"][0]["name"] == name


def test_render_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, SPEC, namespace="team-b")
    args = ["render", str(path), "--attempt", "3", "--trainer-image", "example.com/trainer:dev"]
    assert main(args) == 0
    job = list(yaml.safe_load_all(capsys.readouterr().out))[-1]
    assert job["metadata"]["name"] == "ner-a3"
    assert job["metadata"]["namespace"] == "team-b"
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "example.com/trainer:dev"
    assert main(["render", str(path), "--namespace", "team-c"]) == 0
    assert {doc["metadata"]["namespace"] for doc in yaml.safe_load_all(capsys.readouterr().out)} == {"team-c"}


def test_render_reads_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(EXAMPLES[0].read_text(encoding="utf-8")))
    assert main(["render", "-"]) == 0
    assert [doc["kind"] for doc in yaml.safe_load_all(capsys.readouterr().out)] == CHILD_KINDS


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_validate_accepts_the_examples(example: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(example)]) == 0
    name = yaml.safe_load(example.read_text(encoding="utf-8"))["metadata"]["name"]
    assert capsys.readouterr().out.strip() == f"FineTuneJob/{name}: valid"


@pytest.mark.parametrize("command", ["validate", "render"])
def test_a_config_typo_is_refused_with_the_nearest_name(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = {**SPEC, "config": {**SPEC["config"], "lora_rnak": 16}}
    del spec["config"]["lora_rank"]
    assert main([command, str(_write(tmp_path, spec))]) == 1
    out = capsys.readouterr()
    assert "FineTuneJob/ner" in out.err
    assert "`lora_rnak`" in out.err
    assert "did you mean `lora_rank`?" in out.err
    assert out.out == ""


def test_validate_names_the_invalid_spec_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = {**SPEC, "resources": {"nodes": 0}}
    assert main(["validate", str(_write(tmp_path, spec))]) == 1
    err = capsys.readouterr().err
    assert "InvalidSpec" in err and "spec.resources.nodes" in err


def test_validate_reports_every_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _write(tmp_path, SPEC, name="good").read_text(encoding="utf-8")
    bad = _write(tmp_path, {**SPEC, "config": {"lerning_rate": 1}}, name="bad").read_text(encoding="utf-8")
    both = tmp_path / "both.yaml"
    both.write_text(good + "---\n" + bad, encoding="utf-8")
    assert main(["validate", str(both)]) == 1
    out = capsys.readouterr()
    assert "FineTuneJob/good: valid" in out.out
    assert "FineTuneJob/bad" in out.err and "learning_rate" in out.err


def test_validate_refuses_other_kinds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text("apiVersion: v1\nkind: Secret\nmetadata: {name: x}\n", encoding="utf-8")
    assert main(["validate", str(path)]) == 1
    assert "unsupported kind 'Secret'" in capsys.readouterr().err


def test_validate_takes_the_configmap_convert_puts_before_a_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # kubetune convert writes a DeepSpeed JSON that is none of the presets into a ConfigMap, first.
    path = tmp_path / "cm.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", encoding="utf-8")
    assert main(["validate", str(path)]) == 0
    assert "ConfigMap/x" in capsys.readouterr().out


def test_render_of_a_configmap_dataset_needs_dataset_info(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = {
        "names": ["train"],
        "dir": "data",
        "configMapRef": {"name": "datasets", "key": "dataset_info.json"},
    }
    path = _write(tmp_path, {**SPEC, "dataset": dataset})
    assert main(["render", str(path)]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert "dataset.configMapRef" in out.err and "--dataset-info" in out.err

    info = tmp_path / "dataset_info.json"
    info.write_text(json.dumps({"train": {"file_name": "train.json"}}), encoding="utf-8")
    assert main(["render", str(path), "--dataset-info", str(info)]) == 0
    config_map = next(yaml.safe_load_all(capsys.readouterr().out))
    rendered = json.loads(config_map["data"]["dataset_info.json"])
    assert rendered == {"train": {"file_name": "/mnt/claim/data/train.json"}}


def test_validate_refuses_a_dataset_name_without_an_info_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = {**SPEC, "dataset": {**SPEC["dataset"], "names": ["train", "missing"]}}
    assert main(["validate", str(_write(tmp_path, spec))]) == 1
    err = capsys.readouterr().err
    assert "spec.dataset.names: every name" in err
    assert "missing has none" in err


# --- kubetune validate: ModelServes, and whole resources as the API server sees them --------------------

SERVE: dict[str, Any] = specs.modelserve(
    "qwen", [{"name": "ner", "fineTuneJob": "ner"}, {"name": "other", "path": "adapters/other"}]
)


def _write_docs(tmp_path: Path, *docs: dict[str, Any]) -> Path:
    path = tmp_path / "resources.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False), encoding="utf-8")
    return path


def test_validate_accepts_a_modelserve(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-f", str(_write_docs(tmp_path, SERVE))]) == 0
    assert capsys.readouterr().out == "ModelServe/qwen: valid\n"


def test_validate_names_each_problem_of_a_modelserve_with_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = {
        **SERVE["spec"],
        "adapters": [{"name": "ner"}],
        "autoscaling": {"minReplicas": 3, "maxReplicas": 2},
        "engine": {"maxLoraRank": 48},
    }
    assert main(["validate", "-f", str(_write_docs(tmp_path, {**SERVE, "spec": spec}))]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.startswith("ModelServe/qwen: InvalidSpec: ")
    for words in (
        "spec.adapters[0]: each adapter needs exactly one of path and fineTuneJob",
        "spec.autoscaling: autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
        "spec.engine.maxLoraRank: Input should be 8, 16, 32, 64, 128, 256, 320 or 512",
    ):
        assert words in out.err, out.err


def test_validate_takes_both_kinds_and_configmaps_in_one_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = yaml.safe_load(EXAMPLES[0].read_text(encoding="utf-8"))
    bad_serve = {**SERVE, "metadata": {"name": "bad"}, "spec": {**SERVE["spec"], "replicas": -1}}
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ds"}, "data": {}}
    path = _write_docs(tmp_path, config_map, job, SERVE, bad_serve)
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr()
    assert out.out.splitlines() == [
        "ConfigMap/ds: a ConfigMap, applied as it is",
        f"FineTuneJob/{job['metadata']['name']}: valid",
        "ModelServe/qwen: valid",
    ]
    assert out.err.splitlines() == [
        "ModelServe/bad: InvalidSpec: spec.replicas: Input should be greater than or equal to 0"
    ]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"metadata": {"name": "Qwen_7B"}}, "metadata.name must be a DNS label"),
        ({"metadata": {}}, "metadata.name: Required value"),
        ({"apiVersion": "kubetune.io/v1"}, "apiVersion: 'kubetune.io/v1': set kubetune.io/v1alpha1"),
        ({"spec": None}, "spec: Required value"),
    ],
    ids=["name not a DNS label", "no name", "old apiVersion", "no spec"],
)
def test_validate_checks_the_whole_resource(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, Any], words: str
) -> None:
    assert main(["validate", "-f", str(_write_docs(tmp_path, {**SERVE, **change}))]) == 1
    assert words in capsys.readouterr().err


def test_validate_needs_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["validate"])
    assert "file" in capsys.readouterr().err


def test_the_operator_collects_cyclic_garbage_less_often_than_cpythons_default() -> None:
    """At CPython's thresholds the collector went over the caches' long-lived objects a few thousand times
    while a thousand jobs started (cli.collect_garbage_less_often says what it cost)."""
    import gc

    from kubetune.cli import GC_YOUNG_THRESHOLD, collect_garbage_less_often

    before = gc.get_threshold()
    try:
        collect_garbage_less_often()
        young, middle, oldest = gc.get_threshold()
        assert young == GC_YOUNG_THRESHOLD >= 50 * before[0]
        assert middle >= before[1] and oldest == before[2]
        assert gc.get_freeze_count() > 0  # what start-up loaded is out of the collector's way
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
