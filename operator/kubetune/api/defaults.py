"""Operator-wide defaults: images, ports and mount paths that every rendered child agrees on."""

from __future__ import annotations

from dataclasses import dataclass

from kubetune import __version__

FIELD_MANAGER = "kubetune"

# In the trainer pod: the rendered ConfigMap, and the claim (see common.CLAIM_MOUNT_PATH).
CONFIG_MOUNT_PATH = "/etc/kubetune"
EXTRA_CLAIMS_MOUNT_PATH = "/mnt/claims"
LLAMAFACTORY_CONFIG_FILE = "llamafactory.yaml"
DATASET_INFO_FILE = "dataset_info.json"
DEEPSPEED_CONFIG_FILE = "deepspeed.json"
LAUNCHER_CONFIG_FILE = "launcher.json"  # the post-training steps, for the launcher

TRAINER_IMAGE = f"ghcr.io/kubetune/trainer:{__version__}"
OPERATOR_IMAGE = f"ghcr.io/kubetune/operator:{__version__}"  # also runs the ModelServe adapter-sync sidecar
MASTER_PORT = 29500
METRICS_PORT = 9400


@dataclass(frozen=True)
class TrainerSettings:
    """What the operator's installation decides for every trainer pod (set from the Helm chart)."""

    image: str = TRAINER_IMAGE
    image_pull_policy: str = "IfNotPresent"
    master_port: int = MASTER_PORT
    metrics_port: int = METRICS_PORT
    # Time between SIGTERM and SIGKILL: enough for the trainer to write a checkpoint.
    termination_grace_seconds: int = 300
    # The most a resource's spec.podSecurity may relax its pods, as a Pod Security Standards level
    # (api/podspec.py): root, yes; SYS_ADMIN or an unconfined seccomp profile, not unless an administrator
    # says so. The operator creates the pods, perhaps where no admission enforces a level.
    pod_security_limit: str = "baseline"
