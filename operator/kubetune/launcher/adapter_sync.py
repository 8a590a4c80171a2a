"""`kubetune adapter-sync`: the ModelServe pods' sidecar that loads the adapters into vLLM and says which it
actually serves.

The operator writes the adapters a ModelServe should serve into a ConfigMap (`{name: path in the pod}`).
The sidecar watches that one ConfigMap through the API (`--configmap`, launcher/adapter_watch.py) and acts
on an edit at once; the same ConfigMap is mounted here, and its file (which the kubelet refreshes only about
a minute later) decides while the watch has not read it yet or cannot reach the API server. On each edit,
and every few seconds anyway, this sidecar compares the desired adapters with what vLLM has
(`GET /v1/models`) and:

- loads an adapter that vLLM does not have through `POST /v1/load_lora_adapter` (a restarted vLLM has none);
- reloads one whose path or files changed, or that vLLM serves from another path than the desired one
  (unload, then load under a new id: vLLM keeps the old weights under a reused name otherwise, its issue
  #54839);
- unloads one that was removed.

Only this sidecar may load and unload: it writes the pod's adapter token at start (`--token-file`, a
memory-backed emptyDir shared with vLLM) and sends it with each call; vLLM's middleware
(kubetune/lora_guard.py) refuses the calls without it. Every call to vLLM and to the API server has a
deadline; one adapter that the checks cannot even read is refused alone.

Why the load endpoint and not vLLM's `lora_filesystem_resolver`: the resolver serves an adapter only when
its `adapter_config.json` names, character for character, the `--model` argument vLLM was started with;
an adapter trained anywhere else (by hand from `/data/models/...`) would answer a bare 404. The load
endpoint has no such check, and answers each load with an error a person can read. The user's files on
the claim are never changed. Before asking vLLM, the sidecar checks what it can itself (the rank against
`--max-lora-rank`, `modules_to_save`, the tensors' shapes against the base model), so that the message
names the problem.

What vLLM serves is reported per pod into the ModelServe's report ConfigMap (key: the pod's name), with
the pod's own token, whose Role allows `get` and `patch` on that one ConfigMap (and get, list and watch on
the adapters ConfigMap, nothing else); the operator, which watches the report ConfigMaps, turns the reports
into `status.adapters`. Each pod writes its report again every few minutes, and removes the entries of
other pods that it has seen unchanged for much longer (pods killed without SIGTERM).

`GET /ready` on `--listen` answers 200 once vLLM is healthy and every adapter was tried once: the vLLM
container's readiness probe, so a new pod takes no traffic for an adapter it has not loaded yet.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import signal
import struct
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kubetune import lora_guard, rfc3339
from kubetune.launcher.adapter_watch import AdapterWatch, parse_adapters

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


# The safetensors format's own bound on its header: a larger length is a broken (or hostile) file.
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


def safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """The tensors' shapes from a safetensors file's header, without reading the weights.

    ValueError when the header is not one: too short, too long, not a JSON object, a tensor without a shape.
    """
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ValueError("it is shorter than a safetensors header")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_SAFETENSORS_HEADER:
            raise ValueError(f"its header length {length} is above the format's limit")
        header = json.loads(f.read(length))
    if not isinstance(header, dict):
        raise ValueError("its header is not a JSON object")
    shapes = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        shape = meta.get("shape") if isinstance(meta, dict) else None
        if not isinstance(shape, list) or not all(isinstance(d, int) for d in shape):
            raise ValueError(f"tensor {name} has no shape in its header")
        shapes[name] = shape
    return shapes


# (in_features, out_features) of the modules a LoRA usually targets in Llama-like models (Qwen, Llama,
# Mistral, ...), from the base model's config.json.
def _module_shapes(config: dict[str, Any]) -> dict[str, tuple[int, int]]:
    hidden = config.get("hidden_size")
    heads = config.get("num_attention_heads")
    if not isinstance(hidden, int) or not isinstance(heads, int) or heads <= 0:
        return {}
    head_dim = _int_or(config.get("head_dim"), hidden // heads)
    kv = _int_or(config.get("num_key_value_heads"), heads) * head_dim
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


def _int_or(value: Any, default: int) -> int:
    return value if isinstance(value, int) and value > 0 else default


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
    if not isinstance(config, dict):
        return f"{path}/adapter_config.json is not a JSON object (it holds {type(config).__name__})"
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
        saved = config["modules_to_save"]
        saved = ", ".join(map(str, saved)) if isinstance(saved, list) else str(saved)
        return (
            f"it saves whole modules ({saved}: modules_to_save), which vLLM "
            "does not load: retrain without them (LLaMA-Factory: no additional_target) or merge the adapter "
            "and serve the merged model"
        )
    if base_model:
        return _shape_mismatch(root, Path(base_model), config)
    return None


def _shape_mismatch(root: Path, base_model: Path, adapter_config: dict[str, Any]) -> str | None:
    try:
        base = json.loads((base_model / "config.json").read_text())
    except (OSError, ValueError):
        return None  # nothing to compare with: vLLM will say
    weights = root / "adapter_model.safetensors"
    try:
        shapes = safetensors_shapes(weights)
    except FileNotFoundError:
        return None  # a .bin adapter: vLLM will say
    except (OSError, ValueError) as error:
        return f"{weights} cannot be read as safetensors: {error}"
    if not isinstance(base, dict):
        return None
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


# Every call has a deadline: a vLLM that accepts a connection and never answers must not hold the sidecar
# (its adapters, its report, its /ready) for good. A load reads the weights: it may take a while.
PROBE_TIMEOUT = 3.0  # /health: the kubelet gives the readiness probe 5 s in all
LIST_TIMEOUT = 30.0
LOAD_TIMEOUT = 120.0


class VLLM:
    """vLLM's API in the pod. The management calls carry the pod's adapter token (TOKEN_HEADER): vLLM's
    middleware (kubetune/lora_guard.py) refuses them from anyone else."""

    def __init__(self, url: str, token: str | None = None, timeout: float = LOAD_TIMEOUT):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _call(
        self, method: str, path: str, body: dict | None = None, timeout: float | None = None
    ) -> tuple[int, str]:
        headers = {"Content-Type": "application/json"}
        if self.token and body is not None:
            headers[lora_guard.TOKEN_HEADER] = self.token
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode() if body is not None else None,
            headers=headers,
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")

    def healthy(self) -> bool:
        try:
            return self._call("GET", "/health", timeout=PROBE_TIMEOUT)[0] == 200
        except OSError:
            return False

    def adapters(self) -> dict[str, str]:
        """{name: path} of the LoRA adapters vLLM has loaded (the model list's cards with a parent; a LoRA's
        `root` is the path it was loaded from)."""
        code, text = self._call("GET", "/v1/models", timeout=LIST_TIMEOUT)
        if code != 200:
            raise OSError(f"GET /v1/models answered {code}: {text[:200]}")
        return {m["id"]: m.get("root", "") for m in json.loads(text)["data"] if m.get("parent")}

    def load(self, name: str, path: str) -> str | None:
        """Loads the adapter; None on success, else vLLM's error message."""
        code, text = self._call("POST", "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})
        return None if code == 200 else f"vLLM refused to load it ({code}): {_error_message(text)}"

    def unload(self, name: str) -> None:
        code, text = self._call("POST", "/v1/unload_lora_adapter", {"lora_name": name}, timeout=LIST_TIMEOUT)
        if code not in (200, 404):
            log.warning("unload of %s answered %s: %s", name, code, text[:200])


def ensure_token(path: Path) -> str:
    """The pod's adapter token: the one this pod's sidecar wrote before a restart, else a new one.

    It lives in a memory-backed emptyDir that only this container and vLLM's mount; written whole (rename),
    so vLLM's middleware never reads half a token.
    """
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    if token:
        return token
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(token)
    temporary.chmod(0o644)  # vLLM's container may run as another uid; no other container mounts it
    temporary.replace(path)
    return token


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
        """One round. vLLM's own failures (down, hung: OSError) end the round, to be tried again whole; an
        adapter the checks choke on is refused alone and the others go on."""
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
            if name in served:  # loaded behind the sidecar's back: what is served must be what it says
                self.vllm.unload(name)
            return previous  # tried already: again when its files change
        if unchanged and previous.state == LOADED and same_path(served.get(name), path):
            return previous
        try:
            problem = check_adapter(path, self.base_model, self.max_lora_rank)
        except Exception as error:  # a file no check foresaw: this adapter is refused, the others go on
            log.exception("adapter %s could not be checked", name)
            problem = f"{path} could not be checked: {type(error).__name__}: {error}"
        if problem is not None:
            if name in served:
                self.vllm.unload(name)
            log.warning("adapter %s not loaded: %s", name, problem)
            return AdapterReport(FAILED, path, problem, current)
        if name in served:
            # New files, a new path under the same name, or another path loaded under this name by someone
            # else: a fresh load, so vLLM drops the old weights.
            if previous is not None and previous.path == path and not same_path(served[name], path):
                log.warning("%s was served from %s, not %s: loading it again", name, served[name], path)
            self.vllm.unload(name)
        error = self.vllm.load(name, path)
        if error is not None and name in self.vllm.adapters():
            # Someone loaded this name between the listing and this load (vLLM refuses a second load of a
            # name): a race, not a verdict on these files. No fingerprint, so that the next round checks
            # what is served and loads it again from this path.
            log.warning("adapter %s was loaded by another client meanwhile: loading it again", name)
            return AdapterReport(LOADING, path, "loaded by another client meanwhile: loading it again")
        if error is not None:
            log.warning("adapter %s not loaded: %s", name, error)
            return AdapterReport(FAILED, path, error, current)
        log.info("loaded adapter %s from %s", name, path)
        return AdapterReport(LOADED, path, None, current)


def same_path(served: str | None, wanted: str) -> bool:
    """Whether vLLM's `root` for an adapter is the path it should be loaded from (vLLM keeps it as given)."""
    return served is not None and os.path.normpath(served) == os.path.normpath(wanted)


def read_desired(config: Path) -> dict[str, str]:
    try:
        return parse_adapters(config.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as error:  # a half-written file: try again on the next round
        raise ValueError(f"{config}: {error}") from error


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
    return {"adapters": adapters, "updated": now or rfc3339.now()}


# ---------------------------------------------------------------------------------------------------------
# The report ConfigMap, with the pod's own token.


# A call to the API server has a deadline: a hung connection must not stop the adapters' loading.
REPORT_TIMEOUT = 10.0
# Each pod writes its report again at least this often, changed or not, so that a report that stops changing
# means a pod that is gone (killed without SIGTERM: the node lost, the container OOM-killed at shutdown).
HEARTBEAT_SECONDS = 300.0
# Another pod's report seen unchanged this long by this pod's own clock is removed: six heartbeats missed.
# Measured with this pod's clock alone (never against the writer's timestamp): clocks of two nodes differ.
STALE_AFTER_SECONDS = 1800.0


def stale_reports(
    data: dict[str, str], seen: dict[str, tuple[str, float]], me: str, now: float, stale_after: float
) -> tuple[dict[str, tuple[str, float]], list[str]]:
    """The report ConfigMap's entries other than `me`, each with the time (this pod's clock) since which it
    is unchanged; and the pods whose entry has not changed for longer than `stale_after`."""
    observed: dict[str, tuple[str, float]] = {}
    for pod, text in data.items():
        if pod == me:
            continue
        before, since = seen.get(pod, (None, now))
        observed[pod] = (text, since if before == text else now)
    stale = sorted(pod for pod, (_, since) in observed.items() if now - since > stale_after)
    return observed, stale


def core_api(kubeconfig: str | None = None) -> Any:
    """The API with the pod's own token (a kubeconfig where a test plays the pod)."""
    from kubernetes import client, config

    configuration = client.Configuration()
    if kubeconfig or not (SERVICE_ACCOUNT_DIR / "token").exists():
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        config.load_incluster_config(client_configuration=configuration)
    configuration.retries = 0  # the next round tries again: a retry would only stretch the deadline
    return client.CoreV1Api(client.ApiClient(configuration))


class Reporter:
    """Patches `data.<pod>` of the report ConfigMap; a failure is logged and retried on the next round.

    It also removes the entries of pods that are gone (stale_reports): this token may read and patch this
    one ConfigMap and nothing else, so the rule is the reports' own heartbeat, not a list of the pods.
    """

    def __init__(
        self,
        configmap: str,
        namespace: str,
        pod: str,
        kubeconfig: str | None = None,
        api: Any = None,
        clock: Any = time.monotonic,
        heartbeat: float = HEARTBEAT_SECONDS,
        stale_after: float = STALE_AFTER_SECONDS,
    ):
        if api is None:
            api = core_api(kubeconfig)
        self.api = api
        self.configmap, self.namespace, self.pod = configmap, namespace, pod
        self.clock, self.heartbeat, self.stale_after = clock, heartbeat, stale_after
        self.sent: str | None = None
        self.sent_at = 0.0
        self.swept_at: float | None = None
        self.seen: dict[str, tuple[str, float]] = {}

    def _patch(self, body: dict[str, Any]) -> None:
        self.api.patch_namespaced_config_map(
            self.configmap, self.namespace, body, _request_timeout=REPORT_TIMEOUT
        )

    def send(self, document: dict[str, Any]) -> None:
        body = json.dumps({k: v for k, v in document.items() if k != "updated"}, sort_keys=True)
        now = self.clock()
        if body != self.sent or now - self.sent_at >= self.heartbeat:
            self._patch({"data": {self.pod: json.dumps(document, sort_keys=True)}})
            self.sent, self.sent_at = body, now
        if self.swept_at is None or now - self.swept_at >= self.heartbeat:
            self.sweep(now)

    def sweep(self, now: float) -> list[str]:
        """Removes the entries of pods gone; the pods removed (none when the ConfigMap changed meanwhile)."""
        self.swept_at = now  # a refusal is tried again at the next heartbeat, not every round
        current = self.api.read_namespaced_config_map(
            self.configmap, self.namespace, _request_timeout=REPORT_TIMEOUT
        )
        self.seen, stale = stale_reports(current.data or {}, self.seen, self.pod, now, self.stale_after)
        if not stale:
            return []
        # Conditional on what was read: a pod that writes meanwhile is never removed (409: next time).
        version = current.metadata.resource_version
        try:
            self._patch({"metadata": {"resourceVersion": version}, "data": dict.fromkeys(stale)})
        except Exception as error:
            if getattr(error, "status", None) != 409:
                raise
            return []
        for pod in stale:
            self.seen.pop(pod, None)
        log.info("removed the reports of pods gone: %s", ", ".join(stale))
        return stale

    def withdraw(self) -> None:
        """At shutdown: this pod serves nothing any more."""
        self._patch({"data": {self.pod: None}})


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
    parser.add_argument(
        "--configmap",
        help="the adapters ConfigMap (in POD_NAMESPACE), watched through the API: an edit is acted on at "
        "once, not when the kubelet refreshes the mounted file",
    )
    parser.add_argument("--vllm", required=True, help="vLLM's URL in the pod")
    parser.add_argument("--model", help="the base model's path, to check adapters' shapes against it")
    parser.add_argument("--claim", help="where the claim is mounted: reports name adapters relative to it")
    parser.add_argument("--max-lora-rank", type=int, help="vLLM's --max-lora-rank")
    parser.add_argument("--listen", default="0.0.0.0:8001", help="address of /ready and /adapters")
    parser.add_argument("--report-configmap", help="the ConfigMap this pod reports into (with POD_NAME)")
    parser.add_argument(
        "--token-file",
        type=Path,
        help="the pod's adapter token (written here if absent): vLLM's middleware asks it of load and unload",
    )
    parser.add_argument("--interval", type=float, default=3.0)
    parser.add_argument("--once", action="store_true", help="sync once and exit")
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)  # the resolver directory of 0.1: unused
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[adapter-sync] %(asctime)s %(message)s")

    token = ensure_token(args.token_file) if args.token_file else None
    syncer = Syncer(VLLM(args.vllm, token=token), base_model=args.model, max_lora_rank=args.max_lora_rank)
    namespace, kubeconfig = os.environ.get("POD_NAMESPACE", "default"), os.environ.get("KUBECONFIG")
    api = core_api(kubeconfig) if args.configmap or args.report_configmap else None
    reporter = None
    if args.report_configmap and os.environ.get("POD_NAME"):
        reporter = Reporter(args.report_configmap, namespace, os.environ["POD_NAME"], api=api)
    server = None if args.once else _serve_ready(args.listen, syncer)
    stop, wake = threading.Event(), threading.Event()
    watcher = None
    if args.configmap and not args.once:
        watcher = AdapterWatch(api, args.configmap, namespace, args.config.name, wake)
        watcher.start(stop)

    def terminate(*_: Any) -> None:
        stop.set()
        wake.set()

    signal.signal(signal.SIGTERM, terminate)
    try:
        while True:
            wake.clear()
            try:
                if syncer.vllm.healthy():
                    from_api = watcher.current() if watcher is not None else None
                    desired = from_api if from_api is not None else read_desired(args.config)
                    reports = syncer.sync(desired)
                    if reporter is not None:
                        reporter.send(report_document(reports, claim=args.claim))
            except (OSError, ValueError) as error:
                log.warning("sync failed, will retry: %s", error)
            except Exception as error:  # the API server's refusals: the next round tries again
                log.warning("report failed, will retry: %s", error)
            # The next round: at once when the watch saw the adapters change, else after the interval.
            wake.wait(args.interval)
            if args.once or stop.is_set():
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
