"""The local control plane is the real thing: GPU nodes, the scheduler, the Job controller, CRDs."""

from __future__ import annotations

import time

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.kube import wait_established, wait_until, widget_crd

GPU = "nvidia.com/gpu"
PAUSE = "registry.k8s.io/pause:3.10"


def gpu_pod_spec(gpus: int, restart_policy: str = "Never") -> client.V1PodSpec:
    return client.V1PodSpec(
        restart_policy=restart_policy,
        containers=[
            client.V1Container(
                name="trainer",
                image=PAUSE,
                resources=client.V1ResourceRequirements(limits={GPU: str(gpus)}),
            )
        ],
    )


def test_gpu_nodes_are_ready_with_eight_gpus(core: client.CoreV1Api) -> None:
    nodes = core.list_node(label_selector="type=kwok").items
    assert len(nodes) == 2
    for node in nodes:
        ready = {c.type: c.status for c in node.status.conditions}["Ready"]
        assert ready == "True", node.metadata.name
        assert node.status.allocatable[GPU] == "8"
        assert node.metadata.labels["nvidia.com/gpu.product"]
        assert not node.spec.taints, "fake GPU nodes must be schedulable without tolerations"


def test_indexed_job_runs_one_pod_per_node_and_completes(
    namespace: str, core: client.CoreV1Api, batch: client.BatchV1Api
) -> None:
    job = client.V1Job(
        metadata=client.V1ObjectMeta(name="two-node-train"),
        spec=client.V1JobSpec(
            completions=2,
            parallelism=2,
            completion_mode="Indexed",
            backoff_limit=0,
            template=client.V1PodTemplateSpec(spec=gpu_pod_spec(8)),
        ),
    )
    batch.create_namespaced_job(namespace, job)

    def complete() -> bool:
        conditions = batch.read_namespaced_job_status("two-node-train", namespace).status.conditions or []
        assert not any(c.type == "Failed" and c.status == "True" for c in conditions), conditions
        return any(c.type == "Complete" and c.status == "True" for c in conditions)

    wait_until(complete, "the Job to complete", timeout=90)
    pods = core.list_namespaced_pod(namespace, label_selector="job-name=two-node-train").items
    assert sorted(p.metadata.annotations["batch.kubernetes.io/job-completion-index"] for p in pods) == [
        "0",
        "1",
    ]
    assert all(p.status.phase == "Succeeded" for p in pods)
    assert len({p.spec.node_name for p in pods}) == 2, "8 GPUs each: the two pods need two nodes"


def test_pod_asking_for_nine_gpus_is_unschedulable(namespace: str, core: client.CoreV1Api) -> None:
    pod = client.V1Pod(metadata=client.V1ObjectMeta(name="too-big"), spec=gpu_pod_spec(9))
    core.create_namespaced_pod(namespace, pod)

    def scheduled_condition():
        status = core.read_namespaced_pod_status("too-big", namespace).status
        return next((c for c in status.conditions or [] if c.type == "PodScheduled"), None)

    condition = wait_until(scheduled_condition, "the scheduler's verdict", timeout=60)
    assert condition.status == "False"
    assert condition.reason == "Unschedulable"
    assert f"Insufficient {GPU}" in condition.message
    assert core.read_namespaced_pod("too-big", namespace).status.phase == "Pending"


@pytest.mark.parametrize(("exit_code", "reason"), [("137", "OOMKilled"), ("1", None)])
def test_pod_told_to_fail_ends_failed_with_that_exit_code(
    namespace: str, core: client.CoreV1Api, exit_code: str, reason: str | None
) -> None:
    annotations = {"test.kubetune.io/exit-code": exit_code}
    if reason:
        annotations["test.kubetune.io/exit-reason"] = reason
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="doomed", annotations=annotations), spec=gpu_pod_spec(1)
    )
    core.create_namespaced_pod(namespace, pod)

    status = wait_until(
        lambda: (s := core.read_namespaced_pod_status("doomed", namespace).status).phase == "Failed" and s,
        "the pod to fail",
        timeout=60,
    )
    terminated = status.container_statuses[0].state.terminated
    assert terminated.exit_code == int(exit_code)
    assert terminated.reason == (reason or "Error")


def test_held_pod_stays_running_until_released(
    namespace: str, core: client.CoreV1Api, batch: client.BatchV1Api
) -> None:
    template = client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(annotations={"test.kubetune.io/hold": "true"}),
        spec=gpu_pod_spec(1),
    )
    batch.create_namespaced_job(
        namespace,
        client.V1Job(
            metadata=client.V1ObjectMeta(name="held"),
            spec=client.V1JobSpec(backoff_limit=0, template=template),
        ),
    )

    def running_pod():
        pods = core.list_namespaced_pod(namespace, label_selector="job-name=held").items
        return pods and pods[0].status.phase == "Running" and pods[0]

    pod = wait_until(running_pod, "the held pod to run", timeout=60)
    time.sleep(5)  # well past the default run time of a Job's pod (2s)
    assert core.read_namespaced_pod(pod.metadata.name, namespace).status.phase == "Running"

    core.patch_namespaced_pod(
        pod.metadata.name, namespace, {"metadata": {"annotations": {"test.kubetune.io/hold": None}}}
    )
    wait_until(
        lambda: core.read_namespaced_pod(pod.metadata.name, namespace).status.phase == "Succeeded",
        "the released pod to succeed",
        timeout=30,
    )


def test_custom_resource_definition_is_served(api: client.ApiClient, namespace: str) -> None:
    extensions = client.ApiextensionsV1Api(api)
    custom = client.CustomObjectsApi(api)
    group, plural = "smoke.test.kubetune.io", "widgets"
    crd = widget_crd(
        group,
        {
            "spec": {"type": "object", "properties": {"gpus": {"type": "integer", "minimum": 1}}},
            "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
        },
    )
    try:
        extensions.create_custom_resource_definition(crd)
    except ApiException as error:
        if error.status != 409:
            raise
    try:
        _exercise_widgets(extensions, custom, group, plural, namespace)
    finally:
        extensions.delete_custom_resource_definition(f"{plural}.{group}")


def _exercise_widgets(extensions, custom, group: str, plural: str, namespace: str) -> None:
    wait_established(extensions, f"{plural}.{group}")
    body = {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"gpus": 8}}
    wait_until(
        lambda: _create_or_none(custom, group, namespace, plural, body), "the new API to serve", timeout=30
    )
    got = custom.get_namespaced_custom_object(group, "v1", namespace, plural, "w")
    assert got["spec"] == {"gpus": 8}

    custom.patch_namespaced_custom_object_status(
        group, "v1", namespace, plural, "w", {"status": {"phase": "Running"}}
    )
    assert custom.get_namespaced_custom_object(group, "v1", namespace, plural, "w")["status"] == {
        "phase": "Running"
    }

    # The schema is enforced by the API server: gpus must be >= 1.
    bad = {**body, "metadata": {"name": "bad"}, "spec": {"gpus": 0}}
    with pytest.raises(ApiException) as rejected:
        custom.create_namespaced_custom_object(group, "v1", namespace, plural, bad)
    assert rejected.value.status == 422
    assert "spec.gpus" in rejected.value.body


def _create_or_none(custom: client.CustomObjectsApi, group: str, namespace: str, plural: str, body: dict):
    try:
        return custom.create_namespaced_custom_object(group, "v1", namespace, plural, body)
    except ApiException as error:
        if error.status == 404:  # discovery has not caught up with the new CRD yet
            return None
        raise
