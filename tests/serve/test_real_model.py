"""The demo's real model through a ModelServe: SmolLM2-135M-Instruct (`make real-model`), a LoRA that the
real LLaMA-Factory trains with examples/demo/finetunejob.yaml's settings on the entity-extraction data, and
the real vLLM engine serving both. Evidence that the served adapter is the trained one: its greedy answers
to held-out sentences (never trained on) are the trained JSON, the base model's are not; and once removed
from the ModelServe, its name answers 404. The training also merges the adapter into the model
(`postTraining.merge`), and a second ModelServe serving that merged model answers as base plus adapter did.

Every other serve test uses the tiny random model (seconds to train); this one trains for a few minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from tests.cluster import localcluster
from tests.kube import create_namespace, wait_until
from tests.serve import entities
from tests.serve.conftest import bound_claim, train_adapter
from tests.serve.pod import ServePod, play
from tests.serve.test_vllm_serves_adapters import tree_rss_mib
from tests.specs import modelserve
from tests.worker.pod import finetunejob_body

from kubetune.render import modelserve as render

pytestmark = pytest.mark.timeout(1500)  # the module's setup: minutes of training, a minute of vLLM start

GROUP, VERSION, PLURAL = "kubetune.io", "v1alpha1", "modelserves"
NAME, BASE, ADAPTER = "smollm2", "smollm2-135m-instruct", "entities"
MODEL = entities.real_model_dir()
DEMO_JOB = entities.REPO / "examples" / "demo" / "finetunejob.yaml"


@dataclass
class Served:
    namespace: str
    api: client.ApiClient
    pod: ServePod
    figures: dict[str, float]
    cluster: localcluster.ClusterInfo
    claim: Path
    workdir: Path
    merged: Path  # the merged model's folder on the claim

    def set_adapters(self, adapters: list[dict[str, str]]) -> None:
        client.CustomObjectsApi(self.api).patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, NAME, {"spec": {"adapters": adapters}}
        )

    def kubelet_sync(self) -> dict[str, str]:
        data = client.CoreV1Api(self.api).read_namespaced_config_map(f"{NAME}-adapters", self.namespace).data
        self.pod.write_adapters(data)
        return json.loads(data[render.ADAPTERS_FILE])


def demo_job(name: str) -> dict[str, Any]:
    """The demo's FineTuneJob as the trainer pod would get it: its model, data and settings, on this machine's
    CPU and without its periodic evaluation (time)."""
    demo = yaml.safe_load(DEMO_JOB.read_text())["spec"]
    body = finetunejob_body(name)
    body["spec"]["model"] = demo["model"]
    body["spec"]["dataset"] = {k: v for k, v in demo["dataset"].items() if k != "evalNames"}
    body["spec"]["config"] = {
        k: v for k, v in demo["config"].items() if not k.startswith(("eval_", "per_device_eval"))
    }
    body["spec"]["postTraining"] = {"merge": {}}  # the merged model beside the adapter
    return body


def start_pod(
    cluster: localcluster.ClusterInfo,
    api: client.ApiClient,
    namespace: str,
    body: dict,
    claim: Path,
    workdir: Path,
) -> ServePod:
    """Create the ModelServe `body` (one replica) and run its pod as the kubelet would, once KWOK has placed
    it; returns it once vLLM answers."""
    name = body["metadata"]["name"]
    client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    pod = play(cluster, api, namespace, name, claim, workdir / name)
    pod.start()
    return pod


@pytest.fixture(scope="module")
def served(
    cluster: localcluster.ClusterInfo,
    crds: None,
    operator: Any,
    api: client.ApiClient,
    environments: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    if not (MODEL / "config.json").exists():
        pytest.skip(f"no SmolLM2-135M-Instruct at {MODEL}: run `make real-model`")
    core = client.CoreV1Api(api)
    namespace = create_namespace(core, f"t-real-{os.urandom(3).hex()}")
    root = tmp_path_factory.mktemp("real") / "claim"
    (root / "datasets").mkdir(parents=True)
    for data in (entities.TRAIN, entities.HELDOUT):
        shutil.copyfile(data, root / "datasets" / data.name)
    entities.place_model(root)
    claims = bound_claim(core, namespace, root)
    next(claims)
    workdir = tmp_path_factory.mktemp("real-work")
    figures: dict[str, float] = {}
    try:
        started = time.monotonic()
        trained = train_adapter(root, namespace, ADAPTER, workdir, body=demo_job(ADAPTER))
        figures["train_seconds"] = time.monotonic() - started
        body = modelserve(
            NAME,
            [{"name": ADAPTER, "path": str(trained.relative_to(root))}],
            model={"source": f"pvc://shared/models/{entities.MODEL_DIR_NAME}", "servedModelName": BASE},
            replicas=1,
            resources={"gpus": 0, "cpu": "2", "memory": "6Gi"},
            engine={"dtype": "float32", "maxModelLen": 512, "cpuKvCacheGib": 1},
        )
        pod = start_pod(cluster, api, namespace, body, root, workdir)
        stack = Served(namespace, api, pod, figures, cluster, root, workdir, merged=trained / "merged")
        try:
            figures["vllm_ready_seconds"] = pod.wait_ready()
            figures["vllm_rss_mib"] = tree_rss_mib(pod.processes["vllm"].pid)
            wait_until(lambda: ADAPTER in pod.models(), "the adapter to be loaded", timeout=120)
            yield stack
        finally:
            pod.stop()
            print("\nreal-model serve figures:", json.dumps({k: round(v, 2) for k, v in figures.items()}))
    finally:
        next(claims, None)
        core.delete_namespace(namespace, propagation_policy="Background")


def test_the_adapter_answers_held_out_sentences_in_the_trained_format_and_the_base_does_not(
    served: Served,
) -> None:
    records = entities.heldout()
    started = time.monotonic()
    base = [entities.ask(served.pod, BASE, r) for r in records]
    adapter = [entities.ask(served.pod, ADAPTER, r) for r in records]
    served.figures["answer_seconds_each"] = (time.monotonic() - started) / (2 * len(records))
    parsed = [entities.entities(a) for a in adapter]
    exact = sum(p == json.loads(r["output"]) for p, r in zip(parsed, records, strict=True))
    served.figures["adapter_exact_answers"] = exact
    shown = json.dumps({"base": base, "adapter": adapter}, indent=1)
    print(f"\nheld-out answers ({exact}/{len(records)} of the adapter's exactly right):\n{shown}")
    assert sum(p is not None for p in parsed) >= 0.75 * len(records), shown
    assert sum(entities.entities(a) is not None for a in base) <= 0.25 * len(records), shown


def test_the_merged_model_answers_as_the_base_with_the_adapter(served: Served) -> None:
    assert (served.merged / "config.json").exists(), "postTraining.merge wrote the merged model"
    body = modelserve(
        f"{NAME}-merged",
        [],
        model={
            "source": f"pvc://shared/{served.merged.relative_to(served.claim)}",
            "servedModelName": "merged",
        },
        replicas=1,
        resources={"gpus": 0, "cpu": "2", "memory": "6Gi"},
        engine={"dtype": "float32", "maxModelLen": 512, "cpuKvCacheGib": 1},
    )
    merged = start_pod(served.cluster, served.api, served.namespace, body, served.claim, served.workdir)
    try:
        served.figures["merged_vllm_ready_seconds"] = merged.wait_ready()
        records = entities.heldout()
        answers = [entities.ask(merged, "merged", r) for r in records]
    finally:
        merged.stop()
    with_adapter = [entities.ask(served.pod, ADAPTER, r) for r in records]
    same = sum(a == b for a, b in zip(answers, with_adapter, strict=True))
    served.figures["merged_answers_equal"] = same
    shown = json.dumps({"merged": answers, "base+adapter": with_adapter}, indent=1)
    print(f"\nmerged against base+adapter ({same}/{len(records)} identical):\n{shown}")
    # Greedy decoding of the same weights, summed once (merged) or at each step (LoRA): float32 rounding
    # may flip a near-tie token, so one held-out sentence may differ.
    assert same >= len(records) - 1, shown


def test_the_adapter_removed_answers_404(served: Served) -> None:
    served.set_adapters([])
    wait_until(lambda: served.kubelet_sync() == {}, "the adapters ConfigMap to be empty", timeout=60)
    wait_until(
        lambda: served.pod.request("POST", "/v1/chat/completions", {"model": ADAPTER, "messages": [
            {"role": "user", "content": "hello"}], "max_tokens": 1})[0] == 404,
        "the removed adapter to answer 404",
        timeout=60,
    )  # fmt: skip
    assert ADAPTER not in served.pod.models()
    assert entities.ask(served.pod, BASE, entities.heldout()[0], max_tokens=4), "the base still answers"
