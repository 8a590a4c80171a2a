"""Pod-level values a user may set on either kind: how the pods run (Pod Security), the Secrets they get as
environment variables, and the shapes of values the API server checks only once a pod is made of them.

Every shape here is in the CRD schema too (a pattern or a bound), so `kubectl apply` refuses a bad value
before the operator ever renders it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from kubetune.api.cel import Rule
from kubetune.api.common import HUB_TOKEN_ENV, Model, ObjectName, SecretKeyRef, keyed_by_name

# A resource quantity as Kubernetes parses it: `32`, `500m`, `256Gi`, `1.5`, `2e3`.
QUANTITY = r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|[numkMGTPE]|[KMGTPE]i)?$"
Quantity = Annotated[str, Field(pattern=QUANTITY, max_length=64)]

# A label value: empty, or up to 63 alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
LabelValue = Annotated[str, Field(pattern=LABEL_VALUE, max_length=63)]

# A qualified name (label keys, extended resources): an optional DNS-subdomain prefix and a name part.
QUALIFIED_NAME = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
QualifiedName = Annotated[str, Field(pattern=QUALIFIED_NAME, max_length=317)]

# An environment variable name a shell can also use.
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"

# Linux capability names as Kubernetes spells them (`NET_BIND_SERVICE`, without `CAP_`).
Capability = Annotated[str, Field(pattern=r"^[A-Z][A-Z_]*$", max_length=64)]

# The environment the operator sets in its pods: a user's variable of the same name would change how the
# launcher, torchrun or vLLM find each other, so these are refused.
RESERVED_ENV_PREFIXES = ("KUBETUNE_", "VLLM_")
RESERVED_ENV = frozenset(
    {"NNODES", "NODE_RANK", "NPROC_PER_NODE", "MASTER_ADDR", "MASTER_PORT", "FORCE_TORCHRUN", "HOME"}
    | {*HUB_TOKEN_ENV.values(), "HF_HUB_OFFLINE"}
)

# The uid the vLLM container runs as when the spec does not say: the upstream vLLM image has no non-root
# USER, and Pod Security "restricted" needs one. The operator's and the trainer's images have their own.
VLLM_DEFAULT_UID = 1000


class PodSecurity(Model):
    """How the operator's pods run. By default they meet Pod Security "restricted": non-root, no privilege
    escalation, every capability dropped, the runtime's default seccomp profile. Each field relaxes or pins
    one of those for a cluster or an image that needs it; anything else about the pods stays the operator's.
    """

    cel_rules = (
        Rule(
            "!has(self.runAsUser) || self.runAsUser != 0 || (has(self.runAsNonRoot) && !self.runAsNonRoot)",
            "podSecurity.runAsUser 0 is root: set podSecurity.runAsNonRoot: false as well",
            field_path=".runAsUser",
        ),
    )

    run_as_non_root: bool = Field(
        True, description="Refuse to start a container as root (default true; `restricted` needs it)."
    )
    run_as_user: int | None = Field(
        None,
        ge=0,
        le=2147483647,
        description="UID of the containers (default: the image's USER; 1000 for vLLM, whose image has none).",
    )
    run_as_group: int | None = Field(None, ge=0, le=2147483647, description="GID of every container.")
    fs_group: int | None = Field(
        None, ge=0, le=2147483647, description="Group owning the pods' volumes (for claims that honour it)."
    )
    allow_privilege_escalation: bool = Field(
        False, description="Let processes gain more privileges than their parent (default false)."
    )
    seccomp_profile: Literal["RuntimeDefault", "Unconfined"] = Field(
        "RuntimeDefault", description="Seccomp profile of the pods (default `RuntimeDefault`)."
    )
    add_capabilities: list[Capability] | None = Field(
        None,
        max_length=16,
        description="Linux capabilities to add back after dropping all (`restricted` allows only "
        "NET_BIND_SERVICE).",
    )


# The Pod Security Standards' levels, least to most allowed. A relaxation in `spec.podSecurity` needs the
# level it reaches; the operator's installation caps it (`pod_security_problems`), since the operator
# creates the pods for whoever may create the resource, in namespaces where no admission may be enforcing.
POD_SECURITY_LEVELS = ("restricted", "baseline", "privileged")
# baseline: the capabilities a container may add (the container runtimes' default set).
BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
        "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
    }
)  # fmt: skip


def pod_security_needs(security: PodSecurity | None) -> list[tuple[str, str]]:
    """Each relaxation with the Pod Security level it needs: (level, what), in the spec's words."""
    if security is None:
        return []
    needs = []
    if not security.run_as_non_root:
        needs.append(("baseline", "podSecurity.runAsNonRoot: false"))
    if security.run_as_user == 0:
        needs.append(("baseline", "podSecurity.runAsUser: 0 (root)"))
    if security.allow_privilege_escalation:
        needs.append(("baseline", "podSecurity.allowPrivilegeEscalation: true"))
    if security.seccomp_profile == "Unconfined":
        needs.append(("privileged", "podSecurity.seccompProfile: Unconfined"))
    for capability in security.add_capabilities or []:
        if capability in BASELINE_CAPABILITIES - {"NET_BIND_SERVICE"}:
            needs.append(("baseline", f"podSecurity.addCapabilities: {capability}"))
        elif capability != "NET_BIND_SERVICE":
            needs.append(("privileged", f"podSecurity.addCapabilities: {capability}"))
    return needs


def pod_security_over(security: PodSecurity | None, limit: str) -> list[str]:
    """The relaxations above `limit` (one of POD_SECURITY_LEVELS), each with the level it needs."""
    allowed = POD_SECURITY_LEVELS.index(limit)
    return [
        f"{what} needs Pod Security level {level}, above this installation's limit {limit} "
        f"(the operator's KUBETUNE_POD_SECURITY_LIMIT; the Helm chart's podSecurityLimit): remove it, or ask "
        f"the cluster's administrator to raise the limit"
        for level, what in pod_security_needs(security)
        if POD_SECURITY_LEVELS.index(level) > allowed
    ]


class SecretEnvVar(Model):
    """An environment variable of the training container, read from a Secret (never copied anywhere)."""

    name: str = Field(
        pattern=ENV_NAME,
        max_length=256,
        description="The variable, such as `SWANLAB_API_KEY` or `WANDB_API_KEY` (trackers read them).",
    )
    secret_key_ref: SecretKeyRef = Field(description="The Secret key holding the value.")

    @model_validator(mode="after")
    def _not_the_operators(self) -> SecretEnvVar:
        if self.name in RESERVED_ENV or self.name.startswith(RESERVED_ENV_PREFIXES):
            raise ValueError(f"secretEnv: {self.name} is set by the operator; use another variable")
        return self


SecretEnv = Annotated[
    list[SecretEnvVar],
    Field(
        max_length=32,
        description="Environment variables from Secrets, for the tracker keys LLaMA-Factory would otherwise "
        "take in `config` (`SWANLAB_API_KEY`, `WANDB_API_KEY`, ...): the value never leaves the Secret.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    ),
    keyed_by_name("secretEnv"),
]


def label_problems(labels: dict[str, str] | None, field: str) -> list[str]:
    """Label keys and values the API server would refuse in a pod, each naming its field."""
    problems = []
    for key, value in (labels or {}).items():
        if not re.fullmatch(QUALIFIED_NAME, key) or len(key.rpartition("/")[2]) > 63:
            problems.append(f"{field}: {key!r} is not a valid label key")
        if not isinstance(value, str) or not re.fullmatch(LABEL_VALUE, value) or len(value) > 63:
            problems.append(f"{field}.{key}: {value!r} is not a valid label value (63 characters at most)")
    return problems


def require_valid_labels(labels: dict[str, str] | None, field: str) -> None:
    """Refuses (ValueError, naming `field`) labels the API server would refuse in a pod."""
    problems = label_problems(labels, field)
    if problems:
        raise ValueError("; ".join(problems))


TOLERATIONS_SCHEMA = {"items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}


class Placement(Model):
    """Where a resource's pods may run, for both kinds."""

    # The field a refused node selector label is reported under.
    node_selector_field: ClassVar[str] = "resources.nodeSelector"

    node_selector: dict[str, str] | None = Field(None, description="Node labels the pods must match.")
    tolerations: list[dict[str, Any]] | None = Field(
        None, description="Pod tolerations, as in a Pod spec.", json_schema_extra=TOLERATIONS_SCHEMA
    )
    affinity: dict[str, Any] | None = Field(
        None,
        description="Pod affinity, as in a Pod spec.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    priority_class_name: ObjectName | None = Field(None, description="PriorityClass of the pods.")

    @model_validator(mode="after")
    def _node_selector_labels(self) -> Placement:
        require_valid_labels(self.node_selector, self.node_selector_field)
        return self


class PodResources(Placement):
    """What each pod asks for besides its GPUs' count, and where the pods may run, for both kinds."""

    gpu_resource: QualifiedName = Field(
        "nvidia.com/gpu", min_length=1, description="Extended resource name of the GPUs (`nvidia.com/gpu`)."
    )
    cpu: Quantity | None = Field(None, description="CPU request and limit per pod, such as `32`.")
    memory: Quantity | None = Field(None, description="Memory request and limit per pod, such as `256Gi`.")
    shared_memory: Quantity | None = Field(
        None,
        description="Size limit of the memory-backed /dev/shm (default: none; it counts against `memory`).",
    )


class PodMetadata(Model):
    """Extra labels and annotations for the pods (for sidecars, cost tracking, ...)."""

    # The operator's own labels say which resource a pod belongs to (a ModelServe's Service selects its
    # pods by them): a pod of one resource must never pass for another's.
    cel_rules = (
        Rule(
            "!has(self.labels) || self.labels.all(k, !k.startsWith('kubetune.io/'))",
            "podMetadata.labels: labels under kubetune.io/ are the operator's own (they say which resource "
            "a pod belongs to): remove them",
            field_path=".labels",
        ),
    )

    labels: dict[str, str] | None = Field(None, description="Labels added to the pods.")
    annotations: dict[str, str] | None = Field(None, description="Annotations added to the pods.")

    @model_validator(mode="after")
    def _valid_labels(self) -> PodMetadata:
        require_valid_labels(self.labels, "podMetadata.labels")
        return self


__all__ = [
    "BASELINE_CAPABILITIES",
    "POD_SECURITY_LEVELS",
    "LabelValue",
    "PodMetadata",
    "PodSecurity",
    "QualifiedName",
    "Quantity",
    "SecretEnv",
    "SecretEnvVar",
    "label_problems",
    "pod_security_needs",
    "pod_security_over",
]
