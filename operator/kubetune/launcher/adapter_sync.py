"""`kubetune adapter-sync`: the ModelServe pods' sidecar that loads the adapters into vLLM and says which it
actually serves.

The operator writes the adapters a ModelServe should serve into a ConfigMap (`{name: path in the pod}`),
mounted here; the kubelet refreshes the mounted file when the ConfigMap changes, without a restart. Every
few seconds this sidecar compares that file with what vLLM has (`GET /v1/models`) and:

- loads an adapter that vLLM does not have through `POST /v1/load_lora_adapter` (a restarted vLLM has none);
- reloads one whose path or files changed (unload, then load under a new id: vLLM keeps the old weights
  under a reused name otherwise, its issue #54839);
- unloads one that was removed.

Why the load endpoint and not vLLM's `lora_filesystem_resolver`: the resolver serves an adapter only when
its `adapter_config.json` names, character for character, the `--model` argument vLLM was started with;
an adapter trained anywhere else (by hand from `/data/models/...`) would answer a bare 404. The load
endpoint has no such check, and answers each load with an error a person can read. The user's files on
the claim are never changed. Before asking vLLM, the sidecar checks what it can itself (the rank against
`--max-lora-rank`, `modules_to_save`, the tensors' shapes against the base model), so that the message
names the problem.

What vLLM serves is reported per pod into the ModelServe's report ConfigMap (key: the pod's name), with
the pod's own token, whose Role allows `get` and `patch` on that one ConfigMap; the operator turns the
reports into `status.adapters`. `GET /ready` on `--listen` answers 200 once vLLM is healthy and every
adapter was tried once: the vLLM container's readiness probe, so a new pod takes no traffic for an adapter
it has not loaded yet.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import struct
import threading
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

log = logging.getLogger("kubetune.adapter-sync")

LOADED, FAILED, LOADING = "Loaded", "Failed", "Loading"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


# ---------------------------------------------------------------------------------------------------------
# What is on the claim: the adapter's identity and the checks that need no engine.


def fingerprint(path: str) -> str | None:
    """The adapter's identity: its config and weights' sizes and modification times (None: no adapter)."""
    root = Path(path)
    parts = []
    for name in ("adapter_config.json", *WEIGHT_FILES):
        try:
            stat = (root / name).stat()
        except OSError:
            continue
        parts.append(f"{name}:{stat.st_size}:{stat.st_mtime_ns}")
    return "|".join(parts) if any(p.startswith("adapter_config.json") for p in parts) else None


def safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """The tensors' shapes from a safetensors file's header, without reading the weights."""
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    return {name: meta["shape"] for name, meta in header.items() if name != "__metadata__"}


# (in_features, out_features) of the modules a LoRA usually targets in Llama-like models (Qwen, Llama,
# Mistral, ...), from the base model's config.json.
def _module_shapes(config: dict[str, Any]) -> dict[str, tuple[int, int]]:
    hidden = config.get("hidden_size")
    heads = config.get("num_attention_heads")
    if not isinstance(hidden, int) or not isinstance(heads, int) or heads <= 0:
        return {}
    head_dim = config.get("head_dim") or hidden // heads
    kv = (config.get("num_key_value_heads") or heads) * head_dim
    inter = config.get("intermediate_size")
    shapes = {
        "q_proj": (hidden, heads * head_dim),
        "k_proj": (hidden, kv),
        "v_proj": (hidden, kv),
        "o_proj": (heads * head_dim, hidden),
    }
    if isinstance(inter, int):
        shapes.update(
            {"gate_proj": (hidden, inter), "up_proj": (hidden, inter), "down_proj": (inter, hidden)}
        )
    return shapes


_LORA_TENSOR = re.compile(r"layers\.(\d+)\..*?\.?(\w+)\.lora_([AB])(?:\.\w+)?\.weight$")


def check_adapter(path: str, base_model: str | None, max_lora_rank: int | None) -> str | None:
    """Why vLLM would refuse this adapter, in words; None when nothing is found against it."""
    root = Path(path)
    if not root.is_dir():
        return f"adapter directory {path} does not exist on the claim"
    try:
        config = json.loads((root / "adapter_config.json").read_text())
    except FileNotFoundError:
        return f"{path} has no adapter_config.json: not a PEFT adapter (a merged model is served as a model)"
    except (OSError, ValueError) as error:
        return f"{path}/adapter_config.json cannot be read: {error}"
    if not any((root / name).exists() for name in WEIGHT_FILES):
        return f"{path} has no adapter_model.safetensors (or .bin)"
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        return f"{path} is a {config.get('peft_type')} adapter; vLLM serves LoRA adapters only"
    rank = config.get("r")
    if isinstance(rank, int) and max_lora_rank is not None and rank > max_lora_rank:
        return (
            f"its rank {rank} is above the server's --max-lora-rank {max_lora_rank}: set "
            f"spec.engine.maxLoraRank to {rank} or more"
        )
    if config.get("modules_to_save"):
        return (
            f"it saves whole modules ({', '.join(config['modules_to_save'])}: modules_to_save), which vLLM "
            "does not load: retrain without them (LLaMA-Factory: no additional_target) or merge the adapter "
            "and serve the merged model"
        )
    if base_model:
        return _shape_mismatch(root, Path(base_model), config)
    return None


def _shape_mismatch(root: Path, base_model: Path, adapter_config: dict[str, Any]) -> str | None:
    weights = root / "adapter_model.safetensors"
    try:
        base = json.loads((base_model / "config.json").read_text())
        shapes = safetensors_shapes(weights)
    except (OSError, ValueError, struct.error):
        return None  # nothing to compare with: vLLM will say
    expected = _module_shapes(base)
    layers = base.get("num_hidden_layers")
    trained_from = adapter_config.get("base_model_name_or_path") or "another model"
    for name, shape in sorted(shapes.items()):
        match = _LORA_TENSOR.search(name)
        if not match or len(shape) != 2:
            continue
        layer, module, which = int(match.group(1)), match.group(2), match.group(3)
        if isinstance(layers, int) and layer >= layers:
            return (
                f"it was trained on a model with more layers ({trained_from}; tensor {name}), not on the "
                f"served base model ({layers} layers)"
            )
        if module not in expected:
            continue
        in_features, out_features = expected[module]
        actual = shape[1] if which == "A" else shape[0]
        wanted = in_features if which == "A" else out_features
        if actual != wanted:
            return (
                f"it was trained on another base model ({trained_from}): {module} has "
                f"{'input' if which == 'A' else 'output'} size {actual} in the adapter, {wanted} in the "
                "served model"
            )
    return None


# ---------------------------------------------------------------------------------------------------------
# vLLM's API.


class VLLM:
    def __init__(self, url: str, timeout: float = 120):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict | None = None) -> tuple[int, str]:
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json"},
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")

    def healthy(self) -> bool:
        try:
            return self._call("GET", "/health")[0] == 200
        except OSError:
            return False

    def adapters(self) -> dict[str, str]:
        """{name: path} of the LoRA adapters vLLM has loaded (the model list's cards with a parent)."""
        code, text = self._call("GET", "/v1/models")
        if code != 200:
            raise OSError(f"GET /v1/models answered {code}: {text[:200]}")
        return {m["id"]: m.get("root", "") for m in json.loads(text)["data"] if m.get("parent")}

    def load(self, name: str, path: str) -> str | None:
        """Loads the adapter; None on success, else vLLM's error message."""
        code, text = self._call("POST", "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})
        return None if code == 200 else f"vLLM refused to load it ({code}): {_error_message(text)}"

    def unload(self, name: str) -> None:
        code, text = self._call("POST", "/v1/unload_lora_adapter", {"lora_name": name})
        if code not in (200, 404):
            log.warning("unload of %s answered %s: %s", name, code, text[:200])


def _error_message(text: str) -> str:
    try:
        body = json.loads(text)
    except ValueError:
        return text.strip()[:500]
    error = body.get("error", body) if isinstance(body, dict) else body
    message = error.get("message") if isinstance(error, dict) else None
    return str(message or body)[:500]


# ---------------------------------------------------------------------------------------------------------
# One round.


@dataclass
class AdapterReport:
    state: str  # Loaded, Failed, Loading
    path: str
    message: str | None = None
    fingerprint: str | None = None


@dataclass
class Syncer:
    """The sidecar's memory between rounds: what it loaded, and what failed (retried when files change)."""

    vllm: VLLM
    base_model: str | None = None
    max_lora_rank: int | None = None
    reports: dict[str, AdapterReport] = field(default_factory=dict)
    synced_once: bool = False

    def sync(self, desired: dict[str, str]) -> dict[str, AdapterReport]:
        served = self.vllm.adapters()
        for name in sorted(set(served) - set(desired)):
            self.vllm.unload(name)
            log.info("unloaded %s: no longer in the ModelServe", name)
        reports: dict[str, AdapterReport] = {}
        for name, path in sorted(desired.items()):
            reports[name] = self._one(name, path, served)
        self.reports = reports
        self.synced_once = True
        return reports

    def _one(self, name: str, path: str, served: dict[str, str]) -> AdapterReport:
        previous = self.reports.get(name)
        current = fingerprint(path)
        unchanged = previous is not None and previous.path == path and previous.fingerprint == current
        if unchanged and previous.state == FAILED:
            return previous  # tried already: again when its files change
        if unchanged and previous.state == LOADED and name in served:
            return previous
        problem = check_adapter(path, self.base_model, self.max_lora_rank)
        if problem is not None:
            if name in served:
                self.vllm.unload(name)
            log.warning("adapter %s not loaded: %s", name, problem)
            return AdapterReport(FAILED, path, problem, current)
        if name in served:
            # New files or a new path under the same name: a fresh load, so vLLM drops the old weights.
            self.vllm.unload(name)
        error = self.vllm.load(name, path)
        if error is not None:
            log.warning("adapter %s not loaded: %s", name, error)
            return AdapterReport(FAILED, path, error, current)
        log.info("loaded adapter %s from %s", name, path)
        return AdapterReport(LOADED, path, None, current)


def read_desired(config: Path) -> dict[str, str]:
    try:
        data = json.loads(config.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as error:  # a half-written file: try again on the next round
        raise ValueError(f"{config}: {error}") from error
    return {str(k): str(v) for k, v in data.items()}


def report_document(
    reports: dict[str, AdapterReport], now: str | None = None, claim: str | None = None
) -> dict[str, Any]:
    """The JSON this pod writes under its name in the report ConfigMap (the operator reads it)."""
    adapters = {}
    for name, report in sorted(reports.items()):
        entry = {
            k: v
            for k, v in asdict(report).items()
            if v is not None and k not in ("fingerprint", "claim_path")
        }
        if claim and (report.path + "/").startswith(claim.rstrip("/") + "/"):
            entry["claimPath"] = os.path.relpath(report.path, claim)
        adapters[name] = entry
    return {"adapters": adapters, "updated": now or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


# ---------------------------------------------------------------------------------------------------------
# The report ConfigMap, with the pod's own token.


class Reporter:
    """Patches `data.<pod>` of the report ConfigMap; a failure is logged and retried on the next change."""

    def __init__(self, configmap: str, namespace: str, pod: str, kubeconfig: str | None = None):
        from kubernetes import client, config

        configuration = client.Configuration()
        if kubeconfig or not (SERVICE_ACCOUNT_DIR / "token").exists():
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        else:
            config.load_incluster_config(client_configuration=configuration)
        self.api = client.CoreV1Api(client.ApiClient(configuration))
        self.configmap, self.namespace, self.pod = configmap, namespace, pod
        self.sent: str | None = None

    def send(self, document: dict[str, Any]) -> None:
        body = json.dumps({k: v for k, v in document.items() if k != "updated"}, sort_keys=True)
        if body == self.sent:
            return
        text = json.dumps(document, sort_keys=True)
        self.api.patch_namespaced_config_map(self.configmap, self.namespace, {"data": {self.pod: text}})
        self.sent = body

    def withdraw(self) -> None:
        """At shutdown: this pod serves nothing any more."""
        self.api.patch_namespaced_config_map(self.configmap, self.namespace, {"data": {self.pod: None}})


# ---------------------------------------------------------------------------------------------------------
# The process.


def _serve_ready(address: str, syncer: Syncer) -> ThreadingHTTPServer:
    host, _, port = address.rpartition(":")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/adapters":
                code, body = 200, json.dumps(report_document(syncer.reports))
            elif self.path == "/ready":
                ready = syncer.synced_once and syncer.vllm.healthy()
                code, body = (200, "ready") if ready else (503, "vLLM or its adapters are not ready")
            else:
                code, body = 404, "not found"
            self.send_response(code)
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: Any) -> None:  # probes every few seconds: not worth a line
            pass

    server = ThreadingHTTPServer((host or "0.0.0.0", int(port)), Handler)
    threading.Thread(target=server.serve_forever, name="ready", daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="kubetune adapter-sync", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="the mounted adapters.json")
    parser.add_argument("--vllm", required=True, help="vLLM's URL in the pod")
    parser.add_argument("--model", help="the base model's path, to check adapters' shapes against it")
    parser.add_argument("--claim", help="where the claim is mounted: reports name adapters relative to it")
    parser.add_argument("--max-lora-rank", type=int, help="vLLM's --max-lora-rank")
    parser.add_argument("--listen", default="0.0.0.0:8001", help="address of /ready and /adapters")
    parser.add_argument("--report-configmap", help="the ConfigMap this pod reports into (with POD_NAME)")
    parser.add_argument("--interval", type=float, default=3.0)
    parser.add_argument("--once", action="store_true", help="sync once and exit")
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)  # the resolver directory of 0.1: unused
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[adapter-sync] %(asctime)s %(message)s")

    syncer = Syncer(VLLM(args.vllm), base_model=args.model, max_lora_rank=args.max_lora_rank)
    reporter = None
    if args.report_configmap and os.environ.get("POD_NAME"):
        reporter = Reporter(
            args.report_configmap,
            os.environ.get("POD_NAMESPACE", "default"),
            os.environ["POD_NAME"],
            kubeconfig=os.environ.get("KUBECONFIG"),
        )
    server = None if args.once else _serve_ready(args.listen, syncer)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while True:
            try:
                if syncer.vllm.healthy():
                    reports = syncer.sync(read_desired(args.config))
                    if reporter is not None:
                        reporter.send(report_document(reports, claim=args.claim))
            except (OSError, ValueError) as error:
                log.warning("sync failed, will retry: %s", error)
            except Exception as error:  # the API server's refusals: the next round tries again
                log.warning("report failed, will retry: %s", error)
            if args.once or stop.wait(args.interval):
                break
    finally:
        if server is not None:
            server.shutdown()
        if reporter is not None and not args.once:
            try:
                reporter.withdraw()
            except Exception as error:
                log.info("could not withdraw the report: %s", error)
    return 0
