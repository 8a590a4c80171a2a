"""A ModelServe as deployed: the chart's operator (on the real node) renders the Deployment, the real kubelet
runs vLLM's CPU engine from an image of the pinned serve environment (images/vllm-cpu, standing in for vLLM's
own CPU image) beside the adapter-sync sidecar from the operator image, with the claim, the adapters
ConfigMap, the guard's ConfigMap and the token's emptyDir mounted as the pod says; clients reach it through
its Service. An adapter added to the ModelServe is served without a restart, as soon as the sidecar's watch
of the adapters ConfigMap sees the operator's write (the kubelet's refresh of the mounted copy took 69 s;
how long it takes now is recorded)."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest
from kubernetes import client

from tests.cluster import realnode
from tests.images.kubelet import VLLM_CPU_IMAGE
from tests.kube import wait_until
from tests.node.conftest import FIGURES
from tests.serve.conftest import build_tiny_model_here, train_adapter, trainer_python
from tests.specs import modelserve
from tests.worker.fixtures import SAMPLE_NER

pytestmark = pytest.mark.timeout(1500)

GROUP, VERSION, PLURAL = "kubetune.io", "v1alpha1", "modelserves"


@pytest.fixture
def served_claim(claim: tuple[str, Path], tmp_path: Path) -> Path:
    """The claim with the tiny model and an adapter the real LLaMA-Factory trained on it (on this machine,
    with the trainer environment: the trainer image may not be built), readable by vLLM's uid."""
    if not trainer_python().exists():
        pytest.skip(f"no trainer environment at {trainer_python()}: run `make trainer-venv`")
    _, root = claim
    build_tiny_model_here(root / "models" / "tiny", tmp_path)
    (root / "datasets").mkdir()
    (root / "datasets" / SAMPLE_NER.name).write_bytes(SAMPLE_NER.read_bytes())
    adapter = train_adapter(root, "serve", "ner", tmp_path)
    for path in (root, *root.rglob("*")):
        path.chmod(path.stat().st_mode | (0o755 if path.is_dir() else 0o644))
    return adapter.relative_to(root)


def complete(address: str, model: str) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://{address}/v1/completions",
        data=json.dumps(
            {"model": model, "prompt": "The quick brown fox", "max_tokens": 4, "temperature": 0}
        ).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {"text": error.read().decode(errors="replace")}


def models(address: str) -> list[str]:
    try:
        with urllib.request.urlopen(f"http://{address}/v1/models", timeout=10) as response:
            return [m["id"] for m in json.loads(response.read())["data"]]
    except OSError:
        return []


def test_serves_the_base_and_the_trained_adapter_through_its_service_and_adds_one_live(
    operator_pod: client.V1Pod, vllm_image: None, namespace: str, served_claim: Path, api: client.ApiClient
) -> None:
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    body = modelserve(
        "tiny",
        [{"name": "ner", "path": str(served_claim)}],
        model={"source": "pvc://shared/models/tiny", "servedModelName": "tiny"},
        replicas=1,
        resources={"gpus": 0, "cpu": "1", "memory": "6Gi", **realnode.PLACEMENT},
        engine={
            "image": VLLM_CPU_IMAGE, "imagePullPolicy": "IfNotPresent",
            "dtype": "float32", "maxModelLen": 512, "cpuKvCacheGib": 1,
        },
    )  # fmt: skip
    started = time.monotonic()
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

    def ready() -> dict | None:
        status = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "tiny").get(
            "status", {}
        )
        return status if status.get("phase") == "Ready" else None

    def pods_state() -> str:
        pods = core.list_namespaced_pod(namespace, label_selector="kubetune.io/modelserve=tiny").items
        return json.dumps([api.sanitize_for_serialization(p.status) for p in pods])[-3000:]

    status = wait_until(ready, "the ModelServe Ready", timeout=900)
    FIGURES["modelserve_to_ready_s"] = round(time.monotonic() - started, 1)
    (pod,) = core.list_namespaced_pod(namespace, label_selector="kubetune.io/modelserve=tiny").items
    assert pod.spec.node_name == realnode.NODE_NAME, pods_state()
    service = core.read_namespaced_service("tiny-vllm", namespace)
    address = f"{service.spec.cluster_ip}:{service.spec.ports[0].port}"  # kube-proxy's rules carry it
    assert complete(address, "tiny")[0] == 200
    code, answer = complete(address, "ner")
    assert code == 200, answer
    assert answer["model"] == "ner"
    assert status["adapters"] == [
        {"name": "ner", "path": str(served_claim), "ready": True, "loadedReplicas": 1}
    ]

    # A second adapter: the operator rewrites the ConfigMap, the sidecar's watch sees it and loads it (the
    # kubelet refreshes the mounted file only on its own schedule); no restart.
    edited = time.monotonic()
    adapters = [{"name": name, "path": str(served_claim)} for name in ("ner", "ner2")]
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "tiny", {"spec": {"adapters": adapters}}
    )
    wait_until(lambda: "ner2" in models(address), "the added adapter served", timeout=300)
    FIGURES["adapter_added_to_served_s"] = round(time.monotonic() - edited, 1)
    assert complete(address, "ner2")[0] == 200
    (again,) = core.list_namespaced_pod(namespace, label_selector="kubetune.io/modelserve=tiny").items
    assert again.metadata.uid == pod.metadata.uid
    assert again.status.container_statuses and all(
        c.restart_count == 0 for c in again.status.container_statuses
    )
