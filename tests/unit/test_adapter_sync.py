"""The ModelServe sidecar: the adapters ConfigMap -> vLLM's resolver directory, without restarts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kubetune.launcher.adapter_sync import plan_sync, sync_once


@pytest.mark.parametrize(
    ("desired", "current", "create", "update", "remove"),
    [
        ({}, {}, {}, {}, []),
        ({"a": "/m/a"}, {}, {"a": "/m/a"}, {}, []),
        ({"a": "/m/a"}, {"a": "/m/a"}, {}, {}, []),
        ({"a": "/m/a2"}, {"a": "/m/a"}, {}, {"a": "/m/a2"}, []),
        ({}, {"a": "/m/a"}, {}, {}, ["a"]),
        ({"b": "/m/b", "a": "/m/a"}, {"c": "/m/c", "a": "/m/x"}, {"b": "/m/b"}, {"a": "/m/a"}, ["c"]),
    ],
    ids=["nothing", "add", "same", "moved", "remove", "all-at-once"],
)
def test_plan(desired, current, create, update, remove) -> None:
    plan = plan_sync(desired, current)
    assert (plan.create, plan.update, plan.remove) == (create, update, remove)


def test_sync_follows_the_config_map_as_it_changes(tmp_path: Path, monkeypatch) -> None:
    unloaded: list[str] = []
    monkeypatch.setattr("kubetune.launcher.adapter_sync.unload", lambda vllm, name: unloaded.append(name))
    claim = tmp_path / "claim"
    for name in ("ner-v1", "ner-v2", "sql"):
        (claim / name).mkdir(parents=True)
        (claim / name / "adapter_config.json").write_text(json.dumps({"r": 8}))
    config = tmp_path / "adapters.json"
    resolver = tmp_path / "adapters"

    config.write_text(json.dumps({"ner": str(claim / "ner-v1"), "sql": str(claim / "sql")}))
    sync_once(config, resolver, "http://127.0.0.1:8000")
    assert json.loads((resolver / "ner" / "adapter_config.json").read_text()) == {"r": 8}
    assert os.readlink(resolver / "sql") == str(claim / "sql")

    # A new version of `ner`, and `sql` removed: vLLM is told to drop both from memory.
    config.write_text(json.dumps({"ner": str(claim / "ner-v2")}))
    plan = sync_once(config, resolver, "http://127.0.0.1:8000")
    assert plan.update == {"ner": str(claim / "ner-v2")} and plan.remove == ["sql"]
    assert os.readlink(resolver / "ner") == str(claim / "ner-v2")
    assert not (resolver / "sql").exists()
    assert sorted(unloaded) == ["ner", "sql"]
    assert sync_once(config, resolver, None).empty, "nothing changed: nothing done"


def test_a_missing_config_means_no_adapters_yet(tmp_path: Path) -> None:
    assert sync_once(tmp_path / "absent.json", tmp_path / "dir", None).empty
