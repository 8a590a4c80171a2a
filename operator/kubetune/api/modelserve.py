"""The ModelServe resource: vLLM serving a base model and LoRA adapters from the shared claim."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, model_validator

from kubetune.api.cel import Rule
from kubetune.api.common import (
    MODEL_SOURCE,
    ClaimStorage,
    Model,
    ModelSource,
    ObjectName,
    ResourceStatus,
    keyed_by_name,
)
from kubetune.api.podspec import ENV_NAME, PodMetadata, PodResources, PodSecurity

KIND = "ModelServe"
PLURAL = "modelserves"
SINGULAR = "modelserve"
SHORT_NAMES = ["mserve"]

VLLM_VERSION = "v0.32.0"
VLLM_IMAGE = f"vllm/vllm-openai:{VLLM_VERSION}"
# vLLM's own CPU build of the same release (x86-64), used when a replica asks for no GPU.
VLLM_CPU_IMAGE = f"public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:{VLLM_VERSION}"
CPU_KV_CACHE_GIB = 4  # vLLM's CPU default is 4 GiB too; said here so the pod's memory can be sized from it
# The ranks vLLM accepts for --max-lora-rank (its default is 16: a rank-64 adapter fails to load).
LoraRank = Literal[8, 16, 32, 64, 128, 256, 320, 512]
LORA_RANKS: tuple[int, ...] = get_args(LoraRank)
ADAPTER_NAME = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,126}[A-Za-z0-9])?$"
ADAPTER_PATH = r"^(pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?/.+|[^/].*)$"
# The variables the operator sets in the vLLM container (kubetune.render.modelserve; a unit test holds the
# two together): runtime adapter loading, offline hub, the CPU build's KV cache, and the adapter management
# guard (its module on the path, the token's file).
VLLM_ENV = frozenset(
    {"VLLM_ALLOW_RUNTIME_LORA_UPDATING", "HF_HUB_OFFLINE", "VLLM_CPU_KVCACHE_SPACE"}
    | {"PYTHONPATH", "KUBETUNE_ADAPTER_TOKEN_FILE"}
)
# Served model names go into vLLM's arguments and into the KEDA query's label matcher: no quotes, braces,
# backslashes or spaces. `Qwen/Qwen2.5-7B-Instruct` and `qwen2.5:7b` are fine.
SERVED_MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$"


class Phase(StrEnum):
    PENDING = "Pending"
    PROGRESSING = "Progressing"
    READY = "Ready"
    DEGRADED = "Degraded"
    FAILED = "Failed"


class ServedModelSpec(ModelSource):
    """The model vLLM serves: a base model by its source, or the whole model a FineTuneJob made."""

    cel_rules = (
        *ModelSource.cel_rules,
        Rule(
            "has(self.source) != has(self.fineTuneJob)",
            "model needs exactly one of source and fineTuneJob",
        ),
    )

    source: str | None = Field(  # type: ignore[assignment]
        None,
        pattern=MODEL_SOURCE,
        description=(
            "Where the base model is: `pvc://<claim>/<path>` (a directory on the storage claim), or a hub "
            "id, `hf://<org>/<name>` (Hugging Face) or `ms://<org>/<name>` (ModelScope), downloaded once "
            "into the model cache on the storage claim."
        ),
    )
    fine_tune_job: ObjectName | None = Field(
        None,
        description=(
            "A FineTuneJob in the same namespace whose model to serve, once it has Succeeded: its merged "
            "export (`postTraining.merge`), or its output for `finetuning_type` full or freeze."
        ),
    )

    served_model_name: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        pattern=SERVED_MODEL_NAME,
        description="The name clients ask for (default: the ModelServe's name).",
    )


class AdapterSpec(Model):
    """A LoRA adapter, served under its own model name."""

    cel_rules = (
        Rule(
            "has(self.path) != has(self.fineTuneJob)",
            "each adapter needs exactly one of path and fineTuneJob",
        ),
    )

    name: str = Field(pattern=ADAPTER_NAME, description="The model name clients use for this adapter.")
    path: str | None = Field(
        None,
        pattern=ADAPTER_PATH,
        description="The adapter directory: a path on the storage claim, or `pvc://<claim>/<path>`.",
    )
    fine_tune_job: ObjectName | None = Field(
        None, description="A FineTuneJob in the same namespace: its adapter, once it has Succeeded."
    )


class EngineSpec(Model):
    """vLLM's settings."""

    image: str | None = Field(
        None,
        description=f"The vLLM image (default {VLLM_IMAGE}; with `resources.gpus: 0`, vLLM's CPU build "
        f"{VLLM_CPU_IMAGE}).",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    tensor_parallel_size: int = Field(1, ge=1, le=64, description="GPUs one replica shards the model over.")
    max_model_len: int | None = Field(None, ge=16, description="Context length (--max-model-len).")
    gpu_memory_utilization: float | None = Field(
        None, gt=0, le=1, description="Share of GPU memory vLLM may use (--gpu-memory-utilization)."
    )
    dtype: Literal["auto", "half", "float16", "bfloat16", "float", "float32"] | None = Field(
        None, description="Weights and activations dtype (--dtype)."
    )
    max_lora_rank: LoraRank | None = Field(
        None, description="Largest adapter rank (default: what the referenced FineTuneJobs trained with)."
    )
    max_loras: int = Field(
        4,
        ge=1,
        description="Adapters active in one batch (--max-loras); any number is served, swapped in as asked.",
    )
    max_cpu_loras: int | None = Field(None, ge=1, description="Adapters cached in CPU memory.")
    cpu_kv_cache_gib: int | None = Field(
        None,
        ge=1,
        description=f"On CPU (`resources.gpus: 0`): GiB of memory for the KV cache (VLLM_CPU_KVCACHE_SPACE, "
        f"default {CPU_KV_CACHE_GIB}); the replica's memory must hold it and the weights.",
    )
    extra_args: list[str] | None = Field(None, description="More `vllm serve` flags, verbatim.")
    env: list[dict[str, Any]] | None = Field(
        None,
        description="Extra environment variables of the vLLM container, as in a Pod spec.",
        json_schema_extra={"items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
    )

    @model_validator(mode="after")
    def _env_is_the_users(self) -> EngineSpec:
        # Every entry is a variable with a name, once, and none of those the operator sets for vLLM: a
        # duplicate name would make the Deployment impossible to apply.
        names = []
        for index, item in enumerate(self.env or []):
            name = item.get("name")
            if not isinstance(name, str) or not re.fullmatch(ENV_NAME, name):
                raise ValueError(
                    f"engine.env[{index}].name must be an environment variable name, got {name!r}"
                )
            if name in VLLM_ENV:
                raise ValueError(f"engine.env[{index}]: {name} is set by the operator")
            names.append(name)
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"engine.env names must be unique: {', '.join(duplicates)}")
        return self


class ServeResources(PodResources):
    """GPUs per replica, what each replica's pod asks for, and where the pods may run."""

    gpus: int | None = Field(None, ge=0, le=64, description="GPUs per replica (default: tensorParallelSize).")


class AutoscalingSpec(Model):
    """Scale on vLLM's own queue length: an HPA on the ModelServe's /scale, or a KEDA ScaledObject."""

    cel_rules = (
        Rule(
            "!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",
            "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
        ),
        Rule(
            "!has(self.provider) || self.provider != 'keda' || has(self.prometheusAddress)",
            "autoscaling.prometheusAddress is needed when provider is keda",
        ),
    )

    min_replicas: int = Field(1, ge=1, description="Fewest replicas.")
    max_replicas: int = Field(ge=1, description="Most replicas.")
    target_waiting_requests: float = Field(
        5, gt=0, description="Requests waiting per replica (vllm:num_requests_waiting) to aim for."
    )
    provider: Literal["hpa", "keda"] = Field(
        "hpa", description="`hpa` (needs a custom-metrics adapter) or `keda` (needs KEDA and Prometheus)."
    )
    metric_name: str = Field(
        "vllm_num_requests_waiting",
        description="The pods metric as the custom-metrics adapter exposes vllm:num_requests_waiting (hpa).",
    )
    prometheus_address: str | None = Field(None, description="Prometheus URL for KEDA's trigger (keda).")


class ServeStorage(ClaimStorage):
    """The shared PersistentVolumeClaim with the model and the adapters."""


class ModelServeSpec(Model):
    model: ServedModelSpec
    storage: ServeStorage
    adapters: Annotated[list[AdapterSpec], keyed_by_name("adapter")] = Field(
        default_factory=list,
        max_length=64,
        description="LoRA adapters, each served under its own name (unique).",
        # A list keyed by name: the API server refuses duplicates, and server-side apply merges by name.
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    replicas: int | None = Field(
        None, ge=0, description="Replicas (default 1; leave it unset when autoscaling owns it)."
    )
    resources: ServeResources = Field(default_factory=ServeResources)
    engine: EngineSpec = Field(default_factory=EngineSpec)
    autoscaling: AutoscalingSpec | None = None
    pod_metadata: PodMetadata | None = Field(None, description="Extra labels and annotations for the pods.")
    pod_security: PodSecurity | None = Field(
        None, description="Relax the Pod Security `restricted` defaults of the pods where a cluster needs it."
    )

    @model_validator(mode="after")
    def _adapters_not_named_as_the_model(self) -> ModelServeSpec:
        served = self.served_model_name_or(None)
        if served in {a.name for a in self.adapters}:
            raise ValueError(f"adapter names must differ from the served model: {served}")
        return self

    def served_model_name_or(self, default: str | None) -> str | None:
        return self.model.served_model_name or default

    @property
    def gpus(self) -> int:
        return self.engine.tensor_parallel_size if self.resources.gpus is None else self.resources.gpus

    @property
    def on_cpu(self) -> bool:
        """No GPU asked for: vLLM's CPU build serves (a test machine, a small model, a CPU node pool)."""
        return self.gpus == 0

    @property
    def image(self) -> str:
        return self.engine.image or (VLLM_CPU_IMAGE if self.on_cpu else VLLM_IMAGE)


class AdapterStatus(Model):
    model_config = Model.model_config | {"frozen": False}

    name: str
    path: str | None = None
    ready: bool = Field(False, description="Loaded by every ready vLLM replica: a request for it is served.")
    loaded_replicas: int | None = Field(None, description="Ready replicas whose vLLM has loaded it.")
    fine_tune_job: str | None = Field(
        None, description="The FineTuneJob it came from (served on from the claim if that job is deleted)."
    )
    rank: int | None = Field(None, description="The LoRA rank it was trained with, when known.")
    reason: str | None = None
    message: str | None = Field(None, description="Why it is not served (vLLM's own error when it refused).")


class ServedModelStatus(Model):
    """The model a FineTuneJob made, as served (`spec.model.fineTuneJob`)."""

    model_config = Model.model_config | {"frozen": False}

    fine_tune_job: str | None = Field(None, description="The FineTuneJob it came from.")
    path: str | None = Field(None, description="Its directory on the claim.")
    message: str | None = Field(
        None, description="Said of it while served: e.g. its FineTuneJob was deleted."
    )


class ModelServeStatus(ResourceStatus):
    phase: Phase | None = None
    model: ServedModelStatus | None = Field(
        None, description="The model a FineTuneJob made, when `spec.model.fineTuneJob` names one."
    )
    replicas: int | None = None
    ready_replicas: int | None = None
    selector: str | None = Field(None, description="The pods' label selector (for the /scale subresource).")
    endpoint: str | None = Field(None, description="The OpenAI-compatible endpoint inside the cluster.")
    served_models: list[str] = Field(default_factory=list)
    adapters: list[AdapterStatus] = Field(default_factory=list)
    adapters_display: str | None = Field(None, description="`2/3` adapters ready, for `kubectl get`.")
    replicas_display: str | None = Field(None, description="`1/2` replicas ready, for `kubectl get`.")
    applied_children: str | None = Field(
        None,
        description="A hash of the children as the operator last applied them all: a reconcile that "
        "renders the same children writes none (the periodic resync applies them anyway).",
    )
