"""A ModelServe edited while one wide FineTuneJob starts: how soon does the operator act on the edit?

    python -m tests.bench.bench_latency [--nodes 64] [--edits 10] [--json FILE]

On the bench's local control plane (KUBETUNE_CLUSTER_DIR, default ~/.cache/kubetune/bench-cluster): a
ModelServe is created and served; then a FineTuneJob of --nodes nodes is created (its pods held Running, one
per fake GPU node), and while its pods are scheduled and start (a burst of pod and Job events, each of which
used to run a full reconcile of the FineTuneJob) the ModelServe's spec is edited --edits times, every
--interval seconds. For each edit: the time until the ModelServe's status.observedGeneration reaches the
edit's generation (its reconcile has run and written the status; polled every 20 ms). Also: the time until
the FineTuneJob is Running, and from the operator's kubetune_workqueue_wait_seconds{kind="ModelServe"} how
many ModelServe reconciles started within 0.1 s and 1 s of their key being queued. A benchmark, not a test:
it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.bench.bench_finetunejobs import (
    BENCH_LABEL,
    HOLD_ANNOTATION,
    BenchNodePool,
    BenchOperator,
    cleanup,
    ensure_cluster,
    install_crds,
    log,
    new_client,
    percentile,
    prepare_namespaces,
    samples,
)
from tests.cluster import localcluster
from tests.specs import finetunejob, modelserve, with_pod_annotations

GROUP, VERSION = "kubetune.io", "v1alpha1"


def poll_generation(custom: client.CustomObjectsApi, namespace: str, name: str, generation: int, t0: float,
                    timeout: float = 60) -> float | None:  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "modelserves", name)
        if (body.get("status") or {}).get("observedGeneration", 0) >= generation:
            return time.monotonic() - t0
        time.sleep(0.02)
    return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    pool = BenchNodePool(count=args.nodes, gpus_per_node=8, pods=20, name_prefix="bench-gpu")
    info, started = ensure_cluster(pool)
    work = Path(tempfile.mkdtemp(prefix="kubetune-latency-"))
    api = new_client(info.kubeconfig)
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    run_id = f"latency-{uuid.uuid4().hex[:4]}"
    namespace = f"bench-{run_id}"
    result: dict[str, Any] = {"nodes": args.nodes, "edits": args.edits, "interval_s": args.interval}
    operator = BenchOperator(info, work / "operator.log", resync_seconds=60)
    try:
        cleanup(core, BENCH_LABEL)
        install_crds(info, api)
        prepare_namespaces(core, [namespace], run_id, work / "claims")
        operator.start()
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "modelserves", modelserve("serve"))
        if poll_generation(custom, namespace, "serve", 1, time.monotonic()) is None:
            raise RuntimeError("the ModelServe was never reconciled")
        wide = with_pod_annotations(
            finetunejob("wide", resources={"nodes": args.nodes, "gpusPerNode": 1}),
            **{HOLD_ANNOTATION: "true"},
        )
        running: dict[str, float] = {}

        def wait_running(t0: float) -> None:
            while time.monotonic() - t0 < 300:
                body = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "finetunejobs", "wide")
                if (body.get("status") or {}).get("phase") == "Running":
                    running["s"] = time.monotonic() - t0
                    return
                time.sleep(0.1)

        t0 = time.monotonic()
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "finetunejobs", wide)
        watcher = threading.Thread(target=wait_running, args=(t0,), daemon=True)
        watcher.start()
        latencies: list[float] = []
        missed = 0
        for edit in range(args.edits):
            time.sleep(args.interval)  # the first edit lands while the pods are being created
            patch = {"spec": {"engine": {"maxModelLen": 1024 + 16 * (edit + 1)}}}
            edited = custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, "modelserves", "serve", patch
            )
            generation = edited["metadata"]["generation"]
            latency = poll_generation(custom, namespace, "serve", generation, time.monotonic())
            if latency is None:
                missed += 1
            else:
                latencies.append(latency)
            log(
                f"  edit {edit + 1} (generation {generation}): "
                + ("not acted on in 60s" if latency is None else f"acted on in {latency:.3f}s")
            )
        watcher.join(timeout=300)
        # When each ModelServe reconcile started, after its key was queued: the operator's own histogram.
        waits = {
            labels["le"]: value
            for labels, value in samples(operator.metrics(), "kubetune_workqueue_wait_seconds_bucket")
            if labels.get("kind") == "ModelServe"
        }
        result["modelserve_queue_wait"] = {
            "reconciles": int(waits.get("+Inf", 0)),
            "started_within_0.1s": int(waits.get("0.1", 0)),
            "started_within_1s": int(waits.get("1.0", 0)),
        }
        pods = core.list_namespaced_pod(namespace, label_selector="kubetune.io/finetunejob=wide").items
        result.update(
            {
                "edit_to_observed_s": {
                    "p50": percentile(latencies, 0.5),
                    "p90": percentile(latencies, 0.9),
                    "max": max(latencies) if latencies else None,
                },
                "edits_missed": missed,
                "finetunejob_running_s": running.get("s"),
                "pods_seen": len(pods),
                "pods_running": sum(1 for p in pods if p.status.phase == "Running"),
            }
        )
    finally:
        operator.stop()
        cleanup(core, f"{BENCH_LABEL}={run_id}")
        if started and not args.keep_cluster:
            localcluster.down()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.bench_latency", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--nodes", type=int, default=64, help="the FineTuneJob's nodes (64), one per fake node"
    )
    parser.add_argument("--edits", type=int, default=10, help="edits of the ModelServe (10)")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between edits (0.1)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--keep-cluster", action="store_true", help="leave a cluster the bench started running"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("KUBETUNE_RESYNC_SECONDS", "60")
    result = run(args)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
