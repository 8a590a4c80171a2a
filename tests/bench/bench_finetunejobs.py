"""How long N FineTuneJobs take to start: the operator, against a floor that does the same without it.

    python -m tests.bench.bench_finetunejobs --count 200 --count 1000 [--pairs K] [--json FILE]

For each N, on one local control plane (tests/cluster):

floor     the children the operator would create (rendered by kubetune.render from N FineTuneJob bodies),
          server-side applied straight from a 16-thread pool, with no operator and no FineTuneJob: the
          time until each Job exists and until its pod is Running.
operator  `kubetune run` in a subprocess, and N FineTuneJobs created at once from a 16-thread pool: the
          time until each Job exists and until the FineTuneJob's status.phase is Running (and, to tell
          the operator's own lag apart, until its pod is Running), plus the operator's peak RSS, its
          reconcile metrics and the API server's request counts.

In both, the time from a Job to its Running pod is split into the Job controller's part (Job to pod), the
scheduler's (pod to bound) and the node's (bound to Running): `pod_stages_s` in the JSON.

With --pairs K, each N runs the floor and the operator K times, alternately. One run of a pair is not
enough to tell a change apart on a small machine: the same code at 1000 has given p50 x1.12 to x1.39, as the
machine's speed moved the floor from 39 to 53 s. Each pair is a ratio of its own (both phases on the same
machine within minutes); the entry reports the pair with the median p50 ratio as `floor`, `operator` and
`ratio`, and every pair's ratios and walls under `pairs`.

Every time is measured from one t0 (the moment the batch starts), by watches in this process. Pods are
held Running by the `test.kubetune.io/hold` annotation (spec.podMetadata); each asks for one GPU on fake
nodes large enough for the largest N. Between phases the namespaces are deleted and waited for.

The cluster: KUBETUNE_CLUSTER_DIR, by default ~/.cache/kubetune/bench-cluster (not the tests' cluster, so
that a bench never disturbs a test run). A running one is reused; one the bench starts is stopped at the
end unless --keep-cluster. This is a benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.watch.watch import iter_resp_lines
from rich.console import Console
from rich.table import Table

from kubetune.api import label_names
from kubetune.api.defaults import TrainerSettings
from kubetune.api.validation import finetunejob_spec
from kubetune.kube import KINDS, Kube
from kubetune.render import finetunejob as render

# localcluster reads KUBETUNE_CLUSTER_DIR once, when it is imported: the bench's own cluster by default.
os.environ.setdefault(
    "KUBETUNE_CLUSTER_DIR",
    str(Path(os.environ.get("KUBETUNE_CACHE", Path.home() / ".cache" / "kubetune")) / "bench-cluster"),
)

from tests.cluster import localcluster
from tests.operator_fixtures import REPO, OperatorProcess
from tests.specs import finetunejob, with_pod_annotations

BENCH_LABEL = "bench.kubetune.io/run"
HOLD_ANNOTATION = "test.kubetune.io/hold"
FLOOR_OWNER = "bench-floor-owner"
FTJ_PATH = KINDS["FineTuneJob"].path(None)

console = Console(stderr=True)


def log(message: str) -> None:
    console.print(f"{time.strftime('%H:%M:%S')} bench: {message}", markup=False, highlight=False)


# --- the cluster -----------------------------------------------------------------------------------


@dataclass
class BenchNodePool(localcluster.NodePool):
    """Fake GPU nodes that take more than the default 110 pods each."""

    pods: int = 110

    def node(self, index: int) -> dict:
        manifest = super().node(index)
        for key in ("capacity", "allocatable"):
            manifest["status"][key] = {**manifest["status"][key], "pods": str(self.pods)}
        return manifest


def ensure_cluster(pool: BenchNodePool) -> tuple[localcluster.ClusterInfo, bool]:
    """The running cluster with the bench's nodes added, or a new one; and whether the bench started it."""
    info = localcluster.running()
    if info is None:
        log(f"starting a local control plane in {localcluster.STATE}")
        return localcluster.up(pool), True
    log(f"reusing the local control plane in {localcluster.STATE}")
    localcluster.add_nodes(info, pool)
    # Applying an existing Node leaves its status alone: set the capacity this run wants.
    for manifest in pool.manifests():
        status = {key: manifest["status"][key] for key in ("capacity", "allocatable")}
        localcluster.kubectl(
            info, "patch", "node", manifest["metadata"]["name"], "--subresource=status",
            "--type=merge", "-p", json.dumps({"status": status}),
        )  # fmt: skip
    return info, False


def install_crds(info: localcluster.ClusterInfo, api: client.ApiClient) -> None:
    localcluster.kubectl(info, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    extensions = client.ApiextensionsV1Api(api)

    def established() -> bool:
        crds = [
            c for c in extensions.list_custom_resource_definition().items if c.spec.group == "kubetune.io"
        ]
        return bool(crds) and all(
            any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])
            for crd in crds
        )

    localcluster.wait_for("the kubetune.io CRDs to be Established", established, timeout=60)
    localcluster.wait_for(
        "the kubetune.io API in discovery",
        lambda: "finetunejobs" in localcluster.kubectl(info, "api-resources", "--api-group=kubetune.io"),
        timeout=60,
    )


def new_client(kubeconfig: str, pool_size: int | None = None) -> client.ApiClient:
    configuration = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    if pool_size:
        configuration.connection_pool_maxsize = pool_size
    return client.ApiClient(configuration)


# --- raw HTTP: watches and /metrics, without the client's model classes ----------------------------


def request(
    api: client.ApiClient,
    path: str,
    query: Iterable[tuple[str, str]] = (),
    timeout: Any = None,
    method: str = "GET",
    body: Any = None,
) -> Any:
    method_, url, headers, body_, post = api.param_serialize(
        method=method,
        resource_path=path,
        query_params=list(query),
        header_params={"Accept": "application/json, text/plain", "Content-Type": "application/json"},
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api.call_api(
        method_, url, header_params=headers, body=body_, post_params=post, _request_timeout=timeout
    )
    if not 200 <= response.status < 300:
        raise ApiException(status=response.status, reason=f"{method} {path}: {response.read()[:300]!r}")
    return response


def get_text(api: client.ApiClient, path: str, query: Iterable[tuple[str, str]] = ()) -> str:
    return request(api, path, query, timeout=60).read().decode()


class Watch(threading.Thread):
    """Lists a collection, then watches it; `on_object(obj, seen_at)` for every listed or changed object."""

    def __init__(
        self,
        api: client.ApiClient,
        path: str,
        on_object: Callable[[dict, float], None],
        label_selector: str | None = None,
    ):
        super().__init__(daemon=True, name=f"watch {path}")
        self.api, self.path, self.on_object = api, path, on_object
        self.selector = [("labelSelector", label_selector)] if label_selector else []
        self.ready = threading.Event()
        self.stopped = threading.Event()
        self._response: Any = None

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                listing = json.loads(request(self.api, self.path, self.selector, timeout=120).read())
                seen_at = time.monotonic()
                for item in listing.get("items", []):
                    self.on_object(item, seen_at)
                self.ready.set()
                self._watch(listing["metadata"]["resourceVersion"])
            except Exception as error:  # a dropped or expired watch: list again
                if self.stopped.is_set():
                    return
                log(f"{self.name}: {error!r}; listing again")
                time.sleep(0.5)

    def _watch(self, resource_version: str) -> None:
        while not self.stopped.is_set():
            query = [
                *self.selector,
                ("watch", "true"),
                ("resourceVersion", resource_version),
                ("allowWatchBookmarks", "true"),
                ("timeoutSeconds", "300"),
            ]
            self._response = request(self.api, self.path, query, timeout=(10, 360)).response
            try:
                for line in iter_resp_lines(self._response):
                    if not line:
                        continue
                    event = json.loads(line)
                    seen_at = time.monotonic()
                    obj = event["object"]
                    if event["type"] == "ERROR":
                        raise RuntimeError(f"watch error: {obj.get('message')}")
                    resource_version = obj["metadata"]["resourceVersion"]
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self.on_object(obj, seen_at)
            finally:
                self._response.release_conn()

    def stop(self) -> None:
        self.stopped.set()
        if self._response is not None:
            for close in ("shutdown", "close"):
                with contextlib.suppress(Exception):
                    getattr(self._response, close)()


class Recorder:
    """When each expected FineTuneJob first had a Job, a Running pod, and (operator) status.phase Running."""

    def __init__(self, api: client.ApiClient, expected: set[tuple[str, str]], watch_finetunejobs: bool):
        self.expected = expected
        self.job: dict[tuple[str, str], float] = {}
        self.pod_created: dict[tuple[str, str], float] = {}
        self.pod_bound: dict[tuple[str, str], float] = {}
        self.pod_running: dict[tuple[str, str], float] = {}
        self.ftj_running: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self.watches = [
            Watch(api, KINDS["Job"].path(None), self._on_job, label_names.FINETUNEJOB),
            Watch(api, KINDS["Pod"].path(None), self._on_pod, label_names.FINETUNEJOB),
        ]
        if watch_finetunejobs:
            self.watches.append(Watch(api, FTJ_PATH, self._on_finetunejob))

    def _record(self, into: dict, key: tuple[str, str], seen_at: float) -> None:
        if key in self.expected:
            with self._lock:
                into.setdefault(key, seen_at)

    @staticmethod
    def _owner(obj: dict) -> tuple[str, str]:
        meta = obj["metadata"]
        return meta.get("namespace", ""), (meta.get("labels") or {}).get(label_names.FINETUNEJOB, "")

    def _on_job(self, obj: dict, seen_at: float) -> None:
        self._record(self.job, self._owner(obj), seen_at)

    def _on_pod(self, obj: dict, seen_at: float) -> None:
        if obj["metadata"].get("deletionTimestamp"):
            return
        owner = self._owner(obj)
        self._record(self.pod_created, owner, seen_at)
        if (obj.get("spec") or {}).get("nodeName"):
            self._record(self.pod_bound, owner, seen_at)
        if (obj.get("status") or {}).get("phase") == "Running":
            self._record(self.pod_running, owner, seen_at)

    def _on_finetunejob(self, obj: dict, seen_at: float) -> None:
        if (obj.get("status") or {}).get("phase") == "Running":
            meta = obj["metadata"]
            self._record(self.ftj_running, (meta["namespace"], meta["name"]), seen_at)

    def start(self) -> None:
        for watch in self.watches:
            watch.start()
        for watch in self.watches:
            if not watch.ready.wait(60):
                raise TimeoutError(f"{watch.name} did not start")

    def stop(self) -> None:
        for watch in self.watches:
            watch.stop()

    def snapshot(self) -> dict[str, dict[tuple[str, str], float]]:
        with self._lock:
            return {
                "job": dict(self.job),
                "pod_created": dict(self.pod_created),
                "pod_bound": dict(self.pod_bound),
                "pod_running": dict(self.pod_running),
                "ftj_running": dict(self.ftj_running),
            }

    def wait(self, running: str, what: str, t0: float, timeout: float) -> bool:
        """Until every expected FineTuneJob has a Job and is in `running` (a name); False on timeout."""
        deadline = t0 + timeout
        last_report = time.monotonic()
        while True:
            with self._lock:
                jobs, done = len(self.job), len(getattr(self, running))
            if done >= len(self.expected) and jobs >= len(self.expected):
                return True
            now = time.monotonic()
            if now >= deadline:
                return False
            if now - last_report >= 10:
                log(f"  {now - t0:6.1f}s: {jobs} Jobs, {done} {what} of {len(self.expected)}")
                last_report = now
            time.sleep(0.2)


# --- what is created -------------------------------------------------------------------------------


def bench_body(name: str, namespace: str) -> dict[str, Any]:
    """A valid FineTuneJob on one node with one GPU, its pod held Running."""
    body = with_pod_annotations(
        finetunejob(name, resources={"nodes": 1, "gpusPerNode": 1}), **{HOLD_ANNOTATION: "true"}
    )
    body["metadata"]["namespace"] = namespace
    return body


def job_names(count: int, namespaces: list[str]) -> list[tuple[str, str]]:
    return [(namespaces[i % len(namespaces)], f"ftj-{i:05d}") for i in range(count)]


def floor_children(namespace: str, name: str, owner: dict[str, Any] | None) -> list[dict[str, Any]]:
    """What the operator's reconcile would apply for a new FineTuneJob: validate, render, re-own."""
    body = bench_body(name, namespace)
    spec, problems = finetunejob_spec(body["spec"])
    if spec is None or problems:
        raise ValueError(f"the bench's FineTuneJob is not valid: {problems}")
    info = spec.dataset.info or {}
    target = render.FineTuneJobTarget(
        name=name,
        namespace=namespace,
        uid=owner["uid"] if owner else "00000000-0000-0000-0000-000000000000",
        spec=spec,
        dataset_info={n: info[n] for n in spec.dataset.names if n in info},
        settings=TrainerSettings(),
    )
    children = render.children(target)
    for child in children:
        if owner is None:
            child["metadata"].pop("ownerReferences", None)
        else:
            child["metadata"]["ownerReferences"] = [owner]
    return children


# --- namespaces, claims, cleanup -------------------------------------------------------------------


def prepare_namespaces(core: client.CoreV1Api, names: list[str], run_id: str, claim_root: Path) -> None:
    for namespace in names:
        core.create_namespace({"metadata": {"name": namespace, "labels": {BENCH_LABEL: run_id}}})
    for namespace in names:
        localcluster.wait_for(
            f"the default ServiceAccount in {namespace}",
            lambda ns=namespace: (
                core.list_namespaced_service_account(ns, field_selector="metadata.name=default").items
            ),
            timeout=60,
        )
        # One ReadWriteMany claim named `shared` per namespace, as tests/integration's `claim` fixture.
        root = claim_root / namespace
        root.mkdir(parents=True, exist_ok=True)
        core.create_persistent_volume(
            {
                "metadata": {"name": f"{namespace}-shared", "labels": {BENCH_LABEL: run_id}},
                "spec": {
                    "capacity": {"storage": "100Gi"},
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "manual",
                    "hostPath": {"path": str(root)},
                    "claimRef": {"namespace": namespace, "name": "shared"},
                },
            }
        )
        core.create_namespaced_persistent_volume_claim(
            namespace,
            {
                "metadata": {"name": "shared"},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "manual",
                    "resources": {"requests": {"storage": "100Gi"}},
                },
            },
        )
    for namespace in names:
        localcluster.wait_for(
            f"the claim in {namespace} to bind",
            lambda ns=namespace: (
                core.read_namespaced_persistent_volume_claim("shared", ns).status.phase == "Bound"
            ),
            timeout=60,
        )


COLLECTIONS = [
    ("/apis/kubetune.io/v1alpha1", "finetunejobs"),
    ("/apis/batch/v1", "jobs"),
    ("/api/v1", "pods"),
    ("/api/v1", "configmaps"),
    ("/api/v1", "services"),
    ("/api/v1", "serviceaccounts"),
    ("/api/v1", "endpoints"),
    ("/api/v1", "events"),
    ("/apis/discovery.k8s.io/v1", "endpointslices"),
    ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
]


def cleanup(core: client.CoreV1Api, selector: str, timeout: float = 900) -> float:
    """Deletes the bench's namespaces and volumes (by label) and waits until they are gone."""
    started = time.monotonic()
    namespaces = [n.metadata.name for n in core.list_namespace(label_selector=selector).items]
    # The namespace controller empties a namespace one kind after the other, and the API server deletes a
    # collection one object at a time: thousands of children take minutes. Every kind at once is faster.
    collections = [f"{base}/namespaces/{ns}/{plural}" for ns in namespaces for base, plural in COLLECTIONS]
    with ThreadPoolExecutor(len(collections) or 1, thread_name_prefix="cleanup") as pool:
        for path in collections:
            pool.submit(
                request,
                core.api_client,
                path,
                timeout=timeout,
                method="DELETE",
                body={"propagationPolicy": "Background"},
            )
    for namespace in namespaces:
        with contextlib.suppress(ApiException):
            core.delete_namespace(namespace, propagation_policy="Background")
    if namespaces:
        log(f"deleting namespace(s) {', '.join(namespaces)}")
        localcluster.wait_for(
            "the bench's namespaces to be gone",
            lambda: not core.list_namespace(label_selector=selector).items,
            timeout=timeout,
            interval=1,
        )
    for volume in core.list_persistent_volume(label_selector=selector).items:
        with contextlib.suppress(ApiException):
            core.delete_persistent_volume(volume.metadata.name)
    localcluster.wait_for(
        "the bench's volumes to be gone",
        lambda: not core.list_persistent_volume(label_selector=selector).items,
        timeout=120,
        interval=0.5,
    )
    return time.monotonic() - started


# --- the operator ----------------------------------------------------------------------------------


class BenchOperator(OperatorProcess):
    """`kubetune run` as the integration tests start it, but with the production resync interval."""

    def __init__(self, cluster: localcluster.ClusterInfo, log_path: Path, resync_seconds: float):
        super().__init__(cluster, log_path)
        self.resync_seconds = resync_seconds

    def start(self) -> None:
        env = {**os.environ, "KUBECONFIG": self.cluster.kubeconfig}
        env.pop("KUBETUNE_RESYNC_SECONDS", None)
        out = open(self.log_path, "ab")  # noqa: SIM115 - the process owns it until it exits
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "kubetune.cli", "run",
                "--liveness", f"http://127.0.0.1:{self.liveness_port}/healthz",
                "--metrics-port", str(self.metrics_port),
                "--resync-seconds", str(self.resync_seconds),
            ],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip
        localcluster.wait_for("the operator's liveness endpoint", self.alive, timeout=60, logs=self.log_path)


class RssSampler(threading.Thread):
    """The peak of a process's VmRSS, sampled every 0.2 s, and its VmHWM (the kernel's own peak)."""

    def __init__(self, pid: int, interval: float = 0.2):
        super().__init__(daemon=True, name="rss")
        self.pid, self.interval = pid, interval
        self.peak_kib = 0
        self.hwm_kib = 0
        self.stopped = threading.Event()

    def _read(self) -> dict[str, int]:
        values = {}
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(rest.split()[0])
        return values

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        values = self._read()
        self.peak_kib = max(self.peak_kib, values.get("VmRSS", 0))
        self.hwm_kib = max(self.hwm_kib, values.get("VmHWM", 0))

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far."""
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return 0.0

    def stop(self) -> None:
        self.sample()
        self.stopped.set()


# --- Prometheus text -------------------------------------------------------------------------------

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match and match.group(1) == name:
            out.append((dict(LABEL.findall(match.group(2) or "")), float(match.group(3))))
    return out


LONG_RUNNING_VERBS = {"WATCH", "CONNECT"}


def _request_key(labels: dict[str, str]) -> str:
    resource = labels.get("resource", "")
    if labels.get("subresource"):
        resource += "/" + labels["subresource"]
    return f"{labels.get('verb')} {resource}"


def api_requests(text: str) -> dict[str, Counter]:
    """The API server's request counts and the seconds it spent on them, by verb and resource."""
    counts: Counter = Counter()
    seconds: Counter = Counter()
    for labels, value in samples(text, "apiserver_request_total"):
        counts[_request_key(labels)] += value
    for labels, value in samples(text, "apiserver_request_duration_seconds_sum"):
        if labels.get("verb") not in LONG_RUNNING_VERBS:  # a watch's duration is how long it stayed open
            seconds[_request_key(labels)] += value
    return {"count": counts, "seconds": seconds}


def request_delta(before: dict[str, Counter], after: dict[str, Counter]) -> dict[str, Any]:
    counts = after["count"] - before["count"]
    seconds = after["seconds"] - before["seconds"]
    return {
        "total": int(sum(counts.values())),
        "server_seconds_total": round(sum(seconds.values()), 2),
        # verb resource -> [count, mean server-side latency in ms]
        "by_request": {
            key: [int(n), round(1000 * seconds[key] / n, 1) if key in seconds else None]
            for key, n in counts.most_common(25)
        },
    }


def reconcile_metrics(text: str) -> dict[str, Any]:
    """kubetune_reconcile_duration_seconds and kubetune_reconciles_total for FineTuneJobs."""
    kind = {"kind": "FineTuneJob"}
    count = sum(
        v
        for lab, v in samples(text, "kubetune_reconcile_duration_seconds_count")
        if lab.items() >= kind.items()
    )
    total = sum(
        v
        for lab, v in samples(text, "kubetune_reconcile_duration_seconds_sum")
        if lab.items() >= kind.items()
    )
    buckets = sorted(
        (float(lab["le"]), v)
        for lab, v in samples(text, "kubetune_reconcile_duration_seconds_bucket")
        if lab.get("kind") == "FineTuneJob"
    )

    def quantile(q: float) -> float | None:
        for bound, cumulative in buckets:
            if count and cumulative >= q * count:
                return bound
        return None

    results = {
        lab.get("result", ""): v
        for lab, v in samples(text, "kubetune_reconciles_total")
        if lab.get("kind") == "FineTuneJob"
    }
    # What the reconciles asked the API server, by verb and resource (kubetune_api_requests_total).
    requests = {
        f"{lab.get('verb')} {lab.get('resource')}": int(v)
        for lab, v in samples(text, "kubetune_api_requests_total")
    }
    # What queued each FineTuneJob reconcile: a watched kind's event, the resync, a retry, a change while
    # held (kubetune_reconcile_causes_total).
    causes = {
        lab.get("cause", ""): int(v)
        for lab, v in samples(text, "kubetune_reconcile_causes_total")
        if lab.get("kind") == "FineTuneJob"
    }
    watches = {
        f"{lab.get('verb')} {lab.get('kind')}": int(v)
        for lab, v in samples(text, "kubetune_watch_requests_total")
    }
    return {
        "count": int(count),
        "causes": dict(sorted(causes.items(), key=lambda kv: -kv[1])),
        "watch_requests": dict(sorted(watches.items(), key=lambda kv: -kv[1])),
        "operator_requests": dict(sorted(requests.items(), key=lambda kv: -kv[1])),
        "retries": int(sum(v for lab, v in samples(text, "kubetune_workqueue_retries_total"))),
        "sum_s": round(total, 3),
        "mean_s": round(total / count, 4) if count else None,
        "p50_le_s": quantile(0.5),
        "p90_le_s": quantile(0.9),
        "p99_le_s": quantile(0.99),
        "by_result": {k: int(v) for k, v in results.items()},
    }


# --- the phases ------------------------------------------------------------------------------------


@dataclass
class PhaseResult:
    phase: str
    count: int
    namespaces: int
    time_to_job: list[float] = field(default_factory=list)
    time_to_running: list[float] = field(default_factory=list)
    time_to_pod_running: list[float] = field(default_factory=list)
    submit_s: float = 0.0
    wall_s: float | None = None
    completed: int = 0
    timed_out: bool = False
    peak_rss_mib: float | None = None
    cleanup_s: float | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Settings:
    workers: int
    namespaces: int
    timeout: float | None
    resync_seconds: float
    floor_owner: str
    log_dir: Path
    claim_root: Path


def percentile(values: list[float], q: float) -> float | None:
    """Nearest rank."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def run_phase(
    phase: str,
    count: int,
    info: localcluster.ClusterInfo,
    settings: Settings,
    submit: Callable[[ThreadPoolExecutor, list[tuple[str, str]]], None],
    *,
    operator: BenchOperator | None = None,
    prepared: Callable[[client.CoreV1Api, list[str]], None] | None = None,
) -> PhaseResult:
    watch_api = new_client(info.kubeconfig)
    core = client.CoreV1Api(watch_api)
    run_id = f"{phase}-{count}-{uuid.uuid4().hex[:4]}"
    namespaces = [f"bench-{run_id}-{i}" for i in range(settings.namespaces)]
    keys = job_names(count, namespaces)
    result = PhaseResult(phase=phase, count=count, namespaces=len(namespaces))
    timeout = settings.timeout or max(300.0, 1.0 * count)

    log(f"{phase}, N={count}: namespaces {', '.join(namespaces)}")
    recorder = Recorder(watch_api, set(keys), watch_finetunejobs=operator is not None)
    sampler: RssSampler | None = None
    cpu_before = 0.0
    try:
        prepare_namespaces(core, namespaces, run_id, settings.claim_root)
        if prepared is not None:
            prepared(core, namespaces)
        recorder.start()
        if operator is not None:
            operator.start()
            assert operator.process is not None
            sampler = RssSampler(operator.process.pid)
            sampler.start()
            time.sleep(1)  # let kopf's watches settle before the batch
            cpu_before = sampler.cpu_seconds()
        requests_before = api_requests(get_text(watch_api, "/metrics"))
        cpu_of_cluster = localcluster.cpu_seconds(info)
        cpu_of_bench = time.process_time()

        with ThreadPoolExecutor(settings.workers, thread_name_prefix=phase) as pool:
            t0 = time.monotonic()
            submit(pool, keys)
            result.submit_s = time.monotonic() - t0
        log(f"  submitted {count} in {result.submit_s:.1f}s")
        waited_for = "ftj_running" if operator is not None else "pod_running"
        result.timed_out = not recorder.wait(
            waited_for, "FineTuneJobs Running" if operator else "pods Running", t0, timeout
        )
        if result.timed_out:
            log(f"  timed out after {timeout:.0f}s")
        seen = recorder.snapshot()
        jobs, pods, running = seen["job"], seen["pod_running"], seen[waited_for]
        result.time_to_job = [jobs[k] - t0 for k in keys if k in jobs]
        result.time_to_running = [running[k] - t0 for k in keys if k in running]
        result.time_to_pod_running = [pods[k] - t0 for k in keys if k in pods]
        lags = [running[k] - pods[k] for k in keys if k in running and k in pods]
        result.extra["pod_stages_s"] = pod_stages(seen, keys)
        result.completed = len(result.time_to_running)
        if result.time_to_running and not result.timed_out:
            result.wall_s = max(result.time_to_running)
        result.extra["apiserver_requests"] = request_delta(
            requests_before, api_requests(get_text(watch_api, "/metrics"))
        )
        # Where the machine's CPU went: the control plane's processes, and this process (the floor's
        # writes, and both phases' watches).
        cpu_now = localcluster.cpu_seconds(info)
        result.extra["cpu_s"] = {
            **{name: round(used - cpu_of_cluster.get(name, 0.0), 1) for name, used in cpu_now.items()},
            "bench": round(time.process_time() - cpu_of_bench, 1),
        }
        if sampler is not None:
            cpu = sampler.cpu_seconds() - cpu_before
            result.extra["operator_cpu_s"] = round(cpu, 1)
            if result.wall_s:
                result.extra["operator_cpu_share_of_wall"] = round(cpu / result.wall_s, 2)
        if operator is not None:
            result.extra["status_lag_s"] = {
                "p50": percentile(lags, 0.5),
                "p90": percentile(lags, 0.9),
                "max": max(lags) if lags else None,
            }
            with contextlib.suppress(OSError):
                result.extra["reconciles"] = reconcile_metrics(operator.metrics())
            with contextlib.suppress(Exception):
                result.extra["control_plane_rss_mib"] = {
                    k: round(v) for k, v in localcluster.memory_mib(info).items()
                }
    finally:
        recorder.stop()
        if operator is not None:
            if sampler is not None:
                sampler.stop()
                result.peak_rss_mib = round(max(sampler.peak_kib, sampler.hwm_kib) / 1024, 1)
                result.extra["rss_sampled_peak_mib"] = round(sampler.peak_kib / 1024, 1)
                result.extra["rss_vmhwm_mib"] = round(sampler.hwm_kib / 1024, 1)
            operator.stop()
            result.extra["operator_log"] = str(operator.log_path)
            result.extra["operator_log_summary"] = read_operator_log(operator.log_path)
        result.cleanup_s = cleanup(core, f"{BENCH_LABEL}={run_id}")
        log(f"  cleaned up in {result.cleanup_s:.1f}s")
    return result


PROBLEM_WORDS = ("traceback", "failed", "error", "conflict", "discarding", "retry", "timeout", "timed out")
HANDLER_RUN = re.compile(r"Handler '(?:[\w<>]+\.)*?(\w+)' (succeeded|failed)")


def read_operator_log(path: Path) -> dict[str, Any]:
    """From the operator's log: handler runs by handler, and what went wrong, by a short form of the line."""
    handlers: Counter = Counter()
    problems: Counter = Counter()
    if not path.exists():
        return {}
    for line in path.read_text(errors="replace").splitlines():
        run = HANDLER_RUN.search(line)
        if run:
            handlers[f"{run.group(1)} {run.group(2)}"] += 1
        lowered = line.lower()
        if any(word in lowered for word in PROBLEM_WORDS):
            text = re.sub(r"^\S+ \S+ ", "", line)  # the timestamp
            text = re.sub(r"[0-9a-f-]{36}|\d+", "#", text)
            problems[text[:140]] += 1
    return {"handler_runs": dict(handlers), "problems": dict(problems.most_common(12))}


def floor(count: int, info: localcluster.ClusterInfo, settings: Settings) -> PhaseResult:
    # One client for the workers, with a connection each (the watches have their own client).
    kube = Kube(new_client(info.kubeconfig, pool_size=settings.workers))
    owners: dict[str, dict[str, Any] | None] = {}

    def make_owners(core: client.CoreV1Api, namespaces: list[str]) -> None:
        for namespace in namespaces:
            if settings.floor_owner == "none":
                owners[namespace] = None
                continue
            owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": FLOOR_OWNER}})
            owners[namespace] = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": FLOOR_OWNER,
                "uid": owner.metadata.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }

    def apply_set(key: tuple[str, str]) -> None:
        for child in floor_children(key[0], key[1], owners[key[0]]):
            kube.apply(child)

    def submit(pool: ThreadPoolExecutor, keys: list[tuple[str, str]]) -> None:
        list(pool.map(apply_set, keys))

    result = run_phase("floor", count, info, settings, submit, prepared=make_owners)
    if settings.floor_owner == "none":
        result.notes.append("floor: ownerReferences dropped (no FineTuneJob exists)")
    else:
        result.notes.append(
            f"floor: ownerReferences point at a ConfigMap `{FLOOR_OWNER}` in the namespace (a real uid, so "
            "the garbage collector tracks the same edges; no FineTuneJob exists)"
        )
    result.notes.append("floor: time to Running = until the Job's pod is Running")
    return result


def operator(count: int, info: localcluster.ClusterInfo, settings: Settings) -> PhaseResult:
    kube = Kube(new_client(info.kubeconfig, pool_size=settings.workers))
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    process = BenchOperator(info, settings.log_dir / f"operator-{count}.log", settings.resync_seconds)

    def submit(pool: ThreadPoolExecutor, keys: list[tuple[str, str]]) -> None:
        list(pool.map(lambda key: kube.create(bench_body(key[1], key[0])), keys))

    result = run_phase("operator", count, info, settings, submit, operator=process)
    result.notes.append(
        "operator: time to Running = until the FineTuneJob's status.phase is Running "
        f"(resync every {settings.resync_seconds:.0f}s)"
    )
    return result


# --- output ----------------------------------------------------------------------------------------


# A Job's way to its Running pod, step by step: the Job controller's, the scheduler's and the node's part
# (each from one Recorder mark to the next).
POD_STAGES = {
    "job_to_pod": ("job", "pod_created"),
    "pod_to_bound": ("pod_created", "pod_bound"),
    "bound_to_running": ("pod_bound", "pod_running"),
}


def pod_stages(seen: dict[str, dict[tuple[str, str], float]], keys: list[tuple[str, str]]) -> dict[str, Any]:
    """Where the time from a Job to its Running pod goes, each of POD_STAGES' p50 and p90 (seen by this
    process's watches). Tells a slow Job controller or node apart from a slow operator."""
    out: dict[str, Any] = {}
    for name, (start, end) in POD_STAGES.items():
        gaps = [seen[end][k] - seen[start][k] for k in keys if k in seen[start] and k in seen[end]]
        out[name] = {"p50": _rounded(percentile(gaps, 0.5)), "p90": _rounded(percentile(gaps, 0.9))}
    return out


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def summary(result: PhaseResult) -> dict[str, Any]:
    def stats(values: list[float]) -> dict[str, float | None]:
        return {
            "p50": percentile(values, 0.5),
            "p90": percentile(values, 0.9),
            "max": max(values) if values else None,
        }

    out = asdict(result)
    for key in ("time_to_job", "time_to_running", "time_to_pod_running"):
        out[key] = {k: _rounded(v) for k, v in stats(out.pop(key)).items()}
    out["throughput_per_s"] = round(result.count / result.wall_s, 2) if result.wall_s else None
    out["submit_s"] = round(result.submit_s, 3)
    out["wall_s"] = None if result.wall_s is None else round(result.wall_s, 3)
    out["cleanup_s"] = None if result.cleanup_s is None else round(result.cleanup_s, 1)
    return out


def ratios(floor_summary: dict[str, Any], operator_summary: dict[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for q in ("p50", "p90"):
        f, o = floor_summary["time_to_running"][q], operator_summary["time_to_running"][q]
        out[f"time_to_running_{q}"] = round(o / f, 2) if f and o else None
    return out


def median_pair(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run (a floor and an operator phase) with the median p50 ratio, every run's figures in `pairs`;
    a single run as it is."""
    if len(runs) == 1:
        return runs[0]
    pairs = [pair_figures(r) for r in runs]
    rated = [r for r in runs if (r.get("ratio") or {}).get("time_to_running_p50") is not None]
    if not rated:
        return {**runs[0], "pairs": pairs}
    ordered = sorted(rated, key=lambda r: r["ratio"]["time_to_running_p50"])
    return {**ordered[(len(ordered) - 1) // 2], "pairs": pairs}


def pair_figures(run: dict[str, Any]) -> dict[str, Any]:
    """What tells one pair from another: its ratios, both walls and p50s, the operator's work per job."""
    floor_s, operator_s = run.get("floor") or {}, run.get("operator") or {}
    extra = operator_s.get("extra") or {}
    count = operator_s.get("count") or run["count"]
    reconciles = (extra.get("reconciles") or {}).get("count")
    return {
        "ratio": run.get("ratio"),
        "wall_ratio": round(operator_s["wall_s"] / floor_s["wall_s"], 2)
        if floor_s.get("wall_s") and operator_s.get("wall_s")
        else None,
        "floor_p50_s": (floor_s.get("time_to_running") or {}).get("p50"),
        "floor_wall_s": floor_s.get("wall_s"),
        "operator_p50_s": (operator_s.get("time_to_running") or {}).get("p50"),
        "operator_wall_s": operator_s.get("wall_s"),
        "reconciles_per_job": round(reconciles / count, 2) if reconciles else None,
        "operator_cpu_ms_per_job": round(1000 * extra["operator_cpu_s"] / count, 1)
        if extra.get("operator_cpu_s")
        else None,
    }


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def triple(stats: dict[str, float | None]) -> str:
    return " / ".join(fmt(stats[q]) for q in ("p50", "p90", "max"))


def stages(pod_stages_s: dict[str, Any] | None) -> str:
    return " / ".join(fmt(((pod_stages_s or {}).get(step) or {}).get("p50")) for step in POD_STAGES)


def print_report(results: list[dict[str, Any]]) -> None:
    table = Table(title="FineTuneJobs: time from the start of the batch (s)")
    for column, justify in (
        ("N", "right"),
        ("phase", "left"),
        ("to Job p50 / p90 / max", "right"),
        ("to Running p50 / p90 / max", "right"),
        ("wall (s)", "right"),
        ("jobs/s", "right"),
        ("operator peak RSS (MiB)", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for entry in results:
        for phase in ("floor", "operator"):
            s = entry.get(phase)
            if s is None:
                continue
            done = "" if not s["timed_out"] else f" ({s['completed']}/{s['count']} before the timeout)"
            table.add_row(
                str(s["count"]),
                phase + done,
                triple(s["time_to_job"]),
                triple(s["time_to_running"]),
                fmt(s["wall_s"], 1),
                fmt(s["throughput_per_s"], 1),
                fmt(s["peak_rss_mib"], 0) if phase == "operator" else "",
            )
        if entry.get("ratio"):
            r = entry["ratio"]
            table.add_row(
                "",
                "operator / floor" + (" (median pair)" if entry.get("pairs") else ""),
                "",
                f"p50 x{fmt(r['time_to_running_p50'])}, p90 x{fmt(r['time_to_running_p90'])}",
                "",
                "",
                "",
            )
        for number, pair in enumerate(entry.get("pairs") or [], 1):
            r = pair.get("ratio") or {}
            table.add_row(
                "",
                f"pair {number}: floor {fmt(pair['floor_p50_s'], 1)} / {fmt(pair['floor_wall_s'], 1)} s",
                "",
                f"p50 x{fmt(r.get('time_to_running_p50'))}, p90 x{fmt(r.get('time_to_running_p90'))}",
                f"x{fmt(pair['wall_ratio'])}",
                "",
                "",
            )
    out = Console(width=None if sys.stdout.isatty() else 160)
    out.print(table)
    notes: list[str] = []
    for entry in results:
        for phase in ("floor", "operator"):
            s = entry.get(phase)
            if s is None:
                continue
            for note in s["notes"]:
                if note not in notes:
                    notes.append(note)
            line = (
                f"N={s['count']} {phase}: submitted in {fmt(s['submit_s'], 1)}s; "
                f"pods Running p50/p90/max {triple(s['time_to_pod_running'])}; "
                f"Job to pod / pod to bound / bound to Running p50 {stages(s['extra'].get('pod_stages_s'))}; "
                f"{s['extra']['apiserver_requests']['total']} API requests "
                f"({s['extra']['apiserver_requests']['server_seconds_total']}s in the API server)"
            )
            if phase == "operator":
                lag = s["extra"].get("status_lag_s") or {}
                rec = s["extra"].get("reconciles") or {}
                line += (
                    f"; status lag after the pod p50/p90/max {fmt(lag.get('p50'))} / {fmt(lag.get('p90'))} / "
                    f"{fmt(lag.get('max'))}; {rec.get('count')} reconciles, "
                    f"mean {fmt(rec.get('mean_s'), 3)}s, "
                    f"p90 <= {rec.get('p90_le_s')}s, total {fmt(rec.get('sum_s'), 1)}s; "
                    f"operator CPU {s['extra'].get('operator_cpu_s')}s"
                )
            cpu = s["extra"].get("cpu_s") or {}
            line += "; CPU s: " + ", ".join(f"{name} {used}" for name, used in cpu.items())
            notes.append(line)
    notes.append("times are seen by watches in the bench process, from one t0 when the batch starts")
    for note in notes:
        out.print(f"  {note}", highlight=False)


# --- main ------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.bench_finetunejobs", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--count", type=int, action="append", help="N FineTuneJobs (repeat; default 200)")
    parser.add_argument(
        "--nodes-per-cluster", "--nodes", dest="nodes", type=int, default=10, help="fake GPU nodes (10)"
    )
    parser.add_argument(
        "--gpus-per-node", type=int, help="GPUs (and pods) per node (default: room for the largest N, x1.2)"
    )
    parser.add_argument(
        "--namespaces", type=int, default=1, help="spread the N over this many namespaces (1)"
    )
    parser.add_argument("--workers", type=int, default=16, help="threads that create (16, as the operator's)")
    parser.add_argument(
        "--phase", choices=("floor", "operator"), action="append", help="run only this phase (repeat)"
    )
    parser.add_argument(
        "--pairs", type=int, default=1, help="run the floor and the operator K times each, alternately (1)"
    )
    parser.add_argument("--timeout", type=float, help="seconds a phase may take (default max(300, N))")
    parser.add_argument(
        "--resync-seconds", type=float, default=60, help="the operator's resync interval (60, its default)"
    )
    parser.add_argument(
        "--floor-owner",
        choices=("configmap", "none"),
        default="configmap",
        help="the floor's ownerReferences: a ConfigMap with a real uid (default), or none",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--log-dir", type=Path, help="where the operator's log goes (default: a temp dir)")
    parser.add_argument(
        "--keep-cluster", action="store_true", help="leave a cluster the bench started running"
    )
    return parser.parse_args(argv)


def _interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.pairs < 1:
        log("--pairs must be 1 or more")
        return 2
    counts = args.count or [200]
    phases = args.phase or ["floor", "operator"]
    gpus = args.gpus_per_node or max(8, math.ceil(max(counts) * 1.2 / args.nodes))
    if args.nodes * gpus < max(counts):
        log(f"{args.nodes} nodes x {gpus} GPUs cannot hold {max(counts)} pods")
        return 2
    pool = BenchNodePool(count=args.nodes, gpus_per_node=gpus, pods=gpus + 10, name_prefix="bench-gpu")
    work = Path(tempfile.mkdtemp(prefix="kubetune-bench-"))
    settings = Settings(
        workers=args.workers,
        namespaces=args.namespaces,
        timeout=args.timeout,
        resync_seconds=args.resync_seconds,
        floor_owner=args.floor_owner,
        log_dir=args.log_dir or work,
        claim_root=work / "claims",
    )
    # A Ctrl-C or a SIGTERM still stops the operator, cleans up, and stops a cluster the bench started.
    signal.signal(signal.SIGTERM, _interrupted)

    info, started = ensure_cluster(pool)
    results: list[dict[str, Any]] = []
    try:
        api = new_client(info.kubeconfig)
        core = client.CoreV1Api(api)
        cleanup(core, BENCH_LABEL)  # what an interrupted run left behind
        install_crds(info, api)
        log(f"{args.nodes} fake nodes x {gpus} GPUs; operator log and claims under {work}")
        for count in counts:
            runs: list[dict[str, Any]] = []
            for _ in range(args.pairs):
                run: dict[str, Any] = {"count": count}
                if "floor" in phases:
                    run["floor"] = summary(floor(count, info, settings))
                if "operator" in phases:
                    run["operator"] = summary(operator(count, info, settings))
                if "floor" in run and "operator" in run:
                    run["ratio"] = ratios(run["floor"], run["operator"])
                runs.append(run)
            results.append(median_pair(runs))
    finally:
        if started and not args.keep_cluster:
            log("stopping the local control plane the bench started")
            localcluster.down()
    print_report(results)
    if args.json:
        document = {
            "cluster": {
                "versions": info.versions,
                "nodes": args.nodes,
                "gpus_per_node": gpus,
                "state_dir": info.state_dir,
                "cpus": os.cpu_count(),
            },
            "settings": {
                "workers": args.workers,
                "namespaces": args.namespaces,
                "resync_seconds": args.resync_seconds,
                "floor_owner": args.floor_owner,
                "pairs": args.pairs,
            },
            "results": results,
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
