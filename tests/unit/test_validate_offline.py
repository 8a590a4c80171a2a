"""`kubetune validate` refuses, offline, what the API server refuses: the very tables that
tests/integration/test_finetunejob_validation.py applies to the real API server (tests/refusals.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune.cli import main
from tests.refusals import (
    NEEDS_THE_CLUSTER,
    REFUSED_BY_THE_API_SERVER,
    SERVE_REFUSED_BY_THE_API_SERVER,
    declared_rules,
    edit,
    serve_edit,
)

CASES = [*REFUSED_BY_THE_API_SERVER, *SERVE_REFUSED_BY_THE_API_SERVER]


def validate(tmp_path: Path, body: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "resource.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
    code = main(["validate", "-f", str(path)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize(
    ("body", "words"),
    [pytest.param(b, w, id=case) for case, b, w in CASES if case not in NEEDS_THE_CLUSTER],
)
def test_validate_refuses_what_the_api_server_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: dict[str, Any], words: list[str]
) -> None:
    code, out = validate(tmp_path, body, capsys)
    assert code == 1, out
    assert "valid\n" not in out
    # The same field, in the API server's words: a CEL rule's own message, `Required value`, ...
    for word in words:
        assert word in out, out


def test_what_only_the_cluster_refuses_is_named_with_the_reason() -> None:
    cases = {case for case, _, _ in CASES}
    assert set(NEEDS_THE_CLUSTER) <= cases
    assert all(reason.strip() for reason in NEEDS_THE_CLUSTER.values())


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(edit("maxRestarts", 0), id="FineTuneJob"),
        pytest.param(serve_edit("replicas", 1), id="ModelServe"),
    ],
)
def test_validate_accepts_the_tables_valid_resources(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: dict[str, Any]
) -> None:
    code, out = validate(tmp_path, body, capsys)
    assert code == 0, out
    assert out == f"{body['kind']}/bad: valid\n"


def test_every_rule_compiles_with_the_offline_interpreter() -> None:
    rules = declared_rules()
    assert len(rules) >= 12
    for rule in rules:
        assert rule.program is not None


def test_validate_refuses_a_modelserve_whose_model_is_on_another_claim(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The operator's own cross-field check (no CEL rule: the claim is named inside a URI).
    code, out = validate(tmp_path, serve_edit("model.source", "pvc://other/models/qwen"), capsys)
    assert code == 1, out
    assert "spec.model.source is on claim other" in out
