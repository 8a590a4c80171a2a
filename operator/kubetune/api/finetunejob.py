"""The FineTuneJob resource: a LLaMA-Factory run under torchrun on one or many GPU nodes (or CPU nodes,
to rehearse the layout before booking GPUs).

The spec has a small structured core that the operator understands, and `config`: LLaMA-Factory's own
arguments, verbatim. These models are the single source of the CRD schema (see `kubetune.api.crd`).
"""

from __future__ import annotations

import posixpath
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from kubetune.api import llamafactory
from kubetune.api.cel import Rule
from kubetune.api.common import (
    RELATIVE_PATH,
    ClaimStorage,
    ConfigMapKeyRef,
    Model,
    ModelSource,
    ResourceStatus,
)
from kubetune.api.datasetinfo import dataset_info_problems
from kubetune.api.podspec import (
    TOLERATIONS_SCHEMA,
    LabelValue,
    PodMetadata,
    PodResources,
    PodSecurity,
    Quantity,
    SecretEnv,
    require_valid_labels,
)

KIND = "FineTuneJob"
PLURAL = "finetunejobs"
SINGULAR = "finetunejob"
SHORT_NAMES = ["ftj"]

DatasetName = Annotated[str, Field(min_length=1, max_length=256)]


class Phase(StrEnum):
    PENDING = "Pending"
    PREPROCESSING = "Preprocessing"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


class DeepSpeedPreset(StrEnum):
    ZERO0 = "zero0"
    ZERO2 = "zero2"
    ZERO2_OFFLOAD = "zero2-offload"
    ZERO3 = "zero3"
    ZERO3_OFFLOAD = "zero3-offload"


class ModelSpec(ModelSource):
    """The base model and its chat template."""

    template: str | None = Field(
        None,
        min_length=1,
        description=(
            "LLaMA-Factory chat template, such as `qwen` or `llama3` (its `template`); without one, "
            "LLaMA-Factory uses the tokenizer's chat template, else `empty` (pre-training needs none)."
        ),
    )


class PreprocessResources(Model):
    """CPU and memory of the preprocessing pod (it requests no GPU)."""

    cpu: Quantity | None = Field(None, description="CPU request and limit, such as `8`.")
    memory: Quantity | None = Field(None, description="Memory request and limit, such as `32Gi`.")


class PreprocessSpec(Model):
    """Tokenize the datasets once, on CPU, before the GPUs are held."""

    enabled: bool = Field(
        False,
        description=(
            "Run LLaMA-Factory's data pipeline in a CPU-only Job first and save the tokenized dataset on "
            "the claim (keyed by everything that changes it, so a later job with the same inputs reuses "
            "it); the training Job is created only once it succeeded, and loads it (`tokenized_path`)."
        ),
    )
    resources: PreprocessResources = Field(
        default_factory=PreprocessResources, description="CPU and memory of the preprocessing pod."
    )
    node_selector: dict[str, str] | None = Field(
        None, description="Node labels the preprocessing pod must match (not the trainer's)."
    )
    tolerations: list[dict[str, Any]] | None = Field(
        None,
        description="Tolerations of the preprocessing pod, as in a Pod spec (not the trainer's).",
        json_schema_extra=TOLERATIONS_SCHEMA,
    )

    @model_validator(mode="after")
    def _node_selector_labels(self) -> PreprocessSpec:
        require_valid_labels(self.node_selector, "dataset.preprocess.nodeSelector")
        return self


class DatasetSpec(Model):
    """The datasets of the run and their `dataset_info.json` entries."""

    cel_rules = (
        Rule(
            "has(self.info) != has(self.configMapRef)",
            "set exactly one of dataset.info (dataset_info.json entries) and dataset.configMapRef",
        ),
        Rule(
            "!has(self.info) || self.names.all(n, n in self.info)"
            " && (!has(self.evalNames) || self.evalNames.all(n, n in self.info))",
            "every name in dataset.names and dataset.evalNames needs an entry in dataset.info",
            # The API server's message names the first name without an entry.
            message_expression="'every name in dataset.names and dataset.evalNames needs an entry in "
            "dataset.info: ' + (self.names + (has(self.evalNames) ? self.evalNames : []))"
            ".filter(n, !(n in self.info))[0] + ' has none'",
            field_path=".names",
        ),
    )

    # The bounds keep the CRD's CEL rules within the API server's cost budget.
    names: list[DatasetName] = Field(
        min_length=1,
        max_length=64,
        description="Datasets to train on, by their name in `dataset_info.json` (its `dataset`).",
    )
    eval_names: list[DatasetName] | None = Field(
        None, max_length=64, description="Datasets to evaluate on (LLaMA-Factory's `eval_dataset`)."
    )
    dir: str = Field(
        "datasets",
        pattern=RELATIVE_PATH,
        description="Directory on the storage claim that holds the dataset files (default `datasets`).",
    )
    info: dict[str, dict[str, Any]] | None = Field(
        None,
        max_length=256,
        description="`dataset_info.json` entries by dataset name, verbatim (`file_name`, `columns`, ...).",
    )
    config_map_ref: ConfigMapKeyRef | None = Field(
        None, description="A ConfigMap key holding the whole `dataset_info.json` instead of `info`."
    )
    preprocess: PreprocessSpec | None = Field(
        None, description="Tokenize once on CPU before the training Job (off unless `enabled: true`)."
    )

    @property
    def preprocessing(self) -> bool:
        return self.preprocess is not None and self.preprocess.enabled

    @model_validator(mode="after")
    def _info_entries_have_their_shape(self) -> DatasetSpec:
        problems = dataset_info_problems(self.info, "dataset.info") if self.info is not None else []
        if problems:
            raise ValueError("; ".join(problems))
        return self


class ResourcesSpec(PodResources):
    """How many nodes and GPUs, what each pod asks for, and where the pods may run."""

    cel_rules = (
        Rule(
            "!has(self.processesPerNode) || (has(self.gpusPerNode) && self.gpusPerNode == 0)"
            " || self.processesPerNode == (has(self.gpusPerNode) ? self.gpusPerNode : 1)",
            "resources.processesPerNode is for CPU nodes (gpusPerNode: 0): with GPUs, torchrun starts one "
            "process per GPU",
            field_path=".processesPerNode",
        ),
    )

    nodes: int = Field(1, ge=1, le=512, description="Number of nodes (pods), one torchrun agent each.")
    gpus_per_node: int = Field(
        1,
        ge=0,
        le=64,
        description="GPUs per node; torchrun starts one process per GPU. 0: CPU nodes (a rehearsal).",
    )
    processes_per_node: int | None = Field(
        None,
        ge=1,
        le=64,
        description=(
            "Training processes per node (torchrun's `--nproc_per_node`): default `gpusPerNode`, or 1 "
            "without GPUs. Set it only on CPU nodes (`gpusPerNode: 0`), to rehearse a multi-process layout."
        ),
    )

    @property
    def processes(self) -> int:
        """Training processes per node: one per GPU, or `processesPerNode` (default 1) on CPU nodes."""
        if self.processes_per_node is not None:
            return self.processes_per_node
        return max(self.gpus_per_node, 1)


class DeepSpeedSpec(Model):
    """DeepSpeed: a ZeRO preset, or a ConfigMap key holding a DeepSpeed JSON."""

    cel_rules = (
        Rule(
            "has(self.preset) != has(self.configMapRef)",
            "set exactly one of deepspeed.preset and deepspeed.configMapRef",
        ),
    )

    preset: DeepSpeedPreset | None = Field(
        None, description="ZeRO preset: `zero0`, `zero2`, `zero2-offload`, `zero3` or `zero3-offload`."
    )
    config_map_ref: ConfigMapKeyRef | None = Field(
        None, description="A ConfigMap key holding a DeepSpeed JSON."
    )


class StorageSpec(ClaimStorage):
    """The shared PersistentVolumeClaim that holds datasets, the model cache and the outputs."""

    cel_rules = (
        Rule(
            "self.claim == oldSelf.claim && (has(self.path) == has(oldSelf.path))"
            " && (!has(self.path) || self.path == oldSelf.path)",
            "storage.claim and storage.path are immutable: earlier attempts wrote there",
        ),
    )

    path: Annotated[
        str | None,
        Rule(
            "!self.matches('(^|/)[.][.](/|$)') && !self.matches('^[./]*$')",
            "storage.path must stay on the claim: no '..', and not the claim's root",
        ),
    ] = Field(
        None,
        pattern=RELATIVE_PATH,
        max_length=1024,
        description="Output directory on the claim (default `runs/<namespace>/<name>`).",
    )
    working_dir: str | None = Field(
        None,
        pattern=RELATIVE_PATH,
        description=(
            "Directory on the claim that the trainer runs in, as `llamafactory-cli` ran in your working "
            "directory: relative paths in `config` (`tokenized_path`, `media_dir`, ...) resolve there "
            "(default: the claim's root)."
        ),
    )


def check_output_path(path: str) -> str:
    """The output path, normalised; refused when it would leave the claim or be the claim's root."""
    if ".." in path.split("/"):
        raise ValueError(f"storage.path {path!r} may not contain '..': it must stay on the claim")
    normalized = posixpath.normpath("/" + path).lstrip("/")
    if not normalized:
        raise ValueError("storage.path may not be the root of the claim: name a directory on it")
    return normalized


def output_path_of(path: str | None, namespace: str, name: str) -> str:
    """Where a FineTuneJob writes on its claim: `storage.path` normalised, or `runs/<namespace>/<name>`."""
    if path:
        try:
            return check_output_path(path)
        except ValueError:
            return path.strip("/")
    return f"runs/{namespace}/{name}"


def default_path_owner(path: str, namespace: str, name: str) -> str | None:
    """Whose default output path (`runs/<namespace>/<name>`) a set path touches: a FineTuneJob's name,
    `*` when it holds them all (`runs`, `runs/<namespace>`), None when it is clear of every other job's."""
    root = f"runs/{namespace}"
    if path.startswith(root + "/"):
        owner = path[len(root) + 1 :].split("/")[0]
        return None if owner == name else owner
    return "*" if paths_overlap(path, root) else None


def paths_overlap(a: str, b: str) -> bool:
    """Whether one directory is the other or holds it (`runs/x` and `runs/x/y` overlap, `runs/xy` not)."""
    a, b = a.strip("/") + "/", b.strip("/") + "/"
    return a.startswith(b) or b.startswith(a)


class MergeSpec(Model):
    """Merge the trained adapter into the base model (`llamafactory-cli export`)."""

    dir: str = Field("merged", pattern=RELATIVE_PATH, description="Directory under the output path.")
    export_size: int = Field(5, ge=1, description="Size of each weight shard, in GB.")
    export_device: Literal["cpu", "auto"] = Field("cpu", description="Where to merge: `cpu` or `auto` (GPU).")


class PredictSpec(Model):
    """Generate on evaluation datasets with the trained model; ROUGE and BLEU go into status.metrics."""

    datasets: list[DatasetName] = Field(
        min_length=1, max_length=64, description="Datasets to predict on, by their dataset_info.json name."
    )
    dir: str = Field("predict", pattern=RELATIVE_PATH, description="Directory under the output path.")
    max_samples: int | None = Field(None, ge=1, description="Predict on at most this many samples.")
    max_new_tokens: int | None = Field(None, ge=1, description="Tokens to generate per sample (128).")
    batch_size: int | None = Field(None, ge=1, description="Samples per device per step (1).")


class PostTrainingSpec(Model):
    """Steps node rank 0 runs after training succeeded."""

    merge: MergeSpec | None = Field(None, description="Merge the adapter into the base model (LoRA, OFT).")
    predict: PredictSpec | None = Field(None, description="Predict on datasets and report the metrics.")


class FineTuneJobSpec(Model):
    model: ModelSpec
    dataset: DatasetSpec
    config: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "LLaMA-Factory arguments, verbatim, in its own snake_case names (stage, finetuning_type, "
            "lora_rank, learning_rate, ...). Keys the operator owns are set from the spec instead."
        ),
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    deepspeed: DeepSpeedSpec | None = Field(
        None,
        description=(
            "DeepSpeed ZeRO settings (none: plain DDP). On CPU nodes the operator sets `use_cpu: false` "
            "in the LLaMA-Factory config, which DeepSpeed needs there."
        ),
    )
    storage: StorageSpec
    image: str | None = Field(
        None, description="Trainer image (default: the operator's pinned trainer image)."
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        None, description="Pull policy of the trainer image."
    )
    pod_metadata: PodMetadata | None = Field(None, description="Extra labels and annotations for the pods.")
    suspend: bool = Field(False, description="Suspend the job: its pods are removed until it is resumed.")
    overfitting_patience: int = Field(
        3,
        ge=1,
        le=100,
        description="Evaluations in a row whose eval loss stays above the best while the training loss "
        "falls, before the condition Overfitting turns True (see docs: Curves).",
    )
    continue_finished: bool = Field(
        False,
        description="When the output path holds a training that finished for an earlier FineTuneJob of this "
        "name, continue from its newest checkpoint instead of refusing to start.",
    )
    max_restarts: int = Field(
        2, ge=0, le=100, description="New attempts after a failure; each resumes from the newest checkpoint."
    )
    active_deadline_seconds: int | None = Field(
        None, ge=1, description="Fail an attempt that runs longer than this many seconds."
    )
    ttl_seconds_after_finished: int | None = Field(
        None, ge=0, description="Delete the FineTuneJob this long after it finished (outputs are kept)."
    )
    queue_name: LabelValue | None = Field(
        None, min_length=1, description="Kueue LocalQueue to submit to; Kueue then admits the job."
    )
    post_training: PostTrainingSpec | None = Field(
        None, description="After training: merge the adapter into the model, predict on datasets."
    )
    pod_security: PodSecurity | None = Field(
        None, description="Relax the Pod Security `restricted` defaults of the pods where a cluster needs it."
    )
    secret_env: SecretEnv | None = None

    @model_validator(mode="after")
    def _config_values_the_operator_reads(self) -> FineTuneJobSpec:
        # The operator itself reads these config values (the output kind, the adapter's rank): their shape is
        # checked here, before anything is rendered from them (the rest is LLaMA-Factory's to check).
        for key in ("finetuning_type", "stage"):
            if key in self.config and not isinstance(self.config[key], str):
                raise ValueError(f"config.{key} must be a string, got {type(self.config[key]).__name__}")
        rank = self.config.get("lora_rank")
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
            raise ValueError(f"config.lora_rank must be a positive integer, got {rank!r}")
        return self

    @property
    def finetuning_type(self) -> str:
        return llamafactory.finetuning_type(self.config)

    def dataset_names(self) -> list[str]:
        """Every dataset the run reads: training, evaluation and prediction."""
        names = list(self.dataset.names) + list(self.dataset.eval_names or [])
        if self.post_training and self.post_training.predict:
            names += self.post_training.predict.datasets
        return list(dict.fromkeys(names))

    @model_validator(mode="after")
    def _post_training_fits(self) -> FineTuneJobSpec:
        post = self.post_training
        if post and post.merge and not llamafactory.trains_adapter(self.config):
            raise ValueError(
                f"postTraining.merge needs an adapter: finetuning_type {self.finetuning_type!r} "
                "saves a whole model already"
            )
        if post and post.predict and self.dataset.info is not None:
            missing = [n for n in post.predict.datasets if n not in self.dataset.info]
            if missing:
                raise ValueError(
                    f"postTraining.predict.datasets need entries in dataset.info: {', '.join(missing)}"
                )
        return self

    @model_validator(mode="after")
    def _preprocess_fits(self) -> FineTuneJobSpec:
        if self.dataset.preprocessing and self.config.get("streaming"):
            raise ValueError(
                "dataset.preprocess saves the tokenized dataset, which LLaMA-Factory cannot do for a "
                "streamed one: remove `streaming` from config or set dataset.preprocess.enabled: false"
            )
        return self

    def output_path(self, namespace: str, name: str) -> str:
        return output_path_of(self.storage.path, namespace, name)


class HistoryPoint(Model):
    """What LLaMA-Factory logged at one step; an evaluation step has `evalLoss`."""

    model_config = Model.model_config | {"extra": "allow", "frozen": False}

    step: int
    epoch: float | None = None
    loss: float | None = Field(None, description="Training loss.")
    eval_loss: float | None = None
    learning_rate: float | None = None
    checkpoint: bool | None = Field(None, description="A complete checkpoint of this step is on the claim.")


class Progress(Model):
    """Training progress, as reported by the launcher from LLaMA-Factory's trainer_log.jsonl."""

    model_config = Model.model_config | {"extra": "allow", "frozen": False}

    step: int | None = None
    total_steps: int | None = None
    epoch: float | None = None
    loss: float | None = None
    learning_rate: float | None = None
    percent: float | None = None
    eta: str | None = Field(None, description="Time left, as `1h2m3s`.")
    display: str | None = Field(None, description="One line for `kubectl get`: `120/900 13% eta 5m`.")
    updated_at: str | None = None
    eval_loss: float | None = Field(None, description="Eval loss at the last evaluation.")
    best_eval_loss: float | None = Field(None, description="The lowest eval loss so far.")
    best_eval_step: int | None = Field(None, description="The step of the lowest eval loss.")
    history: list[HistoryPoint] | None = Field(
        None,
        max_length=200,
        description="The loss curves, thinned to at most 200 points: the first, the last and every "
        "evaluation are kept (see docs/finetunejob.md, Curves). `kubetune plot` draws them.",
    )


class Output(Model):
    model_config = Model.model_config | {"frozen": False}

    claim: str
    path: str = Field(description="Output directory on the claim.")
    adapter_path: str | None = Field(
        None, description="Where the trained adapter (or model) is on the claim."
    )
    merged_path: str | None = Field(
        None, description="Where the merged model is written on the claim (`postTraining.merge`)."
    )
    best_checkpoint: str | None = Field(
        None,
        description="The evaluated checkpoint with the lowest eval loss, on the claim (with eval_strategy).",
    )


class FineTuneJobStatus(ResourceStatus):
    phase: Phase | None = None
    progress: Progress | None = None
    restarts: int = Field(
        0, description="Failed attempts followed by another (they count against maxRestarts)."
    )
    disruptions: int = Field(
        0, description="Attempts ended by an eviction, a preemption or a lost node (they use up no restart)."
    )
    attempt: int | None = Field(None, description="The current attempt, starting at 1.")
    start_time: str | None = None
    completion_time: str | None = None
    output: Output | None = None
    shape: str | None = Field(None, description="Nodes x GPUs per node, for `kubectl get`.")
    metrics: dict[str, Any] | None = Field(
        None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )


__all__ = [
    "KIND",
    "PLURAL",
    "DatasetSpec",
    "DeepSpeedPreset",
    "DeepSpeedSpec",
    "FineTuneJobSpec",
    "FineTuneJobStatus",
    "ModelSpec",
    "Phase",
    "PreprocessSpec",
    "ResourcesSpec",
    "StorageSpec",
]
