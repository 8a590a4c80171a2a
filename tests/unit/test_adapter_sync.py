"""The ModelServe sidecar's decisions: what it refuses before vLLM sees it, and when it loads, reloads and
unloads. vLLM here is a small stand-in that keeps a name -> path table; tests/serve runs the real engine."""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from kubetune.launcher.adapter_sync import (
    FAILED,
    LOADED,
    LOADING,
    Reporter,
    Syncer,
    check_adapter,
    fingerprint,
    report_document,
    safetensors_shapes,
    stale_reports,
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


# --- one malformed adapter is refused alone -------------------------------------------------------------


def write_header(path: Path, header: object, length: int | None = None) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw)


MALFORMED = {
    "config-null": lambda p: (p / "adapter_config.json").write_text("null"),
    "config-list": lambda p: (p / "adapter_config.json").write_text("[1, 2]"),
    "config-string": lambda p: (p / "adapter_config.json").write_text('"LORA"'),
    "no-shape": lambda p: write_header(
        p / "adapter_model.safetensors", {"x.lora_A.weight": {"dtype": "F32"}}
    ),
    "shape-not-a-list": lambda p: write_header(
        p / "adapter_model.safetensors", {"x.lora_A.weight": {"shape": "8x64"}}
    ),
    "header-a-list": lambda p: write_header(p / "adapter_model.safetensors", [1]),
    "header-too-long": lambda p: write_header(p / "adapter_model.safetensors", {}, length=2**62),
    "header-truncated": lambda p: (p / "adapter_model.safetensors").write_bytes(b"\x10\x00"),
    "modules-to-save-numbers": lambda p: (p / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 8, "modules_to_save": [1, 2]})
    ),
}


@pytest.mark.parametrize("breakage", sorted(MALFORMED))
def test_a_malformed_adapter_is_refused_and_the_others_load(
    tmp_path: Path, base: Path, breakage: str
) -> None:
    vllm = FakeVLLM()
    syncer = Syncer(vllm, base_model=str(base), max_lora_rank=16)  # type: ignore[arg-type]
    good, bad = make_adapter(tmp_path / "good"), make_adapter(tmp_path / "bad")
    MALFORMED[breakage](bad)

    reports = syncer.sync({"a-bad": str(bad), "good": str(good)})

    assert reports["good"].state == LOADED and vllm.table == {"good": str(good)}
    assert reports["a-bad"].state == FAILED and reports["a-bad"].message, reports["a-bad"]
    assert syncer.synced_once, "/ready answers 200: the pod serves the rest"
    assert report_document(reports)["adapters"]["a-bad"]["state"] == "Failed"


def test_an_adapter_no_check_foresaw_is_refused_alone(tmp_path: Path, base: Path, monkeypatch) -> None:
    import kubetune.launcher.adapter_sync as sync

    real = sync.check_adapter

    def choking(path: str, *args: object) -> str | None:
        if path.endswith("odd"):
            raise RecursionError("deeply nested JSON")
        return real(path, *args)

    monkeypatch.setattr(sync, "check_adapter", choking)
    vllm = FakeVLLM()
    syncer = Syncer(vllm, base_model=str(base), max_lora_rank=16)  # type: ignore[arg-type]
    good, odd = make_adapter(tmp_path / "good"), make_adapter(tmp_path / "odd")
    reports = syncer.sync({"good": str(good), "odd": str(odd)})
    assert (reports["good"].state, reports["odd"].state) == (LOADED, FAILED)
    assert "could not be checked: RecursionError" in (reports["odd"].message or "")


# --- what vLLM serves is what the status says ----------------------------------------------------------


def test_a_path_swapped_behind_the_sidecars_back_is_loaded_again(tmp_path: Path, base: Path) -> None:
    vllm = FakeVLLM()
    syncer = Syncer(vllm, base_model=str(base), max_lora_rank=16)  # type: ignore[arg-type]
    prod, other = make_adapter(tmp_path / "prod"), make_adapter(tmp_path / "other")
    syncer.sync({"ner": str(prod)})
    vllm.table["ner"] = str(other)  # someone loaded other weights under the production name

    reports = syncer.sync({"ner": str(prod)})

    assert vllm.table == {"ner": str(prod)} and vllm.loads == ["ner", "ner"]
    assert reports["ner"].state == LOADED
    syncer.sync({"ner": str(prod)})
    assert vllm.loads == ["ner", "ner"], "the same path (however spelt): nothing loaded again"
    vllm.table["ner"] = str(prod) + "/"
    syncer.sync({"ner": str(prod)})
    assert vllm.loads == ["ner", "ner"]


def test_a_load_that_races_another_clients_is_tried_again(tmp_path: Path, base: Path) -> None:
    """Another client loads the name between the sidecar's listing and its load, and vLLM refuses the
    second load: the adapter is not Failed (which would wait for its files to change, unloaded), and the
    next round loads it from its own path."""
    vllm = FakeVLLM()
    syncer = Syncer(vllm, base_model=str(base), max_lora_rank=16)  # type: ignore[arg-type]
    prod, other = make_adapter(tmp_path / "prod"), make_adapter(tmp_path / "other")
    syncer.sync({"ner": str(prod)})
    vllm.table.clear()  # unloaded by the other client, who loads its own next

    def raced(name: str, path: str) -> str | None:
        vllm.table[name] = str(other)
        return "vLLM refused to load it (400): The lora adapter 'ner' has already been loaded."

    vllm.load = raced  # type: ignore[method-assign]
    assert syncer.sync({"ner": str(prod)})["ner"].state == LOADING
    del vllm.load
    reports = syncer.sync({"ner": str(prod)})
    assert reports["ner"].state == LOADED and vllm.table == {"ner": str(prod)}


def test_a_refused_adapter_loaded_behind_the_sidecars_back_is_unloaded(tmp_path: Path, base: Path) -> None:
    vllm = FakeVLLM()
    syncer = Syncer(vllm, base_model=str(base), max_lora_rank=16)  # type: ignore[arg-type]
    big = make_adapter(tmp_path / "big", rank=64)
    assert syncer.sync({"big": str(big)})["big"].state == FAILED
    vllm.table["big"] = str(big)
    assert syncer.sync({"big": str(big)})["big"].state == FAILED
    assert vllm.table == {}, "the status says Failed: vLLM must not serve it"


# --- every call has a deadline ---------------------------------------------------------------------------


@pytest.fixture
def hung_server() -> Iterator[str]:
    """A server that accepts connections and never answers: a lost node, a wedged process."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


@pytest.mark.timeout(60)
def test_a_hung_vllm_never_holds_the_sidecar(hung_server: str, monkeypatch) -> None:
    import kubetune.launcher.adapter_sync as sync

    for name in ("PROBE_TIMEOUT", "LIST_TIMEOUT", "LOAD_TIMEOUT"):
        monkeypatch.setattr(sync, name, 0.2)
    vllm = sync.VLLM(f"http://{hung_server}", timeout=sync.LOAD_TIMEOUT)
    assert vllm.healthy() is False
    with pytest.raises(OSError):
        vllm.adapters()
    with pytest.raises(OSError):
        vllm.load("ner", "/x")
    with pytest.raises(OSError):
        vllm.unload("ner")


@pytest.mark.timeout(60)
def test_a_hung_api_server_never_holds_the_sidecar(hung_server: str, tmp_path: Path, monkeypatch) -> None:
    """Before: the report's PATCH waited for good, and the adapters' loading with it."""
    import kubetune.launcher.adapter_sync as sync

    monkeypatch.setattr(sync, "REPORT_TIMEOUT", 0.5)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"http://{hung_server}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    reporter = sync.Reporter("r", "ns", "pod-a", kubeconfig=str(kubeconfig))
    with pytest.raises(Exception, match=r"(?i)timed? ?out"):
        reporter.send({"adapters": {}, "updated": "2026-12-01T00:00:00Z"})
    with pytest.raises(Exception, match=r"(?i)timed? ?out"):
        reporter.sweep(0.0)
    with pytest.raises(Exception, match=r"(?i)timed? ?out"):
        reporter.withdraw()


def test_the_vllm_management_calls_carry_the_pods_token(tmp_path: Path) -> None:
    from kubetune.launcher.adapter_sync import VLLM, ensure_token
    from kubetune.lora_guard import TOKEN_HEADER

    token = ensure_token(tmp_path / "run" / "token")
    assert len(token) >= 32 and ensure_token(tmp_path / "run" / "token") == token, "kept over a restart"
    seen: list[tuple[str, str | None]] = []

    class Recorder(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append((self.path, self.headers.get(TOKEN_HEADER)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        vllm = VLLM(f"http://127.0.0.1:{server.server_address[1]}", token=token)
        assert vllm.load("ner", "/x") is None
        vllm.unload("ner")
    finally:
        server.shutdown()
    assert seen == [("/v1/load_lora_adapter", token), ("/v1/unload_lora_adapter", token)]


# --- the reports of pods gone ----------------------------------------------------------------------------


def test_a_report_unchanged_for_long_is_stale_by_this_pods_clock() -> None:
    seen: dict = {}
    data = {"me": "mine", "alive": "v1", "gone": "old"}
    seen, stale = stale_reports(data, seen, "me", now=0, stale_after=100)
    assert stale == [] and set(seen) == {"alive", "gone"}
    seen, stale = stale_reports({**data, "alive": "v2"}, seen, "me", now=90, stale_after=100)
    assert stale == []
    seen, stale = stale_reports({**data, "alive": "v2"}, seen, "me", now=101, stale_after=100)
    assert stale == ["gone"], "the writer's own timestamps are never read: clocks of two nodes differ"
    seen, stale = stale_reports({"me": "mine"}, seen, "me", now=500, stale_after=100)
    assert (seen, stale) == ({}, [])


class FakeConfigMaps:
    """The report ConfigMap on an API server: merge patches, with resourceVersion as a precondition."""

    def __init__(self, data: dict[str, str]) -> None:
        self.data, self.version, self.calls = dict(data), 1, []
        self.before_patch: Any = None

    def read_namespaced_config_map(self, name: str, namespace: str, **kwargs: Any) -> Any:
        self.calls.append(("get", kwargs.get("_request_timeout")))
        metadata = SimpleNamespace(resource_version=str(self.version))
        return SimpleNamespace(data=dict(self.data), metadata=metadata)

    def patch_namespaced_config_map(self, name: str, namespace: str, body: dict, **kwargs: Any) -> None:
        self.calls.append(("patch", kwargs.get("_request_timeout")))
        if self.before_patch is not None:
            self.before_patch()
        expected = (body.get("metadata") or {}).get("resourceVersion")
        if expected is not None and expected != str(self.version):
            raise ApiException(status=409, reason="Conflict")
        for key, value in body["data"].items():
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value
        self.version += 1


def test_the_reports_of_pods_gone_are_removed_and_the_live_ones_kept() -> None:
    api = FakeConfigMaps({"gone": json.dumps({"adapters": {}, "updated": "2026-11-01T00:00:00Z"})})
    clock = [0.0]
    alive = Reporter("r", "ns", "alive", api=api, clock=lambda: clock[0], heartbeat=10, stale_after=35)
    me = Reporter("r", "ns", "me", api=api, clock=lambda: clock[0], heartbeat=10, stale_after=35)
    document = {"adapters": {"ner": {"state": "Loaded"}}}
    for second in range(0, 60, 3):  # rounds of 3 s; `alive` keeps up its heartbeat with nothing new to say
        clock[0] = float(second)
        alive.send({**document, "updated": f"t{second}"})
        me.send({**document, "updated": f"t{second}"})
    assert set(api.data) == {"alive", "me"}
    assert all(timeout is not None for _, timeout in api.calls), "every call has a deadline"


def test_a_report_written_while_pruning_is_never_removed() -> None:
    api = FakeConfigMaps({"old": "x"})
    me = Reporter("r", "ns", "me", api=api, clock=lambda: 0.0, stale_after=10)
    me.sweep(0.0)
    api.before_patch = lambda: (api.data.update(old="y"), setattr(api, "version", api.version + 1))
    assert me.sweep(100.0) == [] and api.data["old"] == "y", "409: nothing removed, looked at again later"
