"""What was observed of a ModelServe's Deployment, pods and adapters -> its status (one pure function).

Conditions follow what `kubectl wait` and GitOps health checks read: `Ready` (the endpoint answers: at least
one replica is ready), `Progressing` (a rollout is under way), `Degraded` (fewer ready replicas than asked
once the rollout is over, or an adapter that cannot be served), and `AdaptersReady`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from kubetune.api.common import Problem
from kubetune.api.modelserve import Phase
from kubetune.status import conditions
from kubetune.status.pods import pod_pending_reason, pod_ready

CONDITION_TYPES = ("Ready", "Progressing", "Degraded", "AdaptersReady", "Reconciling", "Stalled")


@dataclass(frozen=True)
class AdapterState:
    name: str
    ready: bool
    path: str | None = None  # on the claim: what the sidecars' reports name it by
    # WaitingForFineTuneJob, FineTuneJobFailed, FineTuneJobNotFound, InvalidAdapter, AdapterLoadFailed,
    # Loading
    reason: str | None = None
    message: str | None = None
    loaded_replicas: int | None = None
    note: str | None = None  # said of an adapter that serves: e.g. its FineTuneJob was deleted
    fine_tune_job: str | None = None  # kept in the status: serving goes on if the job is deleted
    rank: int | None = None

    @property
    def broken(self) -> bool:
        """Will not become ready by waiting: someone has to act."""
        return self.reason in ("FineTuneJobFailed", "InvalidAdapter", "AdapterLoadFailed")


@dataclass(frozen=True)
class ModelState:
    """The model a FineTuneJob made (`spec.model.fineTuneJob`), as served."""

    fine_tune_job: str
    path: str  # on the claim
    note: str | None = None  # e.g. its FineTuneJob was deleted: served on from the claim

    def status(self) -> dict[str, Any]:
        entry = {"fineTuneJob": self.fine_tune_job, "path": self.path, "message": self.note}
        return {k: v for k, v in entry.items() if v is not None}


def parse_reports(data: dict[str, str] | None) -> dict[str, Any]:
    """The report ConfigMap's data ({pod: JSON}) -> {pod: report}; a key that is not JSON is ignored."""
    reports = {}
    for pod, text in (data or {}).items():
        try:
            report = json.loads(text)
        except (TypeError, ValueError):
            continue
        if isinstance(report, dict):
            reports[pod] = report
    return reports


def loaded(
    adapters: list[AdapterState], pods: list[dict[str, Any]], reports: dict[str, Any]
) -> list[AdapterState]:
    """The resolved adapters, now with what the ready replicas' sidecars say their vLLM really serves.

    An adapter is ready when every ready replica has loaded it from its current path (a request for it is
    then served whichever replica answers); one that a replica's vLLM refused is AdapterLoadFailed, with
    vLLM's words; otherwise it is Loading (a sidecar has not got to it yet, or no replica is ready).
    """
    ready_pods = [p["metadata"]["name"] for p in pods if pod_ready(p)]
    out = []
    for adapter in adapters:
        if not adapter.ready:
            out.append(adapter)
            continue
        seen = [
            ((reports.get(pod) or {}).get("adapters") or {}).get(adapter.name) or {} for pod in ready_pods
        ]
        # What it loaded is named by its path on the claim (the pods' mount point is theirs to choose).
        current = [r for r in seen if r.get("claimPath") == adapter.path]
        failed = next((r for r in current if r.get("state") == "Failed"), None)
        count = sum(r.get("state") == "Loaded" for r in current)
        if failed is not None:
            message = failed.get("message") or "vLLM did not load it"
            state = replace(
                adapter, ready=False, reason="AdapterLoadFailed", message=message, loaded_replicas=count
            )
        elif ready_pods and count == len(ready_pods):
            state = replace(adapter, loaded_replicas=count, message=adapter.note)
        else:
            message = (
                f"loaded by {count} of {len(ready_pods)} ready vLLM replica(s)"
                if ready_pods
                else "waiting for a ready vLLM replica to load it"
            )
            state = replace(adapter, ready=False, reason="Loading", message=message, loaded_replicas=count)
        out.append(state)
    return out


@dataclass(frozen=True)
class Observation:
    generation: int
    now: str
    previous: dict[str, Any]
    endpoint: str
    served_model_name: str
    selector: str
    desired_replicas: int
    problems: list[Problem] = field(default_factory=list)
    deployment: dict[str, Any] | None = None
    pods: list[dict[str, Any]] = field(default_factory=list)
    adapters: list[AdapterState] = field(default_factory=list)  # as resolved from the spec
    reports: dict[str, Any] = field(default_factory=dict)  # {pod name: its sidecar's report}
    applied_children: str | None = None  # the hash of the children, when this pass saw all of them applied
    model: ModelState | None = None  # spec.model.fineTuneJob's, once resolved


def _rollout(deployment: dict[str, Any], desired: int) -> tuple[int, bool, bool]:
    """(ready replicas, whether the current template is rolled out, whether the rollout is stuck)."""
    status = deployment.get("status") or {}
    meta = deployment.get("metadata") or {}
    ready = int(status.get("readyReplicas") or 0)
    progressing = conditions.of(deployment, "Progressing")
    stuck = progressing.get("reason") == "ProgressDeadlineExceeded"
    current = (status.get("observedGeneration") or 0) >= (meta.get("generation") or 0)
    all_new = (
        int(status.get("updatedReplicas") or 0) >= desired and int(status.get("replicas") or 0) <= desired
    )
    available = int(status.get("availableReplicas") or 0) >= desired
    # Rolled out: all pods run the current template, and were all available once (the Deployment says so).
    done = current and all_new and (available or progressing.get("reason") == "NewReplicaSetAvailable")
    return ready, done, stuck


@dataclass(frozen=True)
class Verdict:
    """Where the ModelServe stands: its phase, why, and what its replicas are doing."""

    phase: Phase
    reason: str
    message: str
    ready_replicas: int = 0
    rollout_done: bool = False
    stuck: bool = False


def compute(obs: Observation) -> dict[str, Any]:
    """The status: the adapters as the replicas serve them, the verdict, the conditions, the counts."""
    adapter_states = loaded(obs.adapters, obs.pods, obs.reports)
    adapters_condition = _adapters_condition(adapter_states)
    verdict = _verdict(obs, adapter_states, adapters_condition)
    built = conditions.build(
        _conditions(verdict, adapters_condition), CONDITION_TYPES, obs.previous.get("conditions"), obs.now,
        obs.generation,
    )  # fmt: skip
    # What a request would find: the base once a replica is ready, and the adapters every ready one loaded.
    served = ([obs.served_model_name] if verdict.ready_replicas > 0 else []) + [
        a.name for a in adapter_states if a.ready
    ]
    deployment_status = (obs.deployment or {}).get("status") or {}
    return {
        "phase": verdict.phase.value,
        "reason": verdict.reason,
        "message": verdict.message,
        "conditions": built,
        "observedGeneration": obs.generation,
        "replicas": int(deployment_status.get("replicas") or 0),
        "readyReplicas": verdict.ready_replicas,
        "replicasDisplay": f"{verdict.ready_replicas}/{obs.desired_replicas}",
        "selector": obs.selector,
        "endpoint": obs.endpoint,
        "servedModels": served,
        "adapters": [_adapter_status(a) for a in adapter_states],
        "adaptersDisplay": f"{sum(a.ready for a in adapter_states)}/{len(adapter_states)}",
        "appliedChildren": obs.applied_children,
        # None removes an entry an earlier spec had (the status is written as a merge patch).
        "model": obs.model.status() if obs.model is not None else None,
    }


def _adapters_condition(adapter_states: list[AdapterState]) -> conditions.Wanted:
    """AdaptersReady: all ready, else the first broken one's reason (or the first waiting one's)."""
    not_ready = [a for a in adapter_states if not a.ready]
    if not not_ready:
        return "True", "AdaptersReady", f"{len(adapter_states)} adapter(s) ready"
    first = next((a for a in not_ready if a.broken), not_ready[0])
    return "False", first.reason or "AdapterNotReady", "; ".join(f"{a.name}: {a.message}" for a in not_ready)


def _verdict(
    obs: Observation, adapter_states: list[AdapterState], adapters_condition: conditions.Wanted
) -> Verdict:
    """A spec that cannot be served fails; one waiting for something (a claim, its Deployment) is pending;
    otherwise the rollout decides, and a served ModelServe with a broken adapter is degraded."""
    terminal = [p for p in obs.problems if p.terminal]
    waiting = [p for p in obs.problems if not p.terminal]
    if terminal:
        return Verdict(Phase.FAILED, terminal[0].reason, "; ".join(p.message for p in terminal))
    if waiting:
        return Verdict(Phase.PENDING, waiting[0].reason, "; ".join(p.message for p in waiting))
    if obs.deployment is None:
        return Verdict(Phase.PENDING, "Creating", "creating the vLLM Deployment")
    verdict = _rollout_verdict(obs, obs.deployment)
    broken = next((a for a in adapter_states if a.broken), None)
    if verdict.phase == Phase.READY and broken is not None:
        return replace(
            verdict,
            phase=Phase.DEGRADED,
            reason=broken.reason or "InvalidAdapter",
            message=adapters_condition[2],
        )
    return verdict


def _rollout_verdict(obs: Observation, deployment: dict[str, Any]) -> Verdict:
    ready, done, stuck = _rollout(deployment, obs.desired_replicas)
    desired = obs.desired_replicas
    # A pod that will not start by waiting (unschedulable, an image that cannot be pulled, a crash loop) is
    # named whether or not other replicas serve: a rollout or a scale-up would otherwise only say it is
    # under way until its deadline, ten minutes on.
    pending = next((r for r in map(pod_pending_reason, obs.pods) if r), None)
    if desired == 0:
        phase, reason, message = Phase.PENDING, "ScaledToZero", "scaled to zero replicas"
    elif ready == 0:
        phase = Phase.PENDING
        reason, message = pending or ("Starting", "waiting for vLLM to load the model and pass /health")
    elif stuck:
        phase, reason = Phase.DEGRADED, "ProgressDeadlineExceeded"
        message = _with_pending(f"{ready} of {desired} replica(s) ready; the rollout is stuck", pending)
    elif not done:
        phase, reason = Phase.PROGRESSING, pending[0] if pending else "RollingOut"
        message = _with_pending(f"{ready} of {desired} replica(s) ready; rolling out", pending)
    elif ready < desired:
        phase, reason = Phase.DEGRADED, pending[0] if pending else "ReplicasNotReady"
        message = _with_pending(f"{ready} of {desired} replica(s) ready", pending)
    else:
        phase, reason, message = Phase.READY, "Serving", f"{ready} replica(s) serving {obs.endpoint}"
    return Verdict(phase, reason, message, ready, done, stuck)


def _with_pending(message: str, pending: tuple[str, str] | None) -> str:
    return f"{message}; {pending[1]}" if pending else message


def _conditions(verdict: Verdict, adapters_condition: conditions.Wanted) -> dict[str, conditions.Wanted]:
    reason, message = verdict.reason, verdict.message
    if verdict.phase == Phase.FAILED:  # only a change of the spec can help: nothing is progressing
        ready, progressing, degraded = "False", "False", "True"
    else:  # a pending verdict before any rollout (waiting, creating) is progressing, neither ready nor done
        ready = "True" if verdict.ready_replicas > 0 else "False"
        progressing = "False" if verdict.rollout_done or verdict.stuck else "True"
        degraded = "True" if verdict.phase == Phase.DEGRADED else "False"
    return {
        "Ready": (ready, reason, message),
        "Progressing": (progressing, reason, message),
        "Degraded": (degraded, reason, message),
        "AdaptersReady": adapters_condition,
        # kstatus (Flux): Reconciling while a rollout or the first start is under way; Stalled when only a
        # change of the spec can help.
        "Reconciling": (progressing, reason, message),
        "Stalled": ("True" if verdict.phase == Phase.FAILED else "False", reason, message),
    }


def _adapter_status(adapter: AdapterState) -> dict[str, Any]:
    fields = {
        "name": adapter.name,
        "path": adapter.path,
        "ready": adapter.ready,
        "loadedReplicas": adapter.loaded_replicas,
        "fineTuneJob": adapter.fine_tune_job,
        "rank": adapter.rank,
        "reason": adapter.reason,
        "message": adapter.message,
    }
    return {k: v for k, v in fields.items() if v is not None}


def transitions(previous: dict[str, Any], current: dict[str, Any]) -> list[conditions.Event]:
    """The Events to record for a change of phase, reason or served adapters."""
    events: list[conditions.Event] = []
    if (previous.get("phase"), previous.get("reason")) != (current.get("phase"), current.get("reason")):
        warning = (
            current.get("phase") in (Phase.FAILED, Phase.DEGRADED)
            or current.get("reason") in conditions.WARNING_REASONS
        )
        events.append(
            conditions.Event(
                "Warning" if warning else "Normal", current.get("reason", ""), current.get("message", "")
            )
        )
    before = set(previous.get("servedModels") or [])
    after = set(current.get("servedModels") or [])
    for name in sorted(after - before):
        if before:
            events.append(conditions.Event("Normal", "AdapterAdded", f"serving {name}"))
    for name in sorted(before - after):
        events.append(conditions.Event("Normal", "AdapterRemoved", f"no longer serving {name}"))
    return events
