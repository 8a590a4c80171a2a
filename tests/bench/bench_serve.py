"""`make bench-serve`: how long an adapter added to (or removed from) a ModelServe takes to be served (or to
answer 404), with 1, 10 and 30 adapters already served. A benchmark, not a test: it asserts no timing.

The path measured is the deployed one, end to end: the ModelServe edited through the API server, the real
operator rewriting the adapters ConfigMap, the real adapter-sync sidecar (watching that ConfigMap with its
own token, launcher/adapter_watch.py) loading it into the real vLLM engine (its CPU build), then the first
completion on the new name, asked every 0.1 s. The pod is played on this machine as in the serve tier
(tests/serve/pod.py): its mounted adapters file is never refreshed, as a kubelet would do only about a
minute later, so nothing in the figure is the kubelet's refresh. Each adapter is a real LoRA: one trained
by LLaMA-Factory on the tiny model, copied under its own directory per name.

Run with pytest (it uses the serve tier's fixtures): writes BENCH_SERVE_JSON (bench-serve.json):
{"counts": {"1": {"edit_to_first_completion_s": {"p50", "max", "samples"}, "edit_to_404_s": {...}}, ...}}.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.cluster import localcluster
from tests.kube import wait_until
from tests.serve.conftest import environments, serve_claim, serve_namespace, train_adapter  # noqa: F401
from tests.serve.pod import ServePod, play
from tests.specs import modelserve

pytestmark = pytest.mark.timeout(3600)

GROUP, VERSION, PLURAL = "kubetune.io", "v1alpha1", "modelserves"
NAME = "bench"
COUNTS = [int(n) for n in os.environ.get("BENCH_SERVE_COUNTS", "1 10 30").split()]
EDITS = int(os.environ.get("BENCH_SERVE_EDITS", "5"))  # added, then removed, at each count
OUTPUT = Path(os.environ.get("BENCH_SERVE_JSON", "bench-serve.json"))
POLL = 0.1


def adapter(i: int) -> dict[str, str]:
    return {"name": f"a{i}", "path": f"adapters/a{i}"}


def set_adapters(custom: client.CustomObjectsApi, namespace: str, adapters: list[dict[str, str]]) -> None:
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, NAME, {"spec": {"adapters": adapters}}
    )


def code_of(pod: ServePod, model: str) -> int:
    return pod.complete(model, tokens=1)[0]


def summary(samples: list[float]) -> dict[str, Any]:
    return {
        "p50": round(statistics.median(samples), 2),
        "max": round(max(samples), 2),
        "samples": [round(s, 2) for s in samples],
    }


@pytest.fixture(scope="module")
def pod(
    cluster: localcluster.ClusterInfo,
    crds: None,
    operator: Any,
    api: client.ApiClient,
    serve_namespace: str,  # noqa: F811
    serve_claim: Path,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServePod]:
    workdir = tmp_path_factory.mktemp("bench-serve")
    trained = train_adapter(serve_claim, serve_namespace, "bench", workdir)
    for i in range(max(COUNTS) + EDITS):
        shutil.copytree(
            trained, serve_claim / "adapters" / f"a{i}", ignore=shutil.ignore_patterns("checkpoint-*")
        )
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(
        GROUP, VERSION, serve_namespace, PLURAL,
        modelserve(
            NAME, [adapter(0)],
            model={"source": "pvc://shared/models/tiny", "servedModelName": "tiny-base"},
            replicas=1,
            resources={"gpus": 0, "cpu": "2", "memory": "6Gi"},
            engine={"dtype": "float32", "maxModelLen": 256, "cpuKvCacheGib": 1},
        ),
    )  # fmt: skip
    # The mounted copies, written once at the pod's start as a kubelet does; never refreshed after.
    played = play(cluster, api, serve_namespace, NAME, serve_claim, workdir)
    played.start()
    try:
        played.wait_ready()
        yield played
    finally:
        played.stop()


def test_edit_to_first_completion(pod: ServePod, api: client.ApiClient, serve_namespace: str) -> None:  # noqa: F811
    custom = client.CustomObjectsApi(api)
    results: dict[str, Any] = {}
    for count in COUNTS:
        served = [adapter(i) for i in range(count)]
        set_adapters(custom, serve_namespace, served)
        wait_until(
            lambda served=served: all(code_of(pod, a["name"]) == 200 for a in served),
            f"{count} adapters served",
            timeout=600,
            interval=1,
        )
        added, removed = [], []
        for k in range(EDITS):
            extra = adapter(max(COUNTS) + k)
            started = time.monotonic()
            set_adapters(custom, serve_namespace, [*served, extra])
            wait_until(lambda e=extra: code_of(pod, e["name"]) == 200, f"{extra['name']} served", 120, POLL)
            added.append(time.monotonic() - started)
            started = time.monotonic()
            set_adapters(custom, serve_namespace, served)
            wait_until(lambda e=extra: code_of(pod, e["name"]) == 404, f"{extra['name']} 404", 120, POLL)
            removed.append(time.monotonic() - started)
        results[str(count)] = {
            "edit_to_first_completion_s": summary(added),
            "edit_to_404_s": summary(removed),
        }
        print(f"\n{count} adapters served: {json.dumps(results[str(count)])}")
    OUTPUT.write_text(json.dumps({"counts": results, "edits_per_count": EDITS}, indent=2) + "\n")
