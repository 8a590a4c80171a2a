"""The ModelServe sidecar's decisions: what it refuses before vLLM sees it, and when it loads, reloads and
unloads. vLLM here is a small stand-in that keeps a name -> path table; tests/serve runs the real engine."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from kubetune.launcher.adapter_sync import (
    FAILED,
    LOADED,
    Syncer,
    check_adapter,
    fingerprint,
    report_document,
    safetensors_shapes,
)

# The tiny Qwen2 of the worker tier: hidden 64, 2 heads of 32, 1 KV head, MLP 128, 2 layers.
BASE_CONFIG = {
    "hidden_size": 64,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
}


def write_safetensors(path: Path, shapes: dict[str, list[int]]) -> None:
    header: dict[str, object] = {}
    offset = 0
    for name, shape in shapes.items():
        size = 4 * shape[0] * shape[1]
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)


def make_adapter(root: Path, rank: int = 8, hidden: int = 64, layers: int = 2, **config: object) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": rank, "base_model_name_or_path": "/mnt/claim/m", **config})
    )
    shapes = {}
    for layer in range(layers):
        prefix = f"base_model.model.model.layers.{layer}"
        shapes[f"{prefix}.self_attn.q_proj.lora_A.weight"] = [rank, hidden]
        shapes[f"{prefix}.self_attn.q_proj.lora_B.weight"] = [hidden, rank]
        shapes[f"{prefix}.mlp.down_proj.lora_A.weight"] = [rank, 2 * hidden]
    write_safetensors(root / "adapter_model.safetensors", shapes)
    return root


@pytest.fixture
def base(tmp_path: Path) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(BASE_CONFIG))
    return model


def test_safetensors_header_is_read_without_the_weights(tmp_path: Path) -> None:
    write_safetensors(tmp_path / "w.safetensors", {"a": [2, 3], "b": [4, 1]})
    assert safetensors_shapes(tmp_path / "w.safetensors") == {"a": [2, 3], "b": [4, 1]}


@pytest.mark.parametrize(
    ("setup", "words"),
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.mkdir(), "no adapter_config.json"),
        (lambda p: make_adapter(p, peft_type="IA3"), "IA3 adapter"),
        (lambda p: make_adapter(p, rank=32), "rank 32 is above the server's --max-lora-rank 16"),
        (lambda p: make_adapter(p, modules_to_save=["lm_head"]), "modules_to_save"),
        (lambda p: make_adapter(p, hidden=96), "trained on another base model"),
        (lambda p: make_adapter(p, layers=3), "more layers"),
    ],
    ids=["missing", "not-peft", "not-lora", "rank", "modules-to-save", "other-base", "more-layers"],
)
def test_refusals_name_the_problem(tmp_path: Path, base: Path, setup, words: str) -> None:
    adapter = tmp_path / "adapter"
    setup(adapter)
    problem = check_adapter(str(adapter), str(base), 16)
    assert problem is not None and words in problem


def test_an_adapter_trained_elsewhere_from_the_same_model_passes(tmp_path: Path, base: Path) -> None:
    # Trained by hand from /data/models/...: another path string, the same shapes.
    adapter = make_adapter(tmp_path / "a", base_model_name_or_path="/data/models/Qwen2.5-7B-Instruct")
    assert check_adapter(str(adapter), str(base), 16) is None


def test_fingerprint_changes_with_the_files(tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path / "a")
    first = fingerprint(str(adapter))
    weights = adapter / "adapter_model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert fingerprint(str(adapter)) not in (None, first)
    assert fingerprint(str(tmp_path / "missing")) is None


class FakeVLLM:
    """A name -> path table, and the loads it was asked for."""

    def __init__(self) -> None:
        self.table: dict[str, str] = {}
        self.loads: list[str] = []
        self.refuse: dict[str, str] = {}

    def healthy(self) -> bool:
        return True

    def adapters(self) -> dict[str, str]:
        return dict(self.table)

    def load(self, name: str, path: str) -> str | None:
        self.loads.append(name)
        if name in self.refuse:
            return self.refuse[name]
        self.table[name] = path
        return None

    def unload(self, name: str) -> None:
        self.table.pop(name, None)


def test_loads_reloads_and_unloads_as_the_config_changes(tmp_path: Path, base: Path) -> None:
    vllm = FakeVLLM()
    syncer = Syncer(vllm, base_model=str(base), max_lora_rank=16)  # type: ignore[arg-type]
    a, b = make_adapter(tmp_path / "a"), make_adapter(tmp_path / "b")

    reports = syncer.sync({"ner": str(a), "sql": str(b)})
    assert {n: r.state for n, r in reports.items()} == {"ner": LOADED, "sql": LOADED}
    assert vllm.table == {"ner": str(a), "sql": str(b)}

    syncer.sync({"ner": str(a), "sql": str(b)})
    assert vllm.loads == ["ner", "sql"], "nothing changed: nothing loaded again"

    # Retrained into the same path: loaded again, so vLLM serves the new weights.
    weights = a / "adapter_model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    syncer.sync({"ner": str(a), "sql": str(b)})
    assert vllm.loads[-1] == "ner"

    # `sql` removed, `ner` moved to b: one unload, one fresh load.
    syncer.sync({"ner": str(b)})
    assert vllm.table == {"ner": str(b)}

    # vLLM restarted (it has nothing): everything is loaded again.
    vllm.table.clear()
    syncer.sync({"ner": str(b)})
    assert vllm.table == {"ner": str(b)}


def test_a_refused_adapter_is_reported_and_tried_again_only_when_it_changes(
    tmp_path: Path, base: Path
) -> None:
    vllm = FakeVLLM()
    vllm.refuse["bad"] = "vLLM refused to load it (500): something vLLM says"
    syncer = Syncer(vllm, base_model=str(base), max_lora_rank=16)  # type: ignore[arg-type]
    adapter = make_adapter(tmp_path / "bad")
    big = make_adapter(tmp_path / "big", rank=64)

    reports = syncer.sync({"bad": str(adapter), "big": str(big)})
    assert reports["bad"].state == FAILED and "something vLLM says" in (reports["bad"].message or "")
    assert reports["big"].state == FAILED and "--max-lora-rank 16" in (reports["big"].message or "")
    assert vllm.loads == ["bad"], "the rank is refused before vLLM is asked"
    syncer.sync({"bad": str(adapter), "big": str(big)})
    assert vllm.loads == ["bad"], "unchanged files: not tried again"

    document = report_document(reports, now="2026-12-01T00:00:00Z", claim=str(tmp_path))
    assert document["adapters"]["bad"] == {
        "state": "Failed",
        "path": str(adapter),
        "claimPath": "bad",  # what the operator knows it by, whatever the mount point
        "message": "vLLM refused to load it (500): something vLLM says",
    }
