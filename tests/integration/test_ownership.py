"""Only what is ours: the operator never takes over, adopts or deletes an object its resource does not
control, keeps exactly one autoscaler, and two resources never render the same object."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.cluster import localcluster
from tests.integration.finetunejobs import FineTuneJobs
from tests.integration.test_modelserve import ModelServes
from tests.kube import wait_for_event, wait_until
from tests.specs import finetunejob, modelserve, with_pod_annotations

pytestmark = pytest.mark.usefixtures("operator")

SCALED_OBJECT_CRD = Path(__file__).resolve().parents[1] / "data" / "keda-scaledobject-crd.yaml"


def exists(read, *args) -> bool:
    try:
        read(*args)
        return True
    except ApiException as error:
        if error.status == 404:
            return False
        raise


def test_someone_elses_config_map_is_left_alone_and_named(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, core: client.CoreV1Api,
    batch: client.BatchV1Api,
) -> None:  # fmt: skip
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "ner-config"}, "data": {"belongs": "to someone else"}}
    )
    ftjs = FineTuneJobs(api, namespace)
    ftjs.create(finetunejob("ner"))

    status = ftjs.wait_reason("ner", "ChildConflict", timeout=30)
    assert status["phase"] == "Pending"
    assert "ConfigMap ner-config already exists and is not this resource's" in status["message"]
    assert "no controller" in status["message"] and "left alone" in status["message"]
    conflict = wait_for_event(core, namespace, "ner", "ChildConflict", timeout=15)
    assert conflict[0].type == "Warning" and "ConfigMap ner-config" in conflict[0].message
    config_map = core.read_namespaced_config_map("ner-config", namespace)
    assert config_map.data == {"belongs": "to someone else"}
    assert not config_map.metadata.owner_references
    assert not batch.list_namespaced_job(namespace).items, "nothing is started beside someone else's object"

    # Once the other object is gone, the FineTuneJob carries on by itself.
    core.delete_namespaced_config_map("ner-config", namespace)
    ftjs.wait_phase("ner", "Succeeded", timeout=90)
    uid = ftjs.get("ner")["metadata"]["uid"]
    owners = core.read_namespaced_config_map("ner-config", namespace).metadata.owner_references
    assert [(r.kind, r.uid) for r in owners] == [("FineTuneJob", uid)]


def test_a_service_of_another_resource_is_not_taken_over(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, core: client.CoreV1Api
) -> None:
    serves, ftjs = ModelServes(api, namespace), FineTuneJobs(api, namespace)
    serves.create(modelserve("qwen"))
    serves.wait("qwen", lambda s: s.get("phase") == "Ready", "Ready", timeout=60)
    serve_uid = serves.get("qwen")["metadata"]["uid"]
    # A FineTuneJob whose child would be named like the ModelServe's: with the old names, FineTuneJob
    # `qwen` and ModelServe `qwen-workers` both wanted Service `qwen-workers`. Today each has its own.
    ftjs.create(with_pod_annotations(finetunejob("qwen-vllm"), **{"test.kubetune.io/run_duration": "1s"}))
    serves.create(modelserve("qwen-vllm-workers"))
    ftjs.wait_phase("qwen-vllm", "Succeeded", timeout=90)
    serves.wait("qwen-vllm-workers", lambda s: s.get("phase") == "Ready", "Ready", timeout=60)
    owners = {
        s.metadata.name: [(r.kind, r.name) for r in s.metadata.owner_references]
        for s in core.list_namespaced_service(namespace).items
    }
    assert owners == {
        "qwen-vllm": [("ModelServe", "qwen")],
        "qwen-vllm-workers": [("FineTuneJob", "qwen-vllm")],
        "qwen-vllm-workers-vllm": [("ModelServe", "qwen-vllm-workers")],
    }
    assert core.read_namespaced_service("qwen-vllm", namespace).metadata.owner_references[0].uid == serve_uid


def test_someone_elses_autoscaler_is_neither_taken_over_nor_deleted(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, core: client.CoreV1Api
) -> None:
    autoscaling = client.AutoscalingV2Api(api)
    theirs = {
        "metadata": {"name": "qwen-vllm"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "something-else"},
            "minReplicas": 1,
            "maxReplicas": 7,
        },
    }
    autoscaling.create_namespaced_horizontal_pod_autoscaler(namespace, theirs)
    serves = ModelServes(api, namespace)
    serves.create(modelserve("qwen", autoscaling={"minReplicas": 1, "maxReplicas": 3}))
    status = serves.wait("qwen", lambda s: s.get("reason") == "ChildConflict", "ChildConflict", timeout=30)
    assert "HorizontalPodAutoscaler qwen-vllm already exists" in status["message"]
    hpa = autoscaling.read_namespaced_horizontal_pod_autoscaler("qwen-vllm", namespace)
    assert (hpa.spec.max_replicas, hpa.spec.scale_target_ref.name) == (7, "something-else")

    # Autoscaling removed: the operator deletes only an autoscaler it controls, so theirs stays.
    serves.patch("qwen", {"spec": {"autoscaling": None}})
    serves.wait("qwen", lambda s: s.get("phase") == "Ready", "Ready", timeout=60)
    hpa = autoscaling.read_namespaced_horizontal_pod_autoscaler("qwen-vllm", namespace)
    assert hpa.spec.max_replicas == 7


@pytest.fixture
def keda_crd(api: client.ApiClient) -> Iterator[None]:
    """KEDA's ScaledObject kind (its CRD only: the test checks what the operator creates and deletes)."""
    extensions = client.ApiextensionsV1Api(api)
    crd = yaml.safe_load(SCALED_OBJECT_CRD.read_text())
    extensions.create_custom_resource_definition(crd)
    name = crd["metadata"]["name"]
    wait_until(
        lambda: any(
            c.type == "Established" and c.status == "True"
            for c in extensions.read_custom_resource_definition(name).status.conditions or []
        ),
        "the ScaledObject CRD",
        timeout=30,
    )
    yield
    extensions.delete_custom_resource_definition(crd["metadata"]["name"])
    wait_until(
        lambda: not exists(extensions.read_custom_resource_definition, crd["metadata"]["name"]),
        "the ScaledObject CRD to go",
        timeout=60,
    )


def test_switching_the_autoscaler_leaves_exactly_one(
    keda_crd: None, namespace: str, claim: tuple[str, object], api: client.ApiClient
) -> None:
    autoscaling, custom = client.AutoscalingV2Api(api), client.CustomObjectsApi(api)
    serves = ModelServes(api, namespace)

    def autoscalers() -> list[str]:
        hpas = autoscaling.list_namespaced_horizontal_pod_autoscaler(namespace).items
        hpas = [h.metadata.name for h in hpas]
        scaled = custom.list_namespaced_custom_object("keda.sh", "v1alpha1", namespace, "scaledobjects")
        return [f"hpa/{n}" for n in hpas] + [f"scaledobject/{o['metadata']['name']}" for o in scaled["items"]]

    hpa = {"minReplicas": 1, "maxReplicas": 3}
    keda = {**hpa, "provider": "keda", "prometheusAddress": "http://prometheus.monitoring:9090"}
    serves.create(modelserve("qwen", autoscaling=hpa))
    wait_until(lambda: autoscalers() == ["hpa/qwen-vllm"], "the HPA", timeout=30)

    serves.patch("qwen", {"spec": {"autoscaling": keda}})
    wait_until(lambda: autoscalers() == ["scaledobject/qwen-vllm"], "the ScaledObject instead", timeout=30)

    serves.patch("qwen", {"spec": {"autoscaling": {**hpa, "provider": "hpa"}}})
    wait_until(lambda: autoscalers() == ["hpa/qwen-vllm"], "the HPA instead", timeout=30)

    serves.patch("qwen", {"spec": {"autoscaling": None}})
    wait_until(lambda: autoscalers() == [], "no autoscaler", timeout=30)


def test_an_orphaned_job_of_an_earlier_resource_is_not_adopted(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, batch: client.BatchV1Api,
    core: client.CoreV1Api, cluster: localcluster.ClusterInfo,
) -> None:  # fmt: skip
    ftjs = FineTuneJobs(api, namespace)
    body = with_pod_annotations(finetunejob("ner"), **{"test.kubetune.io/run_duration": "600s"})
    ftjs.create(body)
    ftjs.wait_phase("ner", "Running", timeout=60)
    localcluster.kubectl(cluster, "delete", "ftj/ner", "-n", namespace, "--cascade=orphan", "--wait=true")
    wait_until(
        lambda: not batch.read_namespaced_job("ner-a1", namespace).metadata.owner_references,
        "the orphaned Job to lose its owner",
        timeout=30,
    )
    ftjs.create(finetunejob("ner"))
    uid = ftjs.get("ner")["metadata"]["uid"]
    # The old attempt's Job still runs and writes the same output path: the new FineTuneJob waits for it,
    # and does not adopt it.
    status = ftjs.wait_reason("ner", "LeftoverJob", timeout=30)
    assert status.get("phase") != "Succeeded"
    assert not batch.read_namespaced_job("ner-a1", namespace).metadata.owner_references
    # Once it is gone, the new FineTuneJob starts, and takes back the static children the operator made.
    batch.delete_namespaced_job("ner-a1", namespace, propagation_policy="Background")
    wait_until(
        lambda: core.read_namespaced_config_map("ner-config", namespace).metadata.owner_references,
        "the ConfigMap to be re-adopted",
        timeout=60,
    )
    assert core.read_namespaced_config_map("ner-config", namespace).metadata.owner_references[0].uid == uid
    wait_until(
        lambda: [
            j
            for j in batch.list_namespaced_job(namespace).items
            if any(o.uid == uid for o in j.metadata.owner_references or [])
        ],
        "a Job of the new FineTuneJob",
        timeout=60,
    )
