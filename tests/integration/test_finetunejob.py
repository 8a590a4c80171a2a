"""FineTuneJob scenarios on the local control plane, with the real operator process."""

from __future__ import annotations

import subprocess
import time

import pytest
from kubernetes import client

from tests.cluster import localcluster
from tests.integration.finetunejobs import FineTuneJobs
from tests.kube import events_about, wait_for_event, wait_until
from tests.specs import finetunejob, with_pod_annotations

pytestmark = pytest.mark.usefixtures("operator")

FTJ_LABEL = "kubetune.io/finetunejob"


def jobs_of(batch: client.BatchV1Api, namespace: str, name: str) -> list[client.V1Job]:
    return batch.list_namespaced_job(namespace, label_selector=f"{FTJ_LABEL}={name}").items


def test_runs_to_succeeded_on_gpu_nodes(
    namespace: str,
    claim: tuple[str, object],
    api: client.ApiClient,
    core: client.CoreV1Api,
    batch: client.BatchV1Api,
    cluster: localcluster.ClusterInfo,
) -> None:
    ftjs = FineTuneJobs(api, namespace)
    body = finetunejob("clue-ner", resources={"nodes": 2, "gpusPerNode": 8})
    # Held running until both pods have been seen at once (a short run could end on one node before the
    # scheduler placed the other there too, on a loaded machine).
    with_pod_annotations(body, **{"test.kubetune.io/hold": "true"})
    ftjs.create(body)

    # Children, all owned by the FineTuneJob, with deterministic names.
    uid = ftjs.get("clue-ner")["metadata"]["uid"]
    wait_until(lambda: jobs_of(batch, namespace, "clue-ner"), "the training Job", timeout=30)
    owned = [
        core.read_namespaced_config_map("clue-ner-config", namespace),
        core.read_namespaced_service("clue-ner-workers", namespace),
        core.read_namespaced_service_account("clue-ner-launcher", namespace),
        client.RbacAuthorizationV1Api(api).read_namespaced_role("clue-ner-launcher", namespace),
        batch.read_namespaced_job("clue-ner-a1", namespace),
    ]
    for child in owned:
        assert [(r.kind, r.uid, r.controller) for r in child.metadata.owner_references] == [
            ("FineTuneJob", uid, True)
        ], child.metadata.name
    job = owned[-1]
    assert (job.spec.completions, job.spec.parallelism, job.spec.completion_mode) == (2, 2, "Indexed")
    assert job.spec.template.spec.subdomain == "clue-ner-workers"

    running = ftjs.wait_phase("clue-ner", "Running", timeout=30)
    assert running["shape"] == "2x8"
    pods = core.list_namespaced_pod(namespace, label_selector=f"{FTJ_LABEL}=clue-ner").items
    assert len({p.spec.node_name for p in pods}) == 2
    for pod in pods:  # the training ends
        core.patch_namespaced_pod(
            pod.metadata.name, namespace, {"metadata": {"annotations": {"test.kubetune.io/hold": None}}}
        )

    # `kubectl wait` on the condition, as a user (or a pipeline) would.
    waited = subprocess.run(
        [cluster.kubectl, "--kubeconfig", cluster.kubeconfig, "-n", namespace, "wait",
         "--for=condition=Succeeded", "finetunejob/clue-ner", "--timeout=60s"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert waited.returncode == 0, waited.stderr
    status = ftjs.status("clue-ner")
    assert status["phase"] == "Succeeded"
    assert status["output"] == {
        "claim": "shared",
        "path": f"runs/{namespace}/clue-ner",
        "adapterPath": f"runs/{namespace}/clue-ner",
    }
    assert status["startTime"] <= status["completionTime"]
    assert status["observedGeneration"] == ftjs.get("clue-ner")["metadata"]["generation"]
    for reason in ("Training", "Completed"):
        wait_for_event(core, namespace, "clue-ner", reason, kind="FineTuneJob")

    printed = localcluster.kubectl(cluster, "get", "ftj", "-n", namespace)
    assert "Succeeded" in printed and "2x8" in printed


def test_failed_pod_restarts_then_fails_with_the_exit_code(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, batch: client.BatchV1Api,
    core: client.CoreV1Api,
) -> None:  # fmt: skip
    ftjs = FineTuneJobs(api, namespace)
    body = finetunejob("oom", maxRestarts=1)
    with_pod_annotations(
        body, **{"test.kubetune.io/exit_code": "137", "test.kubetune.io/exit_reason": "OOMKilled"}
    )
    ftjs.create(body)

    status = ftjs.wait_phase("oom", "Failed", timeout=60)
    assert status["restarts"] == 1
    assert status["attempt"] == 2
    assert status["reason"] == "RestartLimitExceeded"
    failed = ftjs.condition("oom", "Failed")
    assert failed["status"] == "True"
    assert "exited with code 137 (OOMKilled)" in failed["message"]
    # A new Job per attempt, on the same output path: the second resumes from the first's checkpoints.
    assert sorted(j.metadata.name for j in jobs_of(batch, namespace, "oom")) == ["oom-a1", "oom-a2"]
    configs = {
        env.name: env.value
        for j in jobs_of(batch, namespace, "oom")
        for env in j.spec.template.spec.containers[0].env
        if env.name == "KUBETUNE_OUTPUT_DIR"
    }
    assert len(set(configs.values())) == 1
    # Events are recorded in the background, after the status they go with: waited for, not read at once.
    wanted = {"AttemptFailed", "Restarting", "RestartLimitExceeded"}
    wait_until(
        lambda: wanted <= {e.reason for e in events_about(core, namespace, "oom", "FineTuneJob")},
        "the attempts' Events",
        timeout=30,
    )


def test_suspend_removes_pods_and_resume_brings_them_back(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, core: client.CoreV1Api
) -> None:
    ftjs = FineTuneJobs(api, namespace)
    ftjs.create(with_pod_annotations(finetunejob("pausable"), **{"test.kubetune.io/hold": "true"}))
    ftjs.wait_phase("pausable", "Running", timeout=30)

    ftjs.patch("pausable", {"spec": {"suspend": True}})
    status = ftjs.wait_phase("pausable", "Suspended", timeout=30)
    assert ftjs.condition("pausable", "Suspended")["status"] == "True"
    wait_until(
        lambda: not core.list_namespaced_pod(namespace, label_selector=f"{FTJ_LABEL}=pausable").items,
        "the pods to go away",
        timeout=30,
    )
    assert status["attempt"] == 1

    ftjs.patch("pausable", {"spec": {"suspend": False}})
    status = ftjs.wait_phase("pausable", "Running", timeout=30)
    assert status["attempt"] == 1, "resuming is not a restart"
    assert ftjs.condition("pausable", "Suspended")["status"] == "False"


def test_more_gpus_than_a_node_has_stays_pending_with_the_schedulers_words(
    namespace: str, claim: tuple[str, object], api: client.ApiClient
) -> None:
    ftjs = FineTuneJobs(api, namespace)
    ftjs.create(finetunejob("too-big", resources={"nodes": 1, "gpusPerNode": 16}))
    status = ftjs.wait_reason("too-big", "Unschedulable", timeout=60)
    assert status["phase"] == "Pending"
    assert "Insufficient nvidia.com/gpu" in status["message"]


def test_missing_claim_waits_then_proceeds(
    namespace: str, api: client.ApiClient, core: client.CoreV1Api, batch: client.BatchV1Api, request
) -> None:
    ftjs = FineTuneJobs(api, namespace)
    ftjs.create(finetunejob("early"))
    status = ftjs.wait_reason("early", "MissingClaim", timeout=30)
    assert status["phase"] == "Pending"
    assert "PersistentVolumeClaim shared not found" in status["message"]
    assert not jobs_of(batch, namespace, "early"), "nothing is allocated before the claim exists"

    request.getfixturevalue("claim")
    ftjs.wait_phase("early", "Succeeded", timeout=60)


def test_delete_removes_children_and_keeps_the_claim(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, core: client.CoreV1Api,
    batch: client.BatchV1Api,
) -> None:  # fmt: skip
    _, root = claim
    checkpoint = root / "runs" / namespace / "gone" / "checkpoint-100"
    checkpoint.mkdir(parents=True)
    (checkpoint / "adapter_model.safetensors").write_bytes(b"weights")

    ftjs = FineTuneJobs(api, namespace)
    ftjs.create(with_pod_annotations(finetunejob("gone"), **{"test.kubetune.io/hold": "true"}))
    ftjs.wait_phase("gone", "Running", timeout=30)
    ftjs.delete("gone")

    wait_until(lambda: not ftjs.exists("gone"), "the FineTuneJob to be deleted", timeout=30)
    wait_until(lambda: not jobs_of(batch, namespace, "gone"), "the Job to be collected", timeout=60)
    wait_until(
        lambda: not core.list_namespaced_config_map(namespace, label_selector=f"{FTJ_LABEL}=gone").items,
        "the ConfigMap to be collected",
        timeout=60,
    )
    assert (checkpoint / "adapter_model.safetensors").read_bytes() == b"weights"
    assert core.read_namespaced_persistent_volume_claim("shared", namespace).status.phase == "Bound"


def test_operator_killed_mid_reconcile_creates_no_duplicates(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, batch: client.BatchV1Api, operator
) -> None:
    ftjs = FineTuneJobs(api, namespace)
    names = [f"burst-{i}" for i in range(8)]
    for name in names:
        ftjs.create(with_pod_annotations(finetunejob(name), **{"test.kubetune.io/run_duration": "3s"}))
    time.sleep(0.5)  # some reconciles are under way, some not started
    operator.kill()
    operator.start()

    for name in names:
        ftjs.wait_phase(name, "Succeeded", timeout=90)
    for name in names:
        assert [j.metadata.name for j in jobs_of(batch, namespace, name)] == [f"{name}-a1"]
        assert ftjs.status(name)["restarts"] == 0


def test_queued_job_waits_for_kueue_admission(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, batch: client.BatchV1Api
) -> None:
    ftjs = FineTuneJobs(api, namespace)
    ftjs.create(finetunejob("queued", queueName="team-a-gpus"))
    status = ftjs.wait_reason("queued", "Queued", timeout=30)
    assert status["phase"] == "Pending"
    assert "team-a-gpus" in status["message"]
    job = batch.read_namespaced_job("queued-a1", namespace)
    assert job.spec.suspend is True
    assert job.metadata.labels["kueue.x-k8s.io/queue-name"] == "team-a-gpus"

    # Kueue admits a workload by unsuspending its Job; the operator must not suspend it again.
    batch.patch_namespaced_job("queued-a1", namespace, {"spec": {"suspend": False}})
    ftjs.wait_phase("queued", "Succeeded", timeout=60)
    assert batch.read_namespaced_job("queued-a1", namespace).spec.suspend is False


def test_metrics_count_reconciles_and_phases(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, operator
) -> None:
    ftjs = FineTuneJobs(api, namespace)
    ftjs.create(finetunejob("measured"))
    ftjs.wait_phase("measured", "Succeeded", timeout=60)
    metrics = wait_until(
        lambda: (m := operator.metrics()) and 'kubetune_finetunejobs{phase="Succeeded"}' in m and m,
        "the resync to count phases",
        timeout=30,
    )
    assert 'kubetune_reconciles_total{kind="FineTuneJob",result="changed"}' in metrics
    assert "kubetune_reconcile_duration_seconds_bucket" in metrics
