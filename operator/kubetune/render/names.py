"""Deterministic, DNS-safe names for children: the same resource always gets the same names.

A name that would be too long keeps a readable prefix and ends in a stable hash of the full name, so two
long names that share a prefix never collide.
"""

from __future__ import annotations

import hashlib
import re

DNS_LABEL_MAX = 63
# An Indexed Job's pod hostname is `<job>-<index>`, which must stay a DNS label: leave room for the index.
JOB_NAME_MAX = DNS_LABEL_MAX - 6


def short_hash(text: str, length: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def dns_label(*parts: str, max_length: int = DNS_LABEL_MAX) -> str:
    """Joins parts with `-` into a DNS-1035 label (starts with a letter), shortened with a hash if needed."""
    joined = "-".join(p for p in parts if p)
    name = re.sub(r"[^a-z0-9-]+", "-", joined.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"x{name}"
    if name == joined and len(name) <= max_length:
        return name
    # Cleaned or shortened: the hash of the original keeps two different names from meeting.
    digest = short_hash(joined)
    return f"{name[: max_length - len(digest) - 1].rstrip('-')}-{digest}"


def label_value(value: str) -> str:
    """A label value (at most 63 characters) that stands for `value`, shortened with a hash if needed."""
    if len(value) <= DNS_LABEL_MAX:
        return value
    digest = short_hash(value)
    return f"{value[: DNS_LABEL_MAX - len(digest) - 1].rstrip('-._')}-{digest}"


class FineTuneJobNames:
    """Every child name of one FineTuneJob."""

    def __init__(self, name: str):
        self.owner = name

    @property
    def config_map(self) -> str:
        return dns_label(self.owner, "config", max_length=253)

    @property
    def service(self) -> str:
        # The pods' subdomain: `<job>-<index>.<service>` resolves to each pod.
        return dns_label(self.owner, "workers")

    @property
    def service_account(self) -> str:
        return dns_label(self.owner, "launcher", max_length=253)

    @property
    def role(self) -> str:
        return self.service_account

    def job(self, attempt: int) -> str:
        return dns_label(self.owner, f"a{attempt}", max_length=JOB_NAME_MAX)

    @property
    def preprocess_job(self) -> str:
        # One per FineTuneJob, not per attempt: every attempt trains on what it tokenized.
        return dns_label(self.owner, "preprocess", max_length=JOB_NAME_MAX)

    def master_addr(self, attempt: int, namespace: str) -> str:
        return f"{self.job(attempt)}-0.{self.service}.{namespace}.svc"


class ModelServeNames:
    """Every child name of one ModelServe.

    Every child of either kind is `<resource name>-<suffix>`, and no suffix is used by both kinds for the
    same API kind (a FineTuneJob's Service ends in `-workers`, a ModelServe's in `-vllm`), so a FineTuneJob
    and a ModelServe can never render the same object, whatever their names (docs/operations.md).
    """

    def __init__(self, name: str):
        self.owner = name

    @property
    def service(self) -> str:
        return dns_label(self.owner, "vllm")

    @property
    def deployment(self) -> str:
        return dns_label(self.owner, "vllm")

    @property
    def config_map(self) -> str:
        return dns_label(self.owner, "adapters", max_length=253)

    @property
    def report_config_map(self) -> str:
        return dns_label(self.owner, "adapter-report", max_length=253)

    @property
    def lora_guard(self) -> str:
        # The ConfigMap holding the middleware that keeps vLLM's adapter management API to the sidecar.
        return dns_label(self.owner, "lora-guard", max_length=253)

    @property
    def sidecar_account(self) -> str:
        # The adapter-sync sidecar's ServiceAccount, Role and RoleBinding.
        return dns_label(self.owner, "adapter-sync", max_length=253)

    @property
    def autoscaler(self) -> str:
        # The HPA or the KEDA ScaledObject: one name for both (switching provider swaps one for the other).
        return dns_label(self.owner, "vllm")

    @property
    def legacy_autoscaler(self) -> str:
        """The name the autoscaler (and the Service) had before every child got a suffix: pruned on sight."""
        return dns_label(self.owner)
