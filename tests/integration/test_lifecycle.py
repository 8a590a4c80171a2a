"""A FineTuneJob's lifecycle tells the truth (issue 10): spec edits, re-creation, failures, pods that
cannot start, and disruptions, on the local control plane with the real operator process."""

from __future__ import annotations

import time

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.cluster import localcluster
from tests.integration.finetunejobs import (
    FineTuneJobs,
    delete_orphaning,
    job_condition,
    jobs_of,
    pods_of,
)
from tests.integration.test_gitops import argocd_health
from tests.kube import wait_for_event, wait_until
from tests.specs import finetunejob, with_pod_annotations

pytestmark = pytest.mark.usefixtures("operator")

HOLD = {"test.kubetune.io/hold": "true"}
RESYNC_SECONDS = 5  # the operator fixture's KUBETUNE_RESYNC_SECONDS


def condition_of(status: dict, type_: str) -> dict:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


def release(core: client.CoreV1Api, namespace: str, pod: client.V1Pod, *annotations: str) -> None:
    """Removes test annotations from a pod (a merge patch with null deletes a key)."""
    patch = {"metadata": {"annotations": dict.fromkeys(annotations)}}
    core.patch_namespaced_pod(pod.metadata.name, namespace, patch)


@pytest.fixture
def lingering(namespace: str, core: client.CoreV1Api):
    """Pods told to linger are let go at the end, pass or fail: the namespace could not go otherwise."""
    yield
    for pod in core.list_namespaced_pod(namespace).items:
        if "test.kubetune.io/linger" in (pod.metadata.annotations or {}):
            release(core, namespace, pod, "test.kubetune.io/linger")


# --- 1. an edit that makes the spec invalid does not end the running attempt ------------------------


def test_a_typo_edited_into_a_running_job_keeps_it_running(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, core: client.CoreV1Api,
    batch: client.BatchV1Api,
) -> None:  # fmt: skip
    ftjs = FineTuneJobs(api, namespace)
    ftjs.create(with_pod_annotations(finetunejob("edited", ttlSecondsAfterFinished=0), **HOLD))
    ftjs.wait_phase("edited", "Running", timeout=30)

    ftjs.patch("edited", {"spec": {"config": {"lora_rnak": 16}}})
    status = ftjs.wait(
        "edited",
        lambda s: condition_of(s, "SpecValid").get("status") == "False",
        "SpecValid=False",
        timeout=30,
    )
    time.sleep(2 * RESYNC_SECONDS + 1)  # two resyncs: a TTL would have fired by now

    assert ftjs.exists("edited")
    status = ftjs.status("edited")
    assert (status["phase"], status["reason"]) == ("Running", "Training")
    assert "completionTime" not in status
    assert condition_of(status, "Failed")["status"] == "False"
    spec_valid = condition_of(status, "SpecValid")
    assert spec_valid["reason"] == "InvalidConfig" and "lora_rnak" in spec_valid["message"]
    # Flux (kstatus) reads Stalled: the applied spec is refused, though the attempt runs.
    assert condition_of(status, "Stalled")["status"] == "True"
    assert condition_of(status, "Reconciling")["status"] == "False"
    health = argocd_health("FineTuneJob", ftjs.get("edited"))
    assert health["status"] == "Degraded" and "lora_rnak" in health["message"]
    job = batch.read_namespaced_job("edited-a1", namespace)
    assert job_condition(job, "Failed") is None and job.metadata.deletion_timestamp is None
    refusals = wait_for_event(core, namespace, "edited", "InvalidConfig", kind="FineTuneJob")
    assert any(e.type == "Warning" and "lora_rnak" in e.message for e in refusals)

    # It can still be paused, and once fixed it resumes the same attempt.
    ftjs.patch("edited", {"spec": {"suspend": True}})
    ftjs.wait_phase("edited", "Suspended", timeout=30)
    ftjs.patch("edited", {"spec": {"suspend": False, "config": {"lora_rnak": None}}})
    status = ftjs.wait(
        "edited",
        lambda s: s["phase"] == "Running" and condition_of(s, "SpecValid").get("status") == "True",
        "Running with a valid spec",
        timeout=30,
    )
    assert status["attempt"] == 1 and ftjs.exists("edited")


# --- 2. children are found by owner uid: a re-created FineTuneJob adopts nothing ---------------------


def test_recreated_after_an_orphaning_delete_it_does_not_adopt_the_old_succeeded_job(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, core: client.CoreV1Api,
    batch: client.BatchV1Api,
) -> None:  # fmt: skip
    ftjs = FineTuneJobs(api, namespace)
    ftjs.create(finetunejob("again"))
    ftjs.wait_phase("again", "Succeeded", timeout=60)
    delete_orphaning(ftjs, "again")
    wait_until(lambda: not ftjs.exists("again"), "the FineTuneJob to go", timeout=30)
    wait_until(
        lambda: not batch.read_namespaced_job("again-a1", namespace).metadata.owner_references,
        "the old Job to be orphaned",
        timeout=30,
    )

    ftjs.create(with_pod_annotations(finetunejob("again"), **HOLD))
    uid = ftjs.get("again")["metadata"]["uid"]
    status = ftjs.wait_phase("again", "Running", timeout=30)
    assert status["attempt"] == 2 and status["restarts"] == 0, "a2: the old Job keeps a1's name"
    owned = {
        j.metadata.name
        for j in jobs_of(batch, namespace, "again")
        if any(r.uid == uid for r in j.metadata.owner_references or [])
    }
    assert owned == {"again-a2"}
    assert batch.read_namespaced_job("again-a1", namespace).metadata.owner_references is None

    (pod,) = pods_of(core, namespace, "again", attempt=2)
    release(core, namespace, pod, "test.kubetune.io/hold")
    ftjs.wait_phase("again", "Succeeded", timeout=60)


def test_an_old_failed_job_uses_up_no_restart_of_a_recreated_one(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, batch: client.BatchV1Api
) -> None:
    ftjs = FineTuneJobs(api, namespace)
    ftjs.create(with_pod_annotations(finetunejob("phoenix"), **{"test.kubetune.io/exit-code": "1"}))
    ftjs.wait_phase("phoenix", "Failed", timeout=60)
    delete_orphaning(ftjs, "phoenix")
    wait_until(lambda: not ftjs.exists("phoenix"), "the FineTuneJob to go", timeout=30)

    ftjs.create(finetunejob("phoenix"))  # maxRestarts: 0, and this time it works
    status = ftjs.wait_phase("phoenix", "Succeeded", timeout=60)
    assert status["restarts"] == 0
    assert job_condition(batch.read_namespaced_job("phoenix-a1", namespace), "Failed") is not None


# --- 3. a failed attempt is seen at FailureTarget, not after the other pods' grace period -------------


def test_a_failure_is_reported_while_the_other_pods_still_terminate(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, core: client.CoreV1Api,
    batch: client.BatchV1Api, lingering: None,
) -> None:  # fmt: skip
    ftjs = FineTuneJobs(api, namespace)
    body = finetunejob("slow-stop", maxRestarts=1, resources={"nodes": 2, "gpusPerNode": 8})
    ftjs.create(with_pod_annotations(body, **HOLD, **{"test.kubetune.io/linger": "true"}))
    ftjs.wait_phase("slow-stop", "Running", timeout=30)
    pods = {p.metadata.annotations["batch.kubernetes.io/job-completion-index"]: p
            for p in pods_of(core, namespace, "slow-stop", attempt=1)}  # fmt: skip

    exit_code = {"test.kubetune.io/exit-code": "137", "test.kubetune.io/exit-reason": "OOMKilled"}
    core.patch_namespaced_pod(pods["1"].metadata.name, namespace, {"metadata": {"annotations": exit_code}})
    status = ftjs.wait_reason("slow-stop", "Restarting", timeout=30)
    assert "node rank 1" in status["message"] and "exited with code 137 (OOMKilled)" in status["message"]
    job = batch.read_namespaced_job("slow-stop-a1", namespace)
    assert job_condition(job, "FailureTarget") is not None
    assert job_condition(job, "Failed") is None, "rank 0 is still stopping: the Job has not concluded"
    assert [j.metadata.name for j in jobs_of(batch, namespace, "slow-stop")] == ["slow-stop-a1"], (
        "no second attempt while the first one's pods still write"
    )

    release(core, namespace, pods["0"], "test.kubetune.io/linger")
    wait_until(lambda: len(jobs_of(batch, namespace, "slow-stop")) == 2, "attempt 2", timeout=30)
    status = ftjs.wait_phase("slow-stop", "Running", timeout=30)
    assert (status["attempt"], status["restarts"]) == (2, 1)


def test_with_no_restart_left_it_is_failed_at_failure_target(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, core: client.CoreV1Api,
    batch: client.BatchV1Api, lingering: None,
) -> None:  # fmt: skip
    ftjs = FineTuneJobs(api, namespace)
    body = finetunejob("last-try", resources={"nodes": 2, "gpusPerNode": 8})
    ftjs.create(with_pod_annotations(body, **HOLD, **{"test.kubetune.io/linger": "true"}))
    ftjs.wait_phase("last-try", "Running", timeout=30)
    pods = pods_of(core, namespace, "last-try", attempt=1)
    exit_code = {"test.kubetune.io/exit-code": "3"}
    core.patch_namespaced_pod(pods[0].metadata.name, namespace, {"metadata": {"annotations": exit_code}})

    status = ftjs.wait_phase("last-try", "Failed", timeout=30)
    assert "exited with code 3 (Error)" in status["message"]
    assert job_condition(batch.read_namespaced_job("last-try-a1", namespace), "Failed") is None


# --- 4. a pod that cannot start says why -----------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "waiting", "reason", "message_has"),
    [
        pytest.param(
            {"model": {"source": "hf://Qwen/Qwen2.5-0.5B-Instruct", "template": "qwen"}},
            "CrashLoopBackOff",
            "CrashLoopBackOff",
            ["init container fetch-model", "CrashLoopBackOff", "401 Client Error"],
            id="init-container-crash-loop",
        ),
        pytest.param(
            {"image": "registry.example/kubetune/trainer:nope"},
            "ErrImagePull",
            "ImagePullError",
            ["container trainer", "ErrImagePull", "401 Client Error"],
            id="image-pull-error",
        ),
    ],
)
def test_a_pod_that_cannot_start_says_why(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, overrides: dict, waiting: str,
    reason: str, message_has: list[str],
) -> None:  # fmt: skip
    ftjs = FineTuneJobs(api, namespace)
    annotations = {
        "test.kubetune.io/waiting-reason": waiting,
        "test.kubetune.io/waiting-message": "401 Client Error: Unauthorized",
    }
    ftjs.create(with_pod_annotations(finetunejob("stuck", **overrides), **annotations))
    status = ftjs.wait_reason("stuck", reason, timeout=30)
    assert status["phase"] == "Pending"
    for part in message_has:
        assert part in status["message"]


def test_pods_refused_at_creation_are_reported(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, core: client.CoreV1Api
) -> None:
    quota = {"metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}}
    core.create_namespaced_resource_quota(namespace, quota)
    ftjs = FineTuneJobs(api, namespace)
    ftjs.create(finetunejob("refused"))
    status = ftjs.wait_reason("refused", "PodsRefused", timeout=60)
    assert status["phase"] == "Pending"
    assert "exceeded quota" in status["message"] or "forbidden" in status["message"]
    wait_for_event(core, namespace, "refused", "PodsRefused", kind="FineTuneJob", timeout=10)


# --- 10. disruptions are not failures ---------------------------------------------------------------


def test_an_evicted_pod_starts_the_next_attempt_without_using_a_restart(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, core: client.CoreV1Api,
    batch: client.BatchV1Api,
) -> None:  # fmt: skip
    ftjs = FineTuneJobs(api, namespace)
    ftjs.create(with_pod_annotations(finetunejob("drained"), **HOLD))  # maxRestarts: 0
    ftjs.wait_phase("drained", "Running", timeout=30)
    (pod,) = pods_of(core, namespace, "drained", attempt=1)

    # What `kubectl drain` does to each pod.
    eviction = {"metadata": {"name": pod.metadata.name, "namespace": namespace}}
    core.create_namespaced_pod_eviction(pod.metadata.name, namespace, eviction)

    status = ftjs.wait("drained", lambda s: s.get("attempt") == 2 and s["phase"] == "Running", "attempt 2")
    assert (status["restarts"], status["disruptions"]) == (0, 1)
    first = batch.read_namespaced_job("drained-a1", namespace)
    assert job_condition(first, "Failed").reason == "PodFailurePolicy"
    assert "DisruptionTarget" in job_condition(first, "Failed").message
    # The next attempt writes (and resumes from) the same output directory.
    second = batch.read_namespaced_job("drained-a2", namespace)
    assert output_dir(first) == output_dir(second)
    wait_for_event(core, namespace, "drained", "AttemptDisrupted", kind="FineTuneJob")


def output_dir(job: client.V1Job) -> str:
    env = job.spec.template.spec.containers[0].env
    return next(e.value for e in env if e.name == "KUBETUNE_OUTPUT_DIR")


def test_a_pod_lost_with_its_node_starts_the_next_attempt_without_using_a_restart(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, core: client.CoreV1Api,
    batch: client.BatchV1Api, cluster: localcluster.ClusterInfo,
) -> None:  # fmt: skip
    ftjs = FineTuneJobs(api, namespace)
    ftjs.create(with_pod_annotations(finetunejob("lost"), **HOLD))  # maxRestarts: 0
    ftjs.wait_phase("lost", "Running", timeout=30)
    (pod,) = pods_of(core, namespace, "lost", attempt=1)
    try:
        core.delete_node(pod.spec.node_name)
        # The pod GC controller fails the pods of a node that is gone (after a 40 s quarantine), with
        # DisruptionTarget (DeletionByPodGC).
        status = ftjs.wait(
            "lost", lambda s: s.get("attempt") == 2 and s["phase"] == "Running", "attempt 2", timeout=150
        )
        assert (status["restarts"], status["disruptions"]) == (0, 1)
        failed = job_condition(batch.read_namespaced_job("lost-a1", namespace), "Failed")
        assert failed.reason == "PodFailurePolicy" and "DisruptionTarget" in failed.message
    finally:
        localcluster.add_nodes(cluster, localcluster.NodePool(**cluster.nodes))


# --- 12. storage.path stays on the claim and apart from other jobs ----------------------------------


@pytest.mark.parametrize("path", ["../team-b/runs", "runs/../../etc", "."])
def test_an_output_path_off_the_claim_is_refused_at_apply(
    namespace: str, api: client.ApiClient, path: str
) -> None:
    ftjs = FineTuneJobs(api, namespace)
    with pytest.raises(ApiException) as refused:
        ftjs.create(finetunejob("escape", storage={"claim": "shared", "path": path}))
    assert refused.value.status == 422
    assert "storage.path must stay on the claim" in refused.value.body


def test_an_output_path_of_another_job_is_refused(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, batch: client.BatchV1Api
) -> None:
    ftjs = FineTuneJobs(api, namespace)
    ftjs.create(with_pod_annotations(finetunejob("first"), **HOLD))
    ftjs.wait_phase("first", "Running", timeout=30)
    ftjs.create(finetunejob("second", storage={"claim": "shared", "path": f"runs//{namespace}/first/"}))
    status = ftjs.wait_reason("second", "OutputPathInUse", timeout=30)
    assert f"FineTuneJob first's default output path runs/{namespace}/first" in status["message"]
    assert not jobs_of(batch, namespace, "second"), "nothing starts on another job's output"
    assert ftjs.status("first")["phase"] == "Running", "the older job is left alone"

    # Two set paths: the newer job is refused, whether its path is the same, inside or above.
    ftjs.create(finetunejob("third", storage={"claim": "shared", "path": "experiments/ner"}))
    ftjs.wait_phase("third", "Succeeded", timeout=60)
    ftjs.create(finetunejob("fourth", storage={"claim": "shared", "path": "experiments"}))
    status = ftjs.wait_reason("fourth", "OutputPathInUse", timeout=30)
    assert "FineTuneJob third's output path experiments/ner" in status["message"]
