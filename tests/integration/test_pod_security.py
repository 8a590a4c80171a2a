"""Pod Security: in a namespace that enforces "restricted", a FineTuneJob runs to Succeeded and a ModelServe
to Ready as they are; relaxed by `spec.podSecurity` beyond what the namespace allows, their pods are
refused by admission and the status says so."""

from __future__ import annotations

import pytest
from kubernetes import client

from tests.integration.finetunejobs import FineTuneJobs
from tests.integration.test_modelserve import ModelServes
from tests.kube import wait_until
from tests.specs import finetunejob, modelserve, with_pod_annotations

pytestmark = pytest.mark.usefixtures("operator")

RELAXED = {"allowPrivilegeEscalation": True, "runAsNonRoot": False, "runAsUser": 0}


@pytest.fixture
def restricted(namespace: str, core: client.CoreV1Api) -> str:
    labels = {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    core.patch_namespace(namespace, {"metadata": {"labels": labels}})
    return namespace


def test_a_finetunejob_succeeds_in_a_restricted_namespace(
    restricted: str, claim: tuple[str, object], api: client.ApiClient, core: client.CoreV1Api
) -> None:
    ftjs = FineTuneJobs(api, restricted)
    ftjs.create(with_pod_annotations(finetunejob("ner"), **{"test.kubetune.io/run_duration": "1s"}))
    ftjs.wait_phase("ner", "Succeeded", timeout=90)
    # The pods ran as the admission saw them: with the restricted settings.
    pod = core.list_namespaced_pod(restricted, label_selector="kubetune.io/finetunejob=ner").items[0]
    assert pod.spec.security_context.run_as_non_root is True
    assert pod.spec.security_context.seccomp_profile.type == "RuntimeDefault"
    assert pod.spec.containers[0].security_context.capabilities.drop == ["ALL"]


def test_a_finetunejob_relaxed_beyond_the_namespace_says_its_pods_were_refused(
    restricted: str, claim: tuple[str, object], api: client.ApiClient, core: client.CoreV1Api
) -> None:
    ftjs = FineTuneJobs(api, restricted)
    ftjs.create(finetunejob("root", podSecurity=RELAXED))
    status = ftjs.wait_reason("root", "PodsRefused", timeout=60)
    assert status["phase"] == "Pending"
    assert "refused" in status["message"] and 'violates PodSecurity "restricted:latest"' in status["message"]
    assert "allowPrivilegeEscalation" in status["message"]
    assert not core.list_namespaced_pod(restricted, label_selector="kubetune.io/finetunejob=root").items
    events = wait_until(
        lambda: [
            e
            for e in core.list_namespaced_event(restricted, field_selector="involvedObject.name=root").items
            if e.reason == "PodsRefused"
        ],
        "the PodsRefused Event",
        timeout=15,
    )
    assert events[0].type == "Warning"


def test_a_modelserve_is_ready_in_a_restricted_namespace(
    restricted: str, claim: tuple[str, object], api: client.ApiClient, core: client.CoreV1Api
) -> None:
    serves = ModelServes(api, restricted)
    serves.create(modelserve("qwen", adapters=[{"name": "ner", "path": "adapters/ner"}]))
    serves.wait("qwen", lambda s: s.get("phase") == "Ready", "Ready", timeout=90)
    pod = core.list_namespaced_pod(restricted, label_selector="kubetune.io/modelserve=qwen").items[0]
    assert pod.spec.automount_service_account_token is False
    tokens = {v.name for v in pod.spec.volumes if v.projected}
    vllm = next(c for c in pod.spec.containers if c.name == "vllm")
    assert not {m.name for m in vllm.volume_mounts} & tokens, "vLLM gets no ServiceAccount token"


def test_a_modelserve_relaxed_beyond_the_namespace_says_its_pods_were_refused(
    restricted: str, claim: tuple[str, object], api: client.ApiClient
) -> None:
    serves = ModelServes(api, restricted)
    serves.create(modelserve("qwen", podSecurity=RELAXED))
    status = serves.wait("qwen", lambda s: s.get("reason") == "PodsRefused", "PodsRefused", timeout=60)
    assert status["phase"] == "Pending"
    assert 'violates PodSecurity "restricted:latest"' in status["message"]
    ready = serves.condition("qwen", "Ready")
    assert ready["status"] == "False" and ready["reason"] == "PodsRefused"
