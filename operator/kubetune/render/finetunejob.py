"""A FineTuneJob's spec -> its children, as plain manifests.

Children: a ConfigMap (the LLaMA-Factory YAML, dataset_info.json, the DeepSpeed JSON), a headless Service
for the torchrun rendezvous, a ServiceAccount + Role + RoleBinding for the launcher's progress reports, and
one Indexed Job per attempt (pod i is node rank i; pod 0 is the torchrun master).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from kubetune.api import API_VERSION, label_names, llamafactory
from kubetune.api import finetunejob as ftj
from kubetune.api.common import CLAIM_MOUNT_PATH
from kubetune.api.defaults import (
    CONFIG_MOUNT_PATH,
    DATASET_INFO_FILE,
    DEEPSPEED_CONFIG_FILE,
    LAUNCHER_CONFIG_FILE,
    LLAMAFACTORY_CONFIG_FILE,
    TrainerSettings,
)
from kubetune.render import meta, model_source, rbac
from kubetune.render.deepspeed import preset_config
from kubetune.render.model_source import claim_path
from kubetune.render.names import FineTuneJobNames, label_value
from kubetune.render.placement import Placement, place, resource_requirements
from kubetune.render.pods import (
    SHM_VOLUME,
    api_token_mount,
    api_token_volume,
    secret_env,
    secure,
    shared_memory,
)

# libyaml's dumper writes the same text as PyYAML's own, ten times faster (a config per attempt).
YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
MODEL_READY_MARKER = ".kubetune-complete"
LAUNCHER_TOKEN_VOLUME = "launcher-token"
# On the claim: tokenized datasets by their content key, shared by every job that has the same inputs.
TOKENIZED_CACHE = ".kubetune/tokenized"
# In the output path: a link to the tokenized dataset this job trains on, set by its preprocessing.
TOKENIZED_LINK = ".kubetune/tokenized"
# On the claim: DeepSpeed's compiled ops by trainer image, shared by every job and attempt (the launcher
# adds the Python, torch and DeepSpeed versions and the GPU architectures below it).
COMPILED_OPS_CACHE = ".kubetune/torch-extensions"


@dataclass(frozen=True)
class FineTuneJobTarget:
    """Everything the children are rendered from: the resource, plus what the handler looked up for it."""

    name: str
    namespace: str
    uid: str
    spec: ftj.FineTuneJobSpec
    attempt: int = 1
    # dataset_info.json entries; from spec.dataset.info, or read by the handler from the referenced ConfigMap.
    dataset_info: dict[str, Any] = field(default_factory=dict)
    # The DeepSpeed JSON when it comes from a ConfigMap (presets are rendered here).
    deepspeed_config: dict[str, Any] | None = None
    # `spec.suspend` of the attempt's Job as it is now (None: not created yet); Kueue owns it once queued.
    observed_job_suspend: bool | None = None
    # The preprocessing Job succeeded: the training config loads what it tokenized.
    preprocessed: bool = False
    settings: TrainerSettings = field(default_factory=TrainerSettings)

    @property
    def names(self) -> FineTuneJobNames:
        return FineTuneJobNames(self.name)

    @property
    def output_path(self) -> str:
        return self.spec.output_path(self.namespace, self.name)


# --- paths inside the trainer pod ------------------------------------------------------------------


def working_dir(target: FineTuneJobTarget) -> str:
    """Where the trainer runs: relative paths in spec.config resolve on the claim, as they did by hand."""
    return claim_path(target.spec.storage.working_dir or "")


def model_path(target: FineTuneJobTarget) -> str:
    """Where the base model is inside the pod (where a ModelServe of the same source finds it too)."""
    storage = target.spec.storage
    return model_source.model_path(target.spec.model, storage.claim, storage.model_cache)


def selector(name: str, attempt: int | None = None) -> dict[str, str]:
    """The labels that select a FineTuneJob's training Jobs and pods (of one attempt, when given): the
    rendezvous Service's selector, and how the reconcile finds them."""
    found = {label_names.FINETUNEJOB: label_value(name)}
    return found | ({label_names.ATTEMPT: str(attempt)} if attempt is not None else {})


def preprocess_selector(name: str) -> dict[str, str]:
    """The labels that select a FineTuneJob's preprocessing Job and pod."""
    return {label_names.PREPROCESS_OF: label_value(name)}


def labels(target: FineTuneJobTarget, **extra: str) -> dict[str, str]:
    return meta.labels("kubetune-trainer", **selector(target.name), **extra)


def owner(target: FineTuneJobTarget) -> meta.Owner:
    return meta.Owner(ftj.KIND, target.name, target.namespace, target.uid)


def metadata(target: FineTuneJobTarget, name: str, **extra_labels: str) -> dict[str, Any]:
    return meta.metadata(owner(target), name, labels(target, **extra_labels))


# --- the ConfigMap ---------------------------------------------------------------------------------


def llamafactory_config(target: FineTuneJobTarget) -> dict[str, Any]:
    """The user's LLaMA-Factory arguments, verbatim, plus the keys the operator owns."""
    spec = target.spec
    owned: dict[str, Any] = {
        "model_name_or_path": model_path(target),
        # None: LLaMA-Factory takes the tokenizer's chat template, else `empty`.
        **({"template": spec.model.template} if spec.model.template is not None else {}),
        "dataset_dir": CONFIG_MOUNT_PATH,
        "dataset": ",".join(spec.dataset.names),
        "output_dir": claim_path(target.output_path),
    }
    if spec.dataset.eval_names:
        owned["eval_dataset"] = ",".join(spec.dataset.eval_names)
    # dataset_dir is the ConfigMap (where dataset_info.json is); the images and videos that records name by
    # relative path are beside the dataset files, where LLaMA-Factory's default (media_dir = dataset_dir)
    # would have found them by hand.
    media = {} if "media_dir" in spec.config else {"media_dir": claim_path(spec.dataset.dir)}
    if spec.deepspeed is not None:
        owned["deepspeed"] = posixpath.join(CONFIG_MOUNT_PATH, DEEPSPEED_CONFIG_FILE)
        if spec.resources.gpus_per_node == 0:
            # On CPU nodes: with `use_cpu: true` accelerate sets up torch.distributed itself and DeepSpeed
            # then sees a world of one process; without a GPU the device is the CPU all the same.
            owned["use_cpu"] = False
    # A user's own tokenized_path stays as it is (relative to the working directory); preprocessing
    # filled it. Otherwise the training loads what this job's preprocessing left, once it has.
    tokenized = {}
    if spec.dataset.preprocessing and target.preprocessed and "tokenized_path" not in spec.config:
        tokenized = {"tokenized_path": tokenized_link(target)}
    return {**spec.config, **media, **owned, **tokenized}


def image_key(image: str) -> str:
    """A directory name for an image reference: readable, and distinct for distinct references."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", image)[:80]
    return f"{readable}-{hashlib.sha256(image.encode()).hexdigest()[:10]}"


def compiled_ops_dir(target: FineTuneJobTarget) -> str:
    """Where the pods keep DeepSpeed's compiled ops on the claim, for the trainer image they run."""
    image = target.spec.image or target.settings.image
    return claim_path(posixpath.join(COMPILED_OPS_CACHE, image_key(image)))


def tokenized_link(target: FineTuneJobTarget) -> str:
    """Where the training finds its tokenized dataset: a link, in the output path, into the cache."""
    return posixpath.join(claim_path(target.output_path), TOKENIZED_LINK)


def dataset_info(target: FineTuneJobTarget) -> dict[str, Any]:
    """dataset_info.json with relative `file_name`s made absolute on the claim.

    LLaMA-Factory joins `dataset_dir` and `file_name`; dataset_dir is the ConfigMap mount (where this
    file is), so files on the claim need absolute paths (os.path.join keeps an absolute second part).
    """
    data_dir = claim_path(target.spec.dataset.dir)
    info: dict[str, Any] = {}
    for name, entry in sorted(target.dataset_info.items()):
        entry = dict(entry)
        file_name = entry.get("file_name")
        if isinstance(file_name, str) and not file_name.startswith("/"):
            entry["file_name"] = posixpath.join(data_dir, file_name)
        info[name] = entry
    return info


def deepspeed_config(target: FineTuneJobTarget) -> dict[str, Any] | None:
    deepspeed = target.spec.deepspeed
    if deepspeed is None:
        return None
    if deepspeed.preset is not None:
        return preset_config(deepspeed.preset)
    return target.deepspeed_config


def config_map(target: FineTuneJobTarget) -> dict[str, Any]:
    data = {
        LLAMAFACTORY_CONFIG_FILE: yaml.dump(llamafactory_config(target), Dumper=YAML_DUMPER, sort_keys=False),
        DATASET_INFO_FILE: json.dumps(dataset_info(target), indent=2, sort_keys=True) + "\n",
    }
    deepspeed = deepspeed_config(target)
    if deepspeed is not None:
        data[DEEPSPEED_CONFIG_FILE] = json.dumps(deepspeed, indent=2) + "\n"
    if target.spec.post_training is not None:
        data[LAUNCHER_CONFIG_FILE] = (
            json.dumps(target.spec.post_training.wire(), indent=2, sort_keys=True) + "\n"
        )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(target, target.names.config_map),
        "data": data,
    }


# --- the rendezvous Service ------------------------------------------------------------------------


def service(target: FineTuneJobTarget) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(target, target.names.service),
        "spec": {
            "clusterIP": "None",
            # torchrun's rendezvous happens before any pod is Ready.
            "publishNotReadyAddresses": True,
            "selector": selector(target.name),
            "ports": [
                {"name": "rendezvous", "port": target.settings.master_port, "protocol": "TCP"},
            ],
        },
    }


# --- RBAC for the launcher -------------------------------------------------------------------------


def service_account(target: FineTuneJobTarget) -> dict[str, Any]:
    return rbac.service_account(metadata(target, target.names.service_account))


def role(target: FineTuneJobTarget) -> dict[str, Any]:
    # The launcher may read and patch its own FineTuneJob's status, and nothing else.
    rules = [
        {
            "apiGroups": [API_VERSION.split("/")[0]],
            "resources": [f"{ftj.PLURAL}/status"],
            "resourceNames": [target.name],
            "verbs": ["get", "patch"],
        }
    ]
    return rbac.role(metadata(target, target.names.role), rules)


def role_binding(target: FineTuneJobTarget) -> dict[str, Any]:
    names = target.names
    return rbac.role_binding(metadata(target, names.role), names.role, names.service_account)


# --- the training Job ------------------------------------------------------------------------------


def job_suspended(target: FineTuneJobTarget) -> bool:
    """Whether the attempt's Job is suspended: by the user, or (queued) until Kueue admits it."""
    if target.spec.suspend:
        return True
    if target.spec.queue_name:
        # Created suspended for Kueue; afterwards Kueue decides, and the operator keeps what it sees.
        return True if target.observed_job_suspend is None else target.observed_job_suspend
    return False


def _env(target: FineTuneJobTarget) -> list[dict[str, Any]]:
    spec, names, settings = target.spec, target.names, target.settings
    env: list[dict[str, Any]] = [
        {"name": "KUBETUNE_FINETUNEJOB", "value": target.name},
        {"name": "KUBETUNE_FINETUNEJOB_UID", "value": target.uid},
        {"name": "KUBETUNE_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "KUBETUNE_ATTEMPT", "value": str(target.attempt)},
        {"name": "KUBETUNE_CONFIG_DIR", "value": CONFIG_MOUNT_PATH},
        {"name": "KUBETUNE_OUTPUT_DIR", "value": claim_path(target.output_path)},
        {"name": "KUBETUNE_METRICS_PORT", "value": str(settings.metrics_port)},
        {"name": "NNODES", "value": str(spec.resources.nodes)},
        {
            "name": "NODE_RANK",
            "valueFrom": {
                "fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"}
            },
        },
        {"name": "NPROC_PER_NODE", "value": str(spec.resources.processes)},
        # 0: CPU nodes (torchrun only for several processes or DeepSpeed, see the launcher).
        {"name": "KUBETUNE_GPUS_PER_NODE", "value": str(spec.resources.gpus_per_node)},
        {"name": "MASTER_ADDR", "value": names.master_addr(target.attempt, target.namespace)},
        # Fixed: LLaMA-Factory otherwise picks a random port on each node, and the nodes never meet.
        {"name": "MASTER_PORT", "value": str(settings.master_port)},
        {"name": "FORCE_TORCHRUN", "value": "1"},
    ]
    if spec.continue_finished:
        env.append({"name": "KUBETUNE_CONTINUE_FINISHED", "value": "true"})
    if spec.deepspeed is not None:
        # DeepSpeed compiles ops at its first start; on the claim they outlive the pod (compiled_ops.py).
        env.append({"name": "KUBETUNE_TORCH_EXTENSIONS", "value": compiled_ops_dir(target)})
    return env


def _hub_env(target: FineTuneJobTarget) -> list[dict[str, Any]]:
    return model_source.hub_token_env(target.spec.model)


def _volumes(target: FineTuneJobTarget) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    spec = target.spec
    shm_volume, shm_mount = shared_memory(spec.resources.shared_memory)
    volumes: list[dict[str, Any]] = [
        {"name": model_source.CLAIM_VOLUME, "persistentVolumeClaim": {"claimName": spec.storage.claim}},
        {"name": "config", "configMap": {"name": target.names.config_map}},
        shm_volume,
    ]
    mounts: list[dict[str, Any]] = [
        {"name": model_source.CLAIM_VOLUME, "mountPath": CLAIM_MOUNT_PATH},
        {"name": "config", "mountPath": CONFIG_MOUNT_PATH, "readOnly": True},
        shm_mount,
    ]
    model_claim = model_source.model_claim_volume(spec.model, spec.storage.claim)
    if model_claim is not None:
        volumes.append(model_claim[0])
        mounts.append(model_claim[1])
    return volumes, mounts


def _model_fetch_container(target: FineTuneJobTarget, image: str, *, rank: bool = True) -> dict[str, Any]:
    """Downloads a hub model into the cache on the claim once; later jobs find it complete and skip.
    Node rank 0 downloads, the other ranks wait for it (`rank`: the pod has a node rank)."""
    wanted = {"KUBETUNE_FINETUNEJOB", "NODE_RANK"} if rank else {"KUBETUNE_FINETUNEJOB"}
    return model_source.fetch_model_container(
        target.spec.model,
        model_path(target),
        image,
        image_pull_policy=target.spec.image_pull_policy or target.settings.image_pull_policy,
        env=[e for e in _env(target) if e["name"] in wanted],
    )


def _pod_metadata(target: FineTuneJobTarget, attempt_labels: dict[str, str]) -> dict[str, Any]:
    return meta.pod_metadata(target.spec.pod_metadata, labels(target, **attempt_labels))


def job(target: FineTuneJobTarget) -> dict[str, Any]:
    spec, names, settings = target.spec, target.names, target.settings
    image = spec.image or settings.image
    volumes, mounts = _volumes(target)
    attempt_labels = {label_names.ATTEMPT: str(target.attempt)}
    job_labels = dict(attempt_labels)
    if spec.queue_name:
        job_labels[label_names.KUEUE_QUEUE] = spec.queue_name

    container: dict[str, Any] = {
        "name": "trainer",
        "image": image,
        "imagePullPolicy": spec.image_pull_policy or settings.image_pull_policy,
        "command": ["kubetune"],
        "args": ["launch"],
        "env": _env(target) + _hub_env(target) + secret_env(spec.secret_env),
        "ports": [
            {"name": "rendezvous", "containerPort": settings.master_port},
            {"name": "metrics", "containerPort": settings.metrics_port},
        ],
        "volumeMounts": mounts,
        "workingDir": working_dir(target),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    res = spec.resources
    resources = resource_requirements(
        cpu=res.cpu, memory=res.memory, gpus=res.gpus_per_node, gpu_resource=res.gpu_resource
    )
    if resources:
        container["resources"] = resources

    # The launcher's token, for the trainer container alone (rank 0 reports progress with it; one template
    # serves every rank): an init container fetching a model from a hub holds none.
    container["volumeMounts"] = [*mounts, api_token_mount(LAUNCHER_TOKEN_VOLUME)]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "subdomain": names.service,
        "serviceAccountName": names.service_account,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": settings.termination_grace_seconds,
        "containers": [container],
        "volumes": [*volumes, api_token_volume(LAUNCHER_TOKEN_VOLUME)],
    }
    if spec.model.hub_id is not None:
        pod_spec["initContainers"] = [_model_fetch_container(target, image)]
    place(pod_spec, res)
    secure(pod_spec, spec.pod_security)

    job_spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": res.nodes,
        "parallelism": res.nodes,
        # The operator owns retries: one failed pod fails the attempt, and the next attempt resumes.
        "backoffLimit": 0,
        # A pod evicted (a node drain), preempted or lost with its node fails the attempt by this rule,
        # which the Job names in its conditions: the operator starts the next attempt without counting
        # a restart. (`Ignore` would replace the one pod, and torchrun's other ranks would fail with it.)
        "podFailurePolicy": {
            "rules": [
                {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
            ]
        },
        # Required with a podFailurePolicy: a replacement pod only once the failed one has stopped.
        "podReplacementPolicy": "Failed",
        "suspend": job_suspended(target),
        "template": {"metadata": _pod_metadata(target, attempt_labels), "spec": pod_spec},
    }
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(target, names.job(target.attempt), **job_labels),
        "spec": job_spec,
    }


# --- the preprocessing Job -------------------------------------------------------------------------


def preprocess_job(target: FineTuneJobTarget) -> dict[str, Any]:
    """A CPU-only Job that runs LLaMA-Factory's data pipeline for the training's exact arguments and saves
    the tokenized dataset on the claim (`kubetune preprocess`). No GPU, its own requests and placement;
    the operator creates the training Job only once it succeeded."""
    spec, names, settings = target.spec, target.names, target.settings
    preprocess = spec.dataset.preprocess or ftj.PreprocessSpec(enabled=True)
    image = spec.image or settings.image
    volumes, mounts = _volumes(target)
    # No /dev/shm: no NCCL, no dataloader workers.
    volumes = [v for v in volumes if v["name"] != SHM_VOLUME]
    mounts = [m for m in mounts if m["name"] != SHM_VOLUME]
    wanted = {"KUBETUNE_FINETUNEJOB", "KUBETUNE_NAMESPACE", "KUBETUNE_CONFIG_DIR", "KUBETUNE_OUTPUT_DIR"}
    env = [e for e in _env(target) if e["name"] in wanted] + [
        {"name": "KUBETUNE_TOKENIZED_CACHE", "value": claim_path(TOKENIZED_CACHE)},
        {"name": "KUBETUNE_TOKENIZED_LINK", "value": tokenized_link(target)},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    container: dict[str, Any] = {
        "name": "preprocess",
        "image": image,
        "imagePullPolicy": spec.image_pull_policy or settings.image_pull_policy,
        "command": ["kubetune"],
        "args": ["preprocess"],
        "env": env + _hub_env(target),
        "volumeMounts": mounts,
        # Relative paths (a user's tokenized_path, media_dir) resolve as they do for the training.
        "workingDir": working_dir(target),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    resources = resource_requirements(cpu=preprocess.resources.cpu, memory=preprocess.resources.memory)
    if resources:
        container["resources"] = resources
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # It talks to no API.
        "automountServiceAccountToken": False,
        "containers": [container],
        "volumes": volumes,
    }
    if spec.model.hub_id is not None:
        # The tokenizer comes with the model: the same download into the cache the training uses.
        pod_spec["initContainers"] = [_model_fetch_container(target, image, rank=False)]
    # Its own nodes (CPU ones), at the job's priority.
    where = Placement(
        node_selector=preprocess.node_selector,
        tolerations=preprocess.tolerations,
        priority_class_name=spec.resources.priority_class_name,
    )
    place(pod_spec, where)
    secure(pod_spec, spec.pod_security)
    pod_labels = meta.labels("kubetune-preprocess", **preprocess_selector(target.name))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta.metadata(owner(target), names.preprocess_job, pod_labels),
        "spec": {
            "completions": 1,
            "parallelism": 1,
            # A failure is the data's or the config's: the operator reports it, nothing retries it.
            "backoffLimit": 0,
            "suspend": target.spec.suspend,
            "template": {"metadata": meta.pod_metadata(spec.pod_metadata, pod_labels), "spec": pod_spec},
        },
    }


def children(target: FineTuneJobTarget) -> list[dict[str, Any]]:
    """Every child, in the order they are applied (the Job last: it needs the others)."""
    return [
        config_map(target),
        service(target),
        service_account(target),
        role(target),
        role_binding(target),
        job(target),
    ]


def output(target: FineTuneJobTarget) -> dict[str, Any]:
    """Where the results are on the claim: an adapter for LoRA and OFT (and the merged model, when asked
    for); full and freeze save a model."""
    out = {"claim": target.spec.storage.claim, "path": target.output_path}
    if llamafactory.trains_adapter(target.spec.config):
        out["adapterPath"] = target.output_path
    merge = target.spec.post_training.merge if target.spec.post_training else None
    if merge is not None:
        out["mergedPath"] = posixpath.join(target.output_path, merge.dir)
    return out
