"""A ModelServe's spec -> its children: a Deployment running `vllm serve` beside the adapter-sync sidecar,
a Service, the adapters ConfigMap, the adapter report ConfigMap with the sidecar's ServiceAccount, Role and
RoleBinding, and an HPA or a KEDA ScaledObject when autoscaling is set.

Adapters never change the pod template. The operator writes the adapters to serve into a ConfigMap; the
sidecar (`kubetune adapter-sync`) watches it through the API, loads them into vLLM through its load endpoint
as it changes, unloads removed ones, and reports per pod what vLLM really serves into the report ConfigMap
(its token, mounted into the sidecar alone, may read the adapters ConfigMap and patch the report one, and
nothing else). Adding or removing an adapter changes the ConfigMap only: no pod restarts. The one exception
is an adapter whose rank is above every earlier one: `--max-lora-rank` must grow, and the pods roll one at a
time (maxUnavailable 0), so the endpoint stays up.

With `resources.gpus: 0` the replicas run vLLM's CPU build: its image, `VLLM_CPU_KVCACHE_SPACE` for the
KV cache, and no GPU flags; a GPU replica's pod is the same as ever.
"""

from __future__ import annotations

import functools
import json
import posixpath
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from kubetune import lora_guard
from kubetune.api import API_VERSION, label_names
from kubetune.api import modelserve as ms
from kubetune.api.common import CLAIM_MOUNT_PATH
from kubetune.api.defaults import CONFIG_MOUNT_PATH, OPERATOR_IMAGE, TRAINER_IMAGE
from kubetune.api.podspec import VLLM_DEFAULT_UID
from kubetune.render import meta, model_source, rbac
from kubetune.render.model_source import claim_path as claim_path  # the handler's, for adapter paths
from kubetune.render.names import ModelServeNames, label_value, short_hash
from kubetune.render.placement import place, resource_requirements
from kubetune.render.pods import api_token_mount, api_token_volume, secure, shared_memory

VLLM_PORT = 8000
SYNC_PORT = 8001  # the sidecar's /ready (the vLLM container's readiness probe) and /adapters
ADAPTERS_FILE = "adapters.json"
SIDECAR_TOKEN_VOLUME = "adapter-sync-token"
# vLLM's adapter management endpoints answer the sidecar alone (kubetune/lora_guard.py): the middleware's
# module, mounted from a ConfigMap into the vLLM container, and the pod's token, which the sidecar writes
# into a memory-backed emptyDir that only these two containers mount.
LORA_GUARD_DIR = "/opt/kubetune/lora-guard"
LORA_GUARD_MODULE = "kubetune_lora_guard"
LORA_GUARD_MIDDLEWARE = f"{LORA_GUARD_MODULE}.LoraGuard"
ADAPTER_TOKEN_DIR = "/run/kubetune/adapter-token"
ADAPTER_TOKEN_FILE = f"{ADAPTER_TOKEN_DIR}/token"


@dataclass(frozen=True)
class ResolvedAdapter:
    """An adapter the handler has resolved: where it is in the pod, and the rank it was trained with."""

    name: str
    path: str  # inside the pod
    rank: int | None = None


@dataclass(frozen=True)
class ModelServeTarget:
    name: str
    namespace: str
    uid: str
    spec: ms.ModelServeSpec
    adapters: list[ResolvedAdapter] = field(default_factory=list)  # the ready ones only
    # --max-lora-rank of the running Deployment: the rank only grows, so removing an adapter never restarts.
    observed_max_lora_rank: int | None = None
    trainer_image: str = TRAINER_IMAGE
    sidecar_image: str = OPERATOR_IMAGE
    # The model a FineTuneJob made (`spec.model.fineTuneJob`), resolved by the handler: its path in the pod.
    model_dir: str | None = None

    @property
    def names(self) -> ModelServeNames:
        return ModelServeNames(self.name)

    @property
    def service_name(self) -> str:
        return self.names.service

    @property
    def deployment_name(self) -> str:
        return self.names.deployment

    @property
    def config_map_name(self) -> str:
        return self.names.config_map

    @property
    def report_config_map_name(self) -> str:
        return self.names.report_config_map

    @property
    def sidecar_account_name(self) -> str:
        return self.names.sidecar_account

    @property
    def lora_guard_name(self) -> str:
        return self.names.lora_guard

    @property
    def served_model_name(self) -> str:
        return self.spec.served_model_name_or(self.name) or self.name

    @property
    def endpoint(self) -> str:
        return f"http://{self.service_name}.{self.namespace}.svc:{VLLM_PORT}/v1"


def labels(target: ModelServeTarget) -> dict[str, str]:
    return meta.labels("kubetune-vllm", **selector(target))


def selector(target: ModelServeTarget) -> dict[str, str]:
    return {label_names.MODELSERVE: label_value(target.name)}


def owner(target: ModelServeTarget) -> meta.Owner:
    return meta.Owner(ms.KIND, target.name, target.namespace, target.uid)


def metadata(target: ModelServeTarget, name: str) -> dict[str, Any]:
    return meta.metadata(owner(target), name, labels(target))


def model_path(target: ModelServeTarget) -> str:
    """The model's path in the pod: for a base model, the same string the trainer used, so adapters match
    it; for a FineTuneJob's model, where that job wrote it."""
    if target.spec.model.fine_tune_job is not None:
        if target.model_dir is None:
            raise ValueError(f"ModelServe {target.name}: the FineTuneJob's model is not resolved")
        return target.model_dir
    storage = target.spec.storage
    return model_source.model_path(target.spec.model, storage.claim, storage.model_cache)


def adapter_rank_needed(target: ModelServeTarget) -> int:
    """--max-lora-rank: the engine's setting, else the largest adapter rank rounded up to one vLLM allows."""
    if target.spec.engine.max_lora_rank is not None:
        return target.spec.engine.max_lora_rank
    ranks = [a.rank for a in target.adapters if a.rank is not None]
    needed = max([*ranks, 16, target.observed_max_lora_rank or 0])  # 16: vLLM's own default
    return next((r for r in ms.LORA_RANKS if r >= needed), ms.LORA_RANKS[-1])


def vllm_args(target: ModelServeTarget) -> list[str]:
    engine = target.spec.engine
    args = [
        model_path(target),
        "--served-model-name", target.served_model_name,
        "--host", "0.0.0.0",
        "--port", str(VLLM_PORT),
        "--enable-lora",
        "--max-lora-rank", str(adapter_rank_needed(target)),
        "--max-loras", str(engine.max_loras),
        "--tensor-parallel-size", str(engine.tensor_parallel_size),
        # Load and unload for the sidecar alone: the middleware refuses them without the pod's token.
        "--middleware", LORA_GUARD_MIDDLEWARE,
    ]  # fmt: skip
    if engine.max_cpu_loras is not None:
        args += ["--max-cpu-loras", str(engine.max_cpu_loras)]
    if engine.max_model_len is not None:
        args += ["--max-model-len", str(engine.max_model_len)]
    if engine.gpu_memory_utilization is not None and not target.spec.on_cpu:
        args += ["--gpu-memory-utilization", str(engine.gpu_memory_utilization)]
    if engine.dtype is not None:
        args += ["--dtype", engine.dtype]
    return args + list(engine.extra_args or [])


def adapters_config_map(target: ModelServeTarget) -> dict[str, Any]:
    adapters = {a.name: a.path for a in sorted(target.adapters, key=lambda a: a.name)}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(target, target.config_map_name),
        "data": {ADAPTERS_FILE: json.dumps(adapters, indent=2, sort_keys=True) + "\n"},
    }


@functools.cache
def lora_guard_source() -> str:
    """The middleware's module, as the ConfigMap hands it to vLLM (the file itself: tested as it runs)."""
    return resources.files(lora_guard.__package__ or "kubetune").joinpath("lora_guard.py").read_text()


def lora_guard_config_map(target: ModelServeTarget) -> dict[str, Any]:
    # vLLM imports it once, at start. It changes only with a release of kubetune, whose new sidecar image
    # rolls the pods (one at a time) anyway.
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(target, target.lora_guard_name),
        "data": {f"{LORA_GUARD_MODULE}.py": lora_guard_source()},
    }


def _env(target: ModelServeTarget) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        # The adapter-sync sidecar loads and unloads adapters through vLLM's API; the middleware keeps that
        # API to it (LORA_GUARD_MIDDLEWARE: its module from the ConfigMap, the token it asks for).
        {"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "True"},
        {"name": "PYTHONPATH", "value": LORA_GUARD_DIR},
        {"name": lora_guard.TOKEN_FILE_ENV, "value": ADAPTER_TOKEN_FILE},
        {"name": "HF_HUB_OFFLINE", "value": "1"},
    ]
    if target.spec.on_cpu:
        # vLLM's CPU build sizes its KV cache from this (GiB), not from --gpu-memory-utilization.
        space = target.spec.engine.cpu_kv_cache_gib or ms.CPU_KV_CACHE_GIB
        env.append({"name": "VLLM_CPU_KVCACHE_SPACE", "value": str(space)})
    # No hub token: vLLM runs offline (the model is on the claim); only fetch-model downloads.
    return env + list(target.spec.engine.env or [])


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 5,
    }


def _sidecar(target: ModelServeTarget, claim_mount: dict[str, Any]) -> dict[str, Any]:
    """The adapter-sync sidecar: a native sidecar (an init container that keeps running), up before vLLM."""
    return {
        "name": "adapter-sync",
        "image": target.sidecar_image,
        "restartPolicy": "Always",
        "command": ["kubetune"],
        "args": [
            "adapter-sync",
            "--config",
            posixpath.join(CONFIG_MOUNT_PATH, ADAPTERS_FILE),
            "--configmap",
            target.config_map_name,
            "--vllm",
            f"http://127.0.0.1:{VLLM_PORT}",
            "--model",
            model_path(target),
            "--claim",
            CLAIM_MOUNT_PATH,
            "--max-lora-rank",
            str(adapter_rank_needed(target)),
            "--listen",
            f"0.0.0.0:{SYNC_PORT}",
            "--report-configmap",
            target.report_config_map_name,
            "--token-file",
            ADAPTER_TOKEN_FILE,
        ],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        ],
        "ports": [{"name": "adapter-sync", "containerPort": SYNC_PORT}],
        "volumeMounts": [
            {"name": "adapters-config", "mountPath": CONFIG_MOUNT_PATH, "readOnly": True},
            {**claim_mount, "readOnly": True},
            # The pod's only API token, in this container alone: it may patch the report ConfigMap.
            api_token_mount(SIDECAR_TOKEN_VOLUME),
            # The pod's adapter token: written here, read by vLLM's middleware.
            {"name": ADAPTER_TOKEN_VOLUME, "mountPath": ADAPTER_TOKEN_DIR},
        ],
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
    }


ADAPTER_TOKEN_VOLUME = "adapter-token"
LORA_GUARD_VOLUME = "lora-guard"


def _lora_guard_volumes(target: ModelServeTarget) -> list[dict[str, Any]]:
    return [
        {"name": LORA_GUARD_VOLUME, "configMap": {"name": target.lora_guard_name, "defaultMode": 0o444}},
        # In memory, never on the node's disk; a few bytes.
        {"name": ADAPTER_TOKEN_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
    ]


def deployment(target: ModelServeTarget) -> dict[str, Any]:
    spec = target.spec
    shm_volume, shm_mount = shared_memory(spec.resources.shared_memory)
    # vLLM only reads the claim; fetch-model writes a hub model's cache into it, so then the volume is
    # writable and each mount says read-only on its own.
    fetches = spec.model.source is not None and model_source.is_hub(spec.model)
    claim_mount = {"name": model_source.CLAIM_VOLUME, "mountPath": CLAIM_MOUNT_PATH, "readOnly": True}
    readiness = _probe("/ready", 5, 3)
    readiness["httpGet"]["port"] = SYNC_PORT  # vLLM healthy and its adapters loaded (the sidecar says)
    vllm: dict[str, Any] = {
        "name": "vllm",
        "image": spec.image,
        "command": ["vllm", "serve"],
        "args": vllm_args(target),
        "env": _env(target),
        "ports": [{"name": "http", "containerPort": VLLM_PORT}],
        "volumeMounts": [
            claim_mount,
            shm_mount,
            {"name": LORA_GUARD_VOLUME, "mountPath": LORA_GUARD_DIR, "readOnly": True},
            {"name": ADAPTER_TOKEN_VOLUME, "mountPath": ADAPTER_TOKEN_DIR, "readOnly": True},
        ],
        # Loading a large model takes minutes: up to an hour before liveness starts counting.
        "startupProbe": _probe("/health", 10, 360),
        "readinessProbe": readiness,
        "livenessProbe": _probe("/health", 15, 4),
    }
    if spec.engine.image_pull_policy:
        vllm["imagePullPolicy"] = spec.engine.image_pull_policy
    res = spec.resources
    resources = resource_requirements(
        cpu=res.cpu, memory=res.memory, gpus=spec.gpus, gpu_resource=res.gpu_resource
    )
    if resources:
        vllm["resources"] = resources

    init_containers: list[dict[str, Any]] = []
    if fetches:
        init_containers.append(
            model_source.fetch_model_container(spec.model, model_path(target), target.trainer_image)
        )
    init_containers.append(_sidecar(target, claim_mount))

    pod_meta = meta.pod_metadata(spec.pod_metadata, labels(target))
    pod_spec: dict[str, Any] = {
        "serviceAccountName": target.sidecar_account_name,
        "automountServiceAccountToken": False,
        "initContainers": init_containers,
        "containers": [vllm],
        "volumes": [
            {
                "name": model_source.CLAIM_VOLUME,
                "persistentVolumeClaim": {"claimName": spec.storage.claim, "readOnly": not fetches},
            },
            {"name": "adapters-config", "configMap": {"name": target.config_map_name}},
            api_token_volume(SIDECAR_TOKEN_VOLUME),
            shm_volume,
            *_lora_guard_volumes(target),
        ],
        "terminationGracePeriodSeconds": 60,
    }
    place(pod_spec, spec.resources)
    secure(pod_spec, spec.pod_security)
    # vLLM's image runs as root unless told otherwise; "restricted" needs a non-root uid.
    if spec.pod_security is None or spec.pod_security.run_as_user is None:
        vllm["securityContext"]["runAsUser"] = VLLM_DEFAULT_UID

    deployment_spec: dict[str, Any] = {
        "replicas": desired_replicas(spec),
        "selector": {"matchLabels": selector(target)},
        # A new pod is Ready before an old one goes: the endpoint never has fewer replicas than asked.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {"metadata": pod_meta, "spec": pod_spec},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(target, target.deployment_name),
        "spec": deployment_spec,
    }


# --- what the sidecar may write: its pod's report, nothing else -------------------------------------------


def report_config_map(target: ModelServeTarget) -> dict[str, Any]:
    """Where each pod's sidecar writes what its vLLM serves (`data.<pod>`); the operator owns no data key."""
    report = metadata(target, target.report_config_map_name)
    report["labels"] = {**report["labels"], label_names.ADAPTER_REPORT: "true"}  # the operator watches these
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": report}


def sidecar_service_account(target: ModelServeTarget) -> dict[str, Any]:
    return rbac.service_account(metadata(target, target.sidecar_account_name), automount=False)


def sidecar_role(target: ModelServeTarget) -> dict[str, Any]:
    rules = [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": [target.report_config_map_name],
            "verbs": ["get", "patch"],
        },
        # The adapters to serve, watched (the kubelet's refresh of the mounted copy takes about a minute). A
        # list or watch names its one object by fieldSelector, so resourceNames holds it to that ConfigMap.
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": [target.config_map_name],
            "verbs": ["get", "list", "watch"],
        },
    ]
    return rbac.role(metadata(target, target.sidecar_account_name), rules)


def sidecar_role_binding(target: ModelServeTarget) -> dict[str, Any]:
    name = target.sidecar_account_name
    return rbac.role_binding(metadata(target, name), name, name)


def desired_replicas(spec: ms.ModelServeSpec) -> int:
    if spec.replicas is not None:
        return spec.replicas
    return spec.autoscaling.min_replicas if spec.autoscaling else 1


def service(target: ModelServeTarget) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(target, target.service_name),
        "spec": {
            "selector": selector(target),
            "ports": [{"name": "http", "port": VLLM_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def _scale_target(target: ModelServeTarget) -> dict[str, str]:
    # The ModelServe's own /scale: the autoscaler owns spec.replicas, the operator passes it on.
    return {"apiVersion": API_VERSION, "kind": ms.KIND, "name": target.name}


def autoscaler(target: ModelServeTarget) -> dict[str, Any] | None:
    scaling = target.spec.autoscaling
    if scaling is None:
        return None
    if scaling.provider == "keda":
        query = (
            f'sum(vllm:num_requests_waiting{{namespace="{target.namespace}",'
            f'model_name="{target.served_model_name}"}})'
        )
        return {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": metadata(target, target.names.autoscaler),
            "spec": {
                "scaleTargetRef": _scale_target(target),
                "minReplicaCount": scaling.min_replicas,
                "maxReplicaCount": scaling.max_replicas,
                "triggers": [
                    {
                        "type": "prometheus",
                        "metadata": {
                            "serverAddress": scaling.prometheus_address,
                            "query": query,
                            "threshold": str(scaling.target_waiting_requests),
                        },
                    }
                ],
            },
        }
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(target, target.names.autoscaler),
        "spec": {
            "scaleTargetRef": _scale_target(target),
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": scaling.metric_name},
                        "target": {
                            "type": "AverageValue",
                            "averageValue": str(scaling.target_waiting_requests),
                        },
                    },
                }
            ],
        },
    }


AUTOSCALER_KINDS = ("HorizontalPodAutoscaler", "ScaledObject")


def children_hash(children: list[dict[str, Any]]) -> str:
    """A short hash of the rendered children: equal hashes, equal manifests (the status keeps the last
    applied one, so that a pass that would apply the same children again applies none)."""
    return short_hash(json.dumps(children, sort_keys=True, separators=(",", ":")), 16)


def possible_children(target: ModelServeTarget) -> set[tuple[str, str]]:
    """(kind, name) of every child a ModelServe of this name may have, whatever its spec: what `children`
    renders now, either autoscaler, and the autoscaler under the name earlier releases gave it."""
    names = target.names
    out = {(c["kind"], c["metadata"]["name"]) for c in children(target) if c["kind"] not in AUTOSCALER_KINDS}
    out |= {(kind, name) for kind in AUTOSCALER_KINDS for name in (names.autoscaler, names.legacy_autoscaler)}
    return out


def children(target: ModelServeTarget) -> list[dict[str, Any]]:
    """In apply order: the ConfigMaps and the sidecar's rights before the Deployment that uses them."""
    out = [
        adapters_config_map(target),
        lora_guard_config_map(target),
        report_config_map(target),
        sidecar_service_account(target),
        sidecar_role(target),
        sidecar_role_binding(target),
        service(target),
        deployment(target),
    ]
    scaler = autoscaler(target)
    if scaler is not None:
        out.append(scaler)
    return out
