"""What a quiet cluster costs: the operator's requests and CPU while nothing changes, then for one edit.

    python -m tests.bench.bench_steady [--modelserves 500] [--adapters 5] [--finished 1000] [--json FILE]

On the bench's local control plane (as tests/bench/bench_finetunejobs.py, whose helpers it uses):

setup   `kubetune run` in a subprocess with the production resync interval; FINISHED FineTuneJobs, trained
        to Succeeded (KWOK ends their pods), then MODELSERVES ModelServes with ADAPTERS path adapters each,
        their pods Ready and every adapter reported loaded as the sidecars report it (into the report
        ConfigMap; KWOK's pods run no containers).
steady  once the operator has settled, a window of two resyncs and a bit with nothing changing: the
        requests the reconciles made (the operator's kubetune_api_requests_total, by verb and resource;
        kopf's watches are not in it), its CPU, its reconciles and its resident memory.
edit    just after a resync has ended, one ModelServe gains an adapter: the reconciles and the requests
        from the edit until its status has seen it and the queue is empty.

This is a benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client

from kubetune.launcher.adapter_sync import AdapterReport, report_document
from tests.bench.bench_finetunejobs import (
    BENCH_LABEL,
    BenchNodePool,
    BenchOperator,
    RssSampler,
    _interrupted,
    cleanup,
    ensure_cluster,
    install_crds,
    log,
    new_client,
    prepare_namespaces,
    samples,
)
from tests.cluster import localcluster
from tests.specs import finetunejob, modelserve

GROUP, VERSION = "kubetune.io", "v1alpha1"


def metric_sum(text: str, name: str, **labels: str) -> float:
    return sum(v for lab, v in samples(text, name) if lab.items() >= labels.items())


def counted(text: str, name: str, *by: str) -> Counter:
    """A counter's samples, keyed by the values of the labels `by` ("verb resource", "kind result")."""
    out: Counter = Counter()
    for labels, value in samples(text, name):
        out[" ".join(labels.get(label, "") for label in by)] += value
    return out


class Snapshot:
    """The operator's counters at one moment."""

    def __init__(self, operator: BenchOperator, rss: RssSampler):
        text = operator.metrics()
        self.at = time.monotonic()
        self.requests = counted(text, "kubetune_api_requests_total", "verb", "resource")
        self.reconciles = counted(text, "kubetune_reconciles_total", "kind", "result")
        self.depth = metric_sum(text, "kubetune_workqueue_depth")
        self.cpu = rss.cpu_seconds()

    def since(self, before: Snapshot) -> dict[str, Any]:
        seconds = self.at - before.at
        requests = self.requests - before.requests
        total = int(sum(requests.values()))
        return {
            "seconds": round(seconds, 1),
            "requests": total,
            "requests_per_minute": round(60 * total / seconds, 1),
            "lists": int(sum(n for key, n in requests.items() if key.startswith("list "))),
            "by_request": {key: int(n) for key, n in requests.most_common()},
            "reconciles": {key: int(n) for key, n in (self.reconciles - before.reconciles).most_common()},
            "cpu_seconds": round(self.cpu - before.cpu, 2),
            "cpu_seconds_per_minute": round(60 * (self.cpu - before.cpu) / seconds, 2),
        }


def in_parallel(work: list[Any], call: Any, threads: int = 16) -> None:
    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(call, item) for item in work]:
            future.result()


def phases(custom: client.CustomObjectsApi, plural: str) -> Counter:
    items = custom.list_cluster_custom_object(GROUP, VERSION, plural, label_selector=BENCH_LABEL)["items"]
    return Counter((item.get("status") or {}).get("phase") or "-" for item in items)


def wait_phases(
    custom: client.CustomObjectsApi, plural: str, phase: str, count: int, timeout: float
) -> float:
    started = time.monotonic()
    last = ""

    def reached() -> bool:
        nonlocal last
        seen = phases(custom, plural)
        shown = ", ".join(f"{n} {p}" for p, n in sorted(seen.items()))
        if shown != last:
            log(f"{plural}: {shown}")
            last = shown
        return seen.get(phase, 0) >= count

    localcluster.wait_for(f"{count} {plural} {phase}", reached, timeout=timeout, interval=3)
    return round(time.monotonic() - started, 1)


def create_all(
    custom: client.CustomObjectsApi,
    plural: str,
    bodies: list[dict[str, Any]],
    namespaces: list[str],
    run_id: str,
) -> None:
    """Created from 16 threads, spread over the namespaces, labelled as the bench's."""
    for index, body in enumerate(bodies):
        body["metadata"]["namespace"] = namespaces[index % len(namespaces)]
        body["metadata"]["labels"] = {BENCH_LABEL: run_id}
    in_parallel(
        bodies,
        lambda b: custom.create_namespaced_custom_object(
            GROUP, VERSION, b["metadata"]["namespace"], plural, b
        ),
    )


def adapters_of(index: int, count: int) -> list[dict[str, str]]:
    return [{"name": f"a{k}", "path": f"adapters/ms{index:04d}-a{k}"} for k in range(count)]


def report_loaded(core: client.CoreV1Api, namespace: str, name: str) -> None:
    """What each pod's adapter-sync sidecar writes once its vLLM has loaded the desired adapters."""
    desired = json.loads(core.read_namespaced_config_map(f"{name}-adapters", namespace).data["adapters.json"])
    pods = core.list_namespaced_pod(namespace, label_selector=f"kubetune.io/modelserve={name}").items
    reports = {n: AdapterReport("Loaded", path, None) for n, path in desired.items()}
    document = json.dumps(report_document(reports, claim="/mnt/claim"))
    data = {pod.metadata.name: document for pod in pods if pod.status.phase == "Running"}
    core.patch_namespaced_config_map(f"{name}-adapter-report", namespace, {"data": data})


def all_adapters_ready(custom: client.CustomObjectsApi, count: int) -> bool:
    items = custom.list_cluster_custom_object(GROUP, VERSION, "modelserves", label_selector=BENCH_LABEL)[
        "items"
    ]
    ready = [
        i
        for i in items
        if (i.get("status") or {}).get("adapters") and all(a.get("ready") for a in i["status"]["adapters"])
    ]
    return len(ready) >= count


def settled(operator: BenchOperator, rss: RssSampler, quiet_seconds: float = 5.0) -> Snapshot:
    """Waits for an empty queue and no request for `quiet_seconds` (a resync may come meanwhile)."""
    holder: dict[str, Snapshot] = {}

    def quiet() -> bool:
        before = Snapshot(operator, rss)
        time.sleep(quiet_seconds)
        after = Snapshot(operator, rss)
        holder["s"] = after
        return (
            after.depth == 0 and after.requests == before.requests and after.reconciles == before.reconciles
        )

    localcluster.wait_for("the operator to settle", quiet, timeout=900, interval=0)
    return holder["s"]


def after_a_resync(operator: BenchOperator, rss: RssSampler, modelserves: int) -> Snapshot:
    """The moment a resync's reconciles (every ModelServe at least) have run and the queue is empty."""
    start = Snapshot(operator, rss)
    wanted = sum(n for key, n in start.reconciles.items() if key.startswith("ModelServe ")) + modelserves

    def done() -> bool:
        now = Snapshot(operator, rss)
        ran = sum(n for key, n in now.reconciles.items() if key.startswith("ModelServe "))
        return ran >= wanted and now.depth == 0

    localcluster.wait_for("a resync to pass", done, timeout=900, interval=0.2)
    return Snapshot(operator, rss)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modelserves", type=int, default=500)
    parser.add_argument("--adapters", type=int, default=5, help="path adapters per ModelServe")
    parser.add_argument("--finished", type=int, default=1000, help="FineTuneJobs trained to Succeeded")
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--nodes", type=int, default=64)
    parser.add_argument("--resync-seconds", type=float, default=60.0, help="the operator's (production: 60)")
    parser.add_argument("--resyncs", type=int, default=2, help="how many resyncs the quiet window holds")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--keep-cluster", action="store_true", help="leave a cluster the bench started")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    gpus = max(8, math.ceil((args.modelserves + args.finished) * 1.1 / args.nodes))
    pool = BenchNodePool(count=args.nodes, gpus_per_node=gpus, pods=gpus + 10, name_prefix="bench-gpu")
    work = Path(tempfile.mkdtemp(prefix="kubetune-bench-steady-"))
    signal.signal(signal.SIGTERM, _interrupted)
    run_id = uuid.uuid4().hex[:8]
    namespaces = [f"bench-steady-{run_id}-{i}" for i in range(args.namespaces)]
    figures: dict[str, Any] = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    }

    info, started = ensure_cluster(pool)
    operator: BenchOperator | None = None
    try:
        api = new_client(info.kubeconfig, pool_size=32)
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        cleanup(core, BENCH_LABEL)
        install_crds(info, api)
        prepare_namespaces(core, namespaces, run_id, work / "claims")
        operator = BenchOperator(info, work / "operator.log", args.resync_seconds)
        operator.start()
        assert operator.process is not None
        rss = RssSampler(operator.process.pid)
        rss.start()
        log(f"operator log: {work / 'operator.log'}")

        setup: dict[str, Any] = {}
        started_at = time.monotonic()
        one_gpu = {"nodes": 1, "gpusPerNode": 1}
        jobs = [finetunejob(f"done-{i:05d}", resources=one_gpu) for i in range(args.finished)]
        create_all(custom, "finetunejobs", jobs, namespaces, run_id)
        setup["finetunejobs_succeeded_s"] = wait_phases(
            custom, "finetunejobs", "Succeeded", args.finished, 1800
        )
        serves = [modelserve(f"ms-{i:04d}", adapters_of(i, args.adapters)) for i in range(args.modelserves)]
        create_all(custom, "modelserves", serves, namespaces, run_id)
        setup["modelserves_ready_s"] = wait_phases(custom, "modelserves", "Ready", args.modelserves, 1800)
        mark = time.monotonic()
        in_parallel(serves, lambda b: report_loaded(core, b["metadata"]["namespace"], b["metadata"]["name"]))
        localcluster.wait_for(
            "every adapter reported ready",
            lambda: all_adapters_ready(custom, args.modelserves),
            timeout=900,
            interval=3,
        )
        setup["adapters_reported_ready_s"] = round(time.monotonic() - mark, 1)
        setup["total_s"] = round(time.monotonic() - started_at, 1)
        figures["setup"] = setup
        log(f"set up: {setup}")

        # The quiet window: from a settled moment, over --resyncs resyncs and a bit.
        begin = settled(operator, rss)
        rss.peak_kib = 0
        window = args.resyncs * args.resync_seconds + 10
        log(f"quiet window of {window:.0f}s")
        time.sleep(window)
        end = Snapshot(operator, rss)
        steady = end.since(begin)
        steady["rss_peak_mib"] = round(rss.peak_kib / 1024, 1)
        figures["steady"] = steady
        log(f"steady: {json.dumps(steady)}")

        # One edit, just after a resync has passed, so that the next is a resync interval away.
        before = after_a_resync(operator, rss, args.modelserves)
        namespace, name = serves[0]["metadata"]["namespace"], serves[0]["metadata"]["name"]
        extra = adapters_of(0, args.adapters + 1)
        edited = custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "modelserves", name, {"spec": {"adapters": extra}}
        )
        generation = edited["metadata"]["generation"]
        localcluster.wait_for(
            "the edit in the status",
            lambda: (
                (
                    custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "modelserves", name).get(
                        "status"
                    )
                    or {}
                ).get("observedGeneration")
                == generation
            ),
            timeout=120,
            interval=0.2,
        )
        after = settled(operator, rss, quiet_seconds=3.0)
        edit = after.since(before)
        edit["resync_in_window"] = edit["seconds"] >= args.resync_seconds
        figures["edit"] = edit
        log(f"edit: {json.dumps(edit)}")
    finally:
        if operator is not None:
            operator.stop()
        try:
            cleanup(core, BENCH_LABEL)
        finally:
            if started and not args.keep_cluster:
                log("stopping the local control plane the bench started")
                localcluster.down()
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
