"""ModelServe scenarios on the local control plane, with the real operator process."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from kubernetes import client

from kubetune.launcher.adapter_sync import AdapterReport, Reporter, report_document
from tests.cluster import localcluster
from tests.integration.finetunejobs import FineTuneJobs, KubetuneResources
from tests.kube import wait_until
from tests.serve.pod import token_kubeconfig
from tests.specs import finetunejob, modelserve, with_pod_annotations

pytestmark = pytest.mark.usefixtures("operator")

GROUP, VERSION, PLURAL = "kubetune.io", "v1alpha1", "modelserves"


class ModelServes(KubetuneResources):
    plural = PLURAL


def report_as_the_sidecars(
    cluster: localcluster.ClusterInfo,
    api: client.ApiClient,
    namespace: str,
    name: str,
    tmp: Any,
    state: str = "Loaded",
    message: str | None = None,
) -> dict[str, str]:
    """What each running pod's adapter-sync sidecar does once its vLLM has the adapters: reports them into
    the report ConfigMap, with the sidecar's own token and code (KWOK's pods run no containers)."""
    core = client.CoreV1Api(api)
    desired = json.loads(core.read_namespaced_config_map(f"{name}-adapters", namespace).data["adapters.json"])
    kubeconfig = token_kubeconfig(cluster, namespace, f"{name}-adapter-sync", tmp / f"{name}-sa.kubeconfig")
    pods = core.list_namespaced_pod(namespace, label_selector=f"kubetune.io/modelserve={name}").items
    for pod in pods:
        if pod.status.phase != "Running":
            continue
        reports = {n: AdapterReport(state, path, message) for n, path in desired.items()}
        Reporter(f"{name}-adapter-report", namespace, pod.metadata.name, str(kubeconfig)).send(
            report_document(reports, claim="/mnt/claim")
        )
    return desired


def deployment_args(apps: client.AppsV1Api, namespace: str, name: str) -> list[str]:
    return apps.read_namespaced_deployment(f"{name}-vllm", namespace).spec.template.spec.containers[0].args


def test_serves_the_base_model_and_a_path_adapter(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, core: client.CoreV1Api,
    cluster: localcluster.ClusterInfo, tmp_path: Any,
) -> None:  # fmt: skip
    serves = ModelServes(api, namespace)
    serves.create(modelserve("qwen", adapters=[{"name": "other", "path": "adapters/other"}]))
    status = serves.wait("qwen", lambda s: s.get("phase") == "Ready", "the base model to be served")
    assert status["servedModels"] == ["qwen2.5-7b"], "not before a vLLM replica says it loaded the adapter"
    assert serves.condition("qwen", "AdaptersReady")["reason"] == "Loading"
    report_as_the_sidecars(cluster, api, namespace, "qwen", tmp_path)

    waited = subprocess.run(
        [cluster.kubectl, "--kubeconfig", cluster.kubeconfig, "-n", namespace, "wait",
         "--for=condition=Ready", "modelserve/qwen", "--timeout=90s"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert waited.returncode == 0, waited.stderr + json.dumps(serves.status("qwen"))
    status = serves.status("qwen")
    assert status["phase"] == "Ready"
    assert status["endpoint"] == f"http://qwen-vllm.{namespace}.svc:8000/v1"
    status = serves.wait("qwen", lambda s: s.get("servedModels") == ["qwen2.5-7b", "other"], "other served")
    assert serves.condition("qwen", "AdaptersReady")["status"] == "True"
    assert status["adapters"] == [
        {"name": "other", "path": "adapters/other", "ready": True, "loadedReplicas": 1}
    ]

    apps = client.AppsV1Api(api)
    deployment = apps.read_namespaced_deployment("qwen-vllm", namespace)
    pod_spec = deployment.spec.template.spec
    vllm = pod_spec.containers[0]
    assert vllm.command == ["vllm", "serve"]
    assert vllm.args[0] == "/mnt/claim/models/Qwen2.5-7B-Instruct"
    assert "--enable-lora" in vllm.args
    assert vllm.resources.limits["nvidia.com/gpu"] == "1"
    assert vllm.startup_probe.http_get.path == "/health"
    claim_volume = next(v for v in pod_spec.volumes if v.name == "claim")
    assert claim_volume.persistent_volume_claim.read_only is True
    service = core.read_namespaced_service("qwen-vllm", namespace)
    assert [(p.name, p.port) for p in service.spec.ports] == [("http", 8000)]
    adapters = json.loads(core.read_namespaced_config_map("qwen-adapters", namespace).data["adapters.json"])
    assert adapters == {"other": "/mnt/claim/adapters/other"}
    pods = core.list_namespaced_pod(namespace, label_selector="kubetune.io/modelserve=qwen").items
    assert pods and all(p.spec.node_name.startswith("gpu-node-") for p in pods)

    printed = localcluster.kubectl(cluster, "get", "mserve", "-n", namespace)
    assert "qwen" in printed and "1/1" in printed and f"qwen-vllm.{namespace}.svc:8000/v1" in printed


def test_a_finetunejob_adapter_waits_then_is_served_with_its_rank(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, core: client.CoreV1Api,
    cluster: localcluster.ClusterInfo, tmp_path: Any,
) -> None:  # fmt: skip
    ftjs, serves = FineTuneJobs(api, namespace), ModelServes(api, namespace)
    training = finetunejob("ner-r64")
    training["spec"]["config"]["lora_rank"] = 64
    ftjs.create(with_pod_annotations(training, **{"test.kubetune.io/hold": "true"}))
    ftjs.wait_phase("ner-r64", "Running", timeout=30)

    serves.create(modelserve("qwen", adapters=[{"name": "clue-ner", "fineTuneJob": "ner-r64"}]))
    status = serves.wait("qwen", lambda s: s.get("phase") == "Ready", "the base model to be served")
    adapters = serves.condition("qwen", "AdaptersReady")
    assert (adapters["status"], adapters["reason"]) == ("False", "WaitingForFineTuneJob")
    assert status["servedModels"] == ["qwen2.5-7b"], "the base model serves while the adapter trains"

    for pod in core.list_namespaced_pod(namespace, label_selector="kubetune.io/finetunejob=ner-r64").items:
        core.patch_namespaced_pod(
            pod.metadata.name, namespace, {"metadata": {"annotations": {"test.kubetune.io/hold": None}}}
        )
    ftjs.wait_phase("ner-r64", "Succeeded", timeout=60)
    wait_until(
        lambda: "clue-ner" in report_as_the_sidecars(cluster, api, namespace, "qwen", tmp_path),
        "the adapter in the adapters ConfigMap",
        timeout=60,
    )

    # The new adapters roll the pods out: each new pod's sidecar reports once it runs (played again until
    # the rollout is over: the old pod may say it serves the adapter while the new one starts).
    def served_after_the_rollout() -> dict[str, Any] | None:
        report_as_the_sidecars(cluster, api, namespace, "qwen", tmp_path)
        status = serves.status("qwen") or {}
        rolled_out = status.get("reason") == "Serving"
        return status if rolled_out and "clue-ner" in status.get("servedModels", []) else None

    status = wait_until(served_after_the_rollout, "the adapter to be served", timeout=60, interval=1)
    ready = next(c for c in status["conditions"] if c["type"] == "AdaptersReady")
    assert ready["status"] == "True"
    mapping = json.loads(core.read_namespaced_config_map("qwen-adapters", namespace).data["adapters.json"])
    assert mapping == {"clue-ner": f"/mnt/claim/runs/{namespace}/ner-r64"}
    apps = client.AppsV1Api(api)
    args = deployment_args(apps, namespace, "qwen")
    # vLLM's default rank (16) would refuse a rank-64 adapter.
    assert args[args.index("--max-lora-rank") + 1] == "64"

    # The job is deleted (by hand, or by its own TTL): its adapter is on the claim and goes on being served.
    ftjs.delete("ner-r64")
    status = serves.wait(
        "qwen",
        lambda s: "was deleted" in (next(iter(s.get("adapters") or []), {}).get("message") or ""),
        "the deleted job to be told",
        timeout=60,
    )
    assert status["phase"] == "Ready" and "clue-ner" in status["servedModels"]
    [adapter] = status["adapters"]
    assert adapter["ready"] and adapter["path"] == f"runs/{namespace}/ner-r64"
    assert "serving its adapter from the claim" in adapter["message"]


def test_a_finetunejobs_merged_model_is_served_once_the_job_has_succeeded(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, core: client.CoreV1Api
) -> None:
    ftjs, serves = FineTuneJobs(api, namespace), ModelServes(api, namespace)
    training = finetunejob("merge-me", postTraining={"merge": {"dir": "merged"}})
    ftjs.create(with_pod_annotations(training, **{"test.kubetune.io/hold": "true"}))
    ftjs.wait_phase("merge-me", "Running", timeout=30)

    served = modelserve("merged")
    served["spec"]["model"] = {"fineTuneJob": "merge-me", "servedModelName": "ner-merged"}
    serves.create(served)
    status = serves.wait(
        "merged", lambda s: s.get("reason") == "WaitingForFineTuneJob", "the wait", timeout=30
    )
    assert status["phase"] == "Pending" and "merge-me" in status["message"]
    apps = client.AppsV1Api(api)
    assert not apps.list_namespaced_deployment(
        namespace, label_selector="kubetune.io/modelserve=merged"
    ).items

    for pod in core.list_namespaced_pod(namespace, label_selector="kubetune.io/finetunejob=merge-me").items:
        core.patch_namespaced_pod(
            pod.metadata.name, namespace, {"metadata": {"annotations": {"test.kubetune.io/hold": None}}}
        )
    assert ftjs.wait_phase("merge-me", "Succeeded", timeout=60)["output"]["mergedPath"] == (
        f"runs/{namespace}/merge-me/merged"
    )
    status = serves.wait("merged", lambda s: s.get("model"), "the model resolved", timeout=60)
    assert status["model"] == {"fineTuneJob": "merge-me", "path": f"runs/{namespace}/merge-me/merged"}
    args = wait_until(lambda: deployment_args_if_any(apps, namespace, "merged"), "the Deployment", timeout=30)
    assert args[0] == f"/mnt/claim/runs/{namespace}/merge-me/merged"
    assert args[args.index("--served-model-name") + 1] == "ner-merged"


def deployment_args_if_any(apps: client.AppsV1Api, namespace: str, name: str) -> list[str] | None:
    try:
        return deployment_args(apps, namespace, name)
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise


def test_a_failed_finetunejob_is_reported_not_waited_on(
    namespace: str, claim: tuple[str, object], api: client.ApiClient
) -> None:
    ftjs, serves = FineTuneJobs(api, namespace), ModelServes(api, namespace)
    ftjs.create(with_pod_annotations(finetunejob("doomed"), **{"test.kubetune.io/exit-code": "1"}))
    ftjs.wait_phase("doomed", "Failed", timeout=60)
    serves.create(modelserve("qwen", adapters=[{"name": "doomed", "fineTuneJob": "doomed"}]))
    status = serves.wait("qwen", lambda s: s.get("phase") == "Degraded", "the ModelServe to be Degraded")
    assert status["reason"] == "FineTuneJobFailed"
    assert "FineTuneJob doomed failed" in serves.condition("qwen", "AdaptersReady")["message"]
    assert serves.condition("qwen", "Ready")["status"] == "True", "the base model is still served"


def test_adding_and_removing_adapters_does_not_restart_the_pods(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, core: client.CoreV1Api,
    cluster: localcluster.ClusterInfo, tmp_path: Any,
) -> None:  # fmt: skip
    serves, apps = ModelServes(api, namespace), client.AppsV1Api(api)
    serves.create(modelserve("qwen", adapters=[{"name": "a", "path": "adapters/a"}]))
    serves.wait("qwen", lambda s: s.get("phase") == "Ready", "Ready")
    before = apps.read_namespaced_deployment("qwen-vllm", namespace)
    pods_before = {
        p.metadata.uid
        for p in core.list_namespaced_pod(namespace, label_selector="kubetune.io/modelserve=qwen").items
    }

    serves.patch(
        "qwen",
        {"spec": {"adapters": [{"name": "b", "path": "adapters/b"}, {"name": "c", "path": "adapters/c"}]}},
    )
    wait_until(
        lambda: set(report_as_the_sidecars(cluster, api, namespace, "qwen", tmp_path)) == {"b", "c"},
        "b and c in the adapters ConfigMap",
        timeout=60,
    )
    serves.wait("qwen", lambda s: s.get("servedModels") == ["qwen2.5-7b", "b", "c"], "b and c to be served")
    mapping = json.loads(core.read_namespaced_config_map("qwen-adapters", namespace).data["adapters.json"])
    assert mapping == {"b": "/mnt/claim/adapters/b", "c": "/mnt/claim/adapters/c"}

    after = apps.read_namespaced_deployment("qwen-vllm", namespace)
    assert after.metadata.generation == before.metadata.generation, "the pod template did not change"
    pods_after = {
        p.metadata.uid
        for p in core.list_namespaced_pod(namespace, label_selector="kubetune.io/modelserve=qwen").items
    }
    assert pods_after == pods_before
    assert serves.condition("qwen", "Ready")["status"] == "True"


def test_an_adapter_vllm_refused_makes_the_modelserve_degraded(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, cluster: localcluster.ClusterInfo,
    tmp_path: Any,
) -> None:  # fmt: skip
    serves = ModelServes(api, namespace)
    serves.create(modelserve("qwen", adapters=[{"name": "big", "path": "adapters/big"}]))
    serves.wait("qwen", lambda s: s.get("phase") == "Ready", "Ready")
    vllm_says = "vLLM refused to load it (500): LoRA rank 32 is greater than max_lora_rank 16."
    report_as_the_sidecars(cluster, api, namespace, "qwen", tmp_path, "Failed", vllm_says)
    status = serves.wait("qwen", lambda s: s.get("phase") == "Degraded", "Degraded")
    assert status["reason"] == "AdapterLoadFailed" and status["servedModels"] == ["qwen2.5-7b"]
    assert vllm_says in serves.condition("qwen", "AdaptersReady")["message"]
    assert serves.condition("qwen", "Ready")["status"] == "True", "the base model is still served"


def test_the_sidecar_token_may_write_its_report_and_nothing_else(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, cluster: localcluster.ClusterInfo,
    tmp_path: Any,
) -> None:  # fmt: skip
    from kubernetes import config as kube_config

    serves = ModelServes(api, namespace)
    serves.create(modelserve("qwen"))
    serves.wait("qwen", lambda s: s.get("phase") == "Ready", "Ready")
    kubeconfig = token_kubeconfig(cluster, namespace, "qwen-adapter-sync", tmp_path / "sa.kubeconfig")
    core = client.CoreV1Api(kube_config.new_client_from_config(config_file=str(kubeconfig)))
    core.patch_namespaced_config_map("qwen-adapter-report", namespace, {"data": {"p": "{}"}})
    for attempt in (
        lambda: core.patch_namespaced_config_map("qwen-adapters", namespace, {"data": {"x": "y"}}),
        lambda: core.list_namespaced_secret(namespace),
        lambda: core.list_namespaced_pod(namespace),
    ):
        with pytest.raises(client.ApiException) as refused:
            attempt()
        assert refused.value.status == 403
    pod = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector="kubetune.io/modelserve=qwen")
    assert pod.items[0].spec.automount_service_account_token is False


def test_the_sidecar_token_may_remove_the_report_of_a_pod_gone(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, cluster: localcluster.ClusterInfo,
    tmp_path: Any,
) -> None:  # fmt: skip
    """A pod killed without SIGTERM leaves its report; the live sidecars remove it (the rule itself:
    tests/unit/test_adapter_sync.py). Their narrow token is enough: get, then a patch on that version."""
    serves = ModelServes(api, namespace)
    serves.create(modelserve("qwen"))
    serves.wait("qwen", lambda s: s.get("phase") == "Ready", "Ready")
    report_as_the_sidecars(cluster, api, namespace, "qwen", tmp_path)
    core = client.CoreV1Api(api)
    gone = json.dumps({"adapters": {}, "updated": "2026-01-01T00:00:00Z"})
    core.patch_namespaced_config_map("qwen-adapter-report", namespace, {"data": {"qwen-vllm-gone": gone}})
    live = set(core.read_namespaced_config_map("qwen-adapter-report", namespace).data) - {"qwen-vllm-gone"}
    assert live, "a running pod reported"

    kubeconfig = token_kubeconfig(cluster, namespace, "qwen-adapter-sync", tmp_path / "sa.kubeconfig")
    reporter = Reporter("qwen-adapter-report", namespace, "probe", str(kubeconfig), stale_after=60)
    reporter.seen = {"qwen-vllm-gone": (gone, -3600.0)}  # seen unchanged for an hour
    assert reporter.sweep(0.0) == ["qwen-vllm-gone"]
    assert set(core.read_namespaced_config_map("qwen-adapter-report", namespace).data) == live


def test_the_sidecar_watches_its_adapters_with_its_token_and_sees_an_edit_at_once(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, cluster: localcluster.ClusterInfo,
    tmp_path: Any,
) -> None:  # fmt: skip
    """The sidecar learns of an added or removed adapter from a watch of its one ConfigMap, not from the
    kubelet's refresh of the mounted copy (about a minute); its token lists and watches that ConfigMap and
    no other."""
    import threading

    from kubernetes import config as kube_config

    from kubetune.launcher.adapter_watch import AdapterWatch

    serves = ModelServes(api, namespace)
    serves.create(modelserve("qwen", [{"name": "a", "path": "runs/a"}]))
    serves.wait("qwen", lambda s: s.get("phase") in ("Ready", "Degraded", "Progressing"), "a phase")
    kubeconfig = token_kubeconfig(cluster, namespace, "qwen-adapter-sync", tmp_path / "sa.kubeconfig")
    core = client.CoreV1Api(kube_config.new_client_from_config(config_file=str(kubeconfig)))
    wake, stop = threading.Event(), threading.Event()
    watch = AdapterWatch(core, "qwen-adapters", namespace, "adapters.json", wake)
    watch.start(stop)
    try:
        wait_until(lambda: watch.current() is not None, "the watch to read the ConfigMap", timeout=30)
        assert set(watch.current()) == {"a"}
        for adapters, names in (
            ([{"name": "a", "path": "runs/a"}, {"name": "b", "path": "runs/b"}], {"a", "b"}),
            ([{"name": "b", "path": "runs/b"}], {"b"}),
        ):
            wake.clear()
            serves.patch("qwen", {"spec": {"adapters": adapters}})
            # No refresh of a mounted file in between: the watch's event alone.
            wait_until(
                lambda names=names: set(watch.current() or {}) == names, f"the watch to see {names}", 30
            )
            assert wake.is_set(), "the sync loop is woken"
    finally:
        stop.set()
    client.CoreV1Api(api).create_namespaced_config_map(
        namespace, {"metadata": {"name": "other"}, "data": {"k": "v"}}
    )
    for attempt in (
        lambda: core.list_namespaced_config_map(namespace, field_selector="metadata.name=other"),
        lambda: core.list_namespaced_config_map(namespace),
        lambda: core.read_namespaced_config_map("other", namespace),
    ):
        with pytest.raises(client.ApiException) as refused:
            attempt()
        assert refused.value.status == 403


def test_the_documented_network_policy_is_accepted_by_the_api_server(
    namespace: str, api: client.ApiClient
) -> None:
    from tests.unit.test_lora_guard import network_policies

    [policy] = network_policies()
    policy["metadata"]["namespace"] = namespace
    client.NetworkingV1Api(api).create_namespaced_network_policy(namespace, policy, dry_run="All")


def test_scale_subresource_and_the_autoscaler(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, cluster: localcluster.ClusterInfo
) -> None:
    serves, apps = ModelServes(api, namespace), client.AppsV1Api(api)
    serves.create(
        modelserve("qwen", autoscaling={"minReplicas": 1, "maxReplicas": 3, "targetWaitingRequests": 4})
    )
    serves.wait("qwen", lambda s: s.get("phase") == "Ready", "Ready")

    hpa = client.AutoscalingV2Api(api).read_namespaced_horizontal_pod_autoscaler("qwen-vllm", namespace)
    assert (hpa.spec.scale_target_ref.kind, hpa.spec.scale_target_ref.name) == ("ModelServe", "qwen")
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (1, 3)
    assert hpa.spec.metrics[0].pods.metric.name == "vllm_num_requests_waiting"

    # What an autoscaler (or a person) does through /scale reaches the Deployment.
    localcluster.kubectl(cluster, "scale", "mserve/qwen", "-n", namespace, "--replicas=2")
    wait_until(
        lambda: apps.read_namespaced_deployment("qwen-vllm", namespace).spec.replicas == 2,
        "the Deployment to scale",
        timeout=30,
    )
    status = serves.wait("qwen", lambda s: s.get("readyReplicas") == 2, "two ready replicas", timeout=60)
    assert status["selector"] == "kubetune.io/modelserve=qwen"
    scale = json.loads(localcluster.kubectl(cluster, "get", "--raw",
        f"/apis/kubetune.io/v1alpha1/namespaces/{namespace}/modelserves/qwen/scale"))  # fmt: skip
    assert (scale["spec"]["replicas"], scale["status"]["replicas"]) == (2, 2)
    # The operator never writes the spec: what the autoscaler set stays.
    assert serves.get("qwen")["spec"]["replicas"] == 2


@pytest.mark.parametrize(
    ("adapters", "words"),
    [
        ([{"name": "a", "path": "x"}, {"name": "a", "path": "y"}], ["Duplicate value", "spec.adapters"]),
        ([{"name": "a", "path": "x", "fineTuneJob": "j"}], ["exactly one of path and fineTuneJob"]),
        ([{"name": "a"}], ["exactly one of path and fineTuneJob"]),
        ([{"name": "bad name!", "path": "x"}], ["spec.adapters[0].name"]),
    ],
    ids=["duplicate-names", "both-sources", "no-source", "bad-name"],
)
def test_bad_adapters_are_refused_by_the_api_server(
    namespace: str, cluster: localcluster.ClusterInfo, adapters: list[dict], words: list[str]
) -> None:
    result = subprocess.run(
        [cluster.kubectl, "--kubeconfig", cluster.kubeconfig, "-n", namespace, "apply", "-f", "-"],
        input=json.dumps(modelserve("bad", adapters=adapters)), capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode != 0
    for word in words:
        assert word in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("source", "token_variable"),
    [
        ("hf://Qwen/Qwen2.5-0.5B-Instruct", "HF_TOKEN"),
        ("ms://qwen/Qwen2.5-0.5B-Instruct", "MODELSCOPE_API_TOKEN"),
    ],
    ids=["hf", "ms"],
)
def test_a_hub_model_is_fetched_into_a_writable_claim_and_served_read_only(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, source: str, token_variable: str
) -> None:
    serves = ModelServes(api, namespace)
    model = {"source": source, "hubTokenSecret": {"name": "hub-token", "key": "token"}}
    serves.create(modelserve("hub", model=model))
    serves.wait("hub", lambda s: s.get("phase") == "Ready", "Ready")
    pod = client.AppsV1Api(api).read_namespaced_deployment("hub-vllm", namespace).spec.template.spec
    claim_volume = next(v for v in pod.volumes if v.name == "claim")
    assert not claim_volume.persistent_volume_claim.read_only, "fetch-model writes the model cache"
    fetch = next(c for c in pod.init_containers if c.name == "fetch-model")
    assert [(m.name, bool(m.read_only)) for m in fetch.volume_mounts] == [("claim", False)]
    # The variable the hub's own client reads (ModelScope's never read HF_TOKEN); vLLM gets none.
    tokens = [(e.name, e.value_from.secret_key_ref.name) for e in fetch.env or []]
    assert tokens == [(token_variable, "hub-token")]
    assert not {e.name for e in pod.containers[0].env or []} & {"HF_TOKEN", "MODELSCOPE_API_TOKEN"}
    for container in [pod.containers[0], next(c for c in pod.init_containers if c.name == "adapter-sync")]:
        assert next(m for m in container.volume_mounts if m.name == "claim").read_only is True
