"""The operator's own settings: read once from the environment (the Helm chart sets it), never changed."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from kubetune.api.defaults import OPERATOR_IMAGE, TrainerSettings
from kubetune.api.podspec import POD_SECURITY_LEVELS


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name, "").strip().lower()
    if not value:
        return default
    if value not in ("true", "false"):
        raise ValueError(f"{name}={env[name]!r}: true or false")
    return value == "true"


@dataclass(frozen=True)
class LeaderElection:
    """A Lease that one replica holds at a time (runtime/leader.py); None in OperatorConfig: no election."""

    lease: str
    namespace: str
    identity: str
    lease_seconds: float = 15.0
    renew_deadline_seconds: float = 10.0
    retry_seconds: float = 2.0


@dataclass(frozen=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = ()  # empty: cluster-wide
    trainer: TrainerSettings = field(default_factory=TrainerSettings)
    sidecar_image: str = OPERATOR_IMAGE  # the ModelServe pods' adapter-sync sidecar
    metrics_port: int = 8080
    resync_seconds: float = 60.0
    workers: int = 16  # reconcile workers: each holds one resource at a time
    leader_election: LeaderElection | None = None
    # Every call to the API server ends within these (a dead connection answers nothing and never closes).
    api_connect_seconds: float = 5.0
    api_timeout_seconds: float = 30.0
    watch_seconds: int = 30  # the API server ends each watch after this (whole seconds); kopf resumes it
    # Take back this operator's own orphaned children (the chart's adoptOrphans grants the verbs it needs).
    adopt_orphans: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, **overrides: object) -> OperatorConfig:
        """The settings in `env`; `overrides` (the command line's flags, when given) take precedence."""
        namespaces = tuple(n.strip() for n in env.get("KUBETUNE_NAMESPACES", "").split(",") if n.strip())
        limit = env.get("KUBETUNE_POD_SECURITY_LIMIT", TrainerSettings.pod_security_limit)
        if limit not in POD_SECURITY_LEVELS:
            raise ValueError(
                f"KUBETUNE_POD_SECURITY_LIMIT={limit!r}: one of {', '.join(POD_SECURITY_LEVELS)}"
            )
        trainer = TrainerSettings(
            image=env.get("KUBETUNE_TRAINER_IMAGE", TrainerSettings.image),
            image_pull_policy=env.get("KUBETUNE_IMAGE_PULL_POLICY", TrainerSettings.image_pull_policy),
            pod_security_limit=limit,
        )
        election = None
        if env.get("KUBETUNE_LEADER_ELECTION"):
            election = LeaderElection(
                lease=env["KUBETUNE_LEADER_ELECTION"],
                namespace=env.get("POD_NAMESPACE") or "default",
                identity=env.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}",
                lease_seconds=float(env.get("KUBETUNE_LEASE_SECONDS", "15")),
                renew_deadline_seconds=float(env.get("KUBETUNE_RENEW_DEADLINE_SECONDS", "10")),
                retry_seconds=float(env.get("KUBETUNE_LEASE_RETRY_SECONDS", "2")),
            )
        config = cls(
            namespaces=namespaces,
            trainer=trainer,
            sidecar_image=env.get("KUBETUNE_OPERATOR_IMAGE", OPERATOR_IMAGE),
            metrics_port=int(env.get("KUBETUNE_METRICS_PORT", "8080")),
            resync_seconds=float(env.get("KUBETUNE_RESYNC_SECONDS", "60")),
            workers=int(env.get("KUBETUNE_WORKERS", "16")),
            leader_election=election,
            api_connect_seconds=float(env.get("KUBETUNE_API_CONNECT_SECONDS", "5")),
            api_timeout_seconds=float(env.get("KUBETUNE_API_TIMEOUT_SECONDS", "30")),
            watch_seconds=int(env.get("KUBETUNE_WATCH_SECONDS", "30")),
            adopt_orphans=_flag(env, "KUBETUNE_ADOPT_ORPHANS", True),
        )
        return replace(config, **{k: v for k, v in overrides.items() if v is not None})
