"""The ModelServe reconcile: one level-based pass, the same whatever woke it up.

`STEPS`, in order, each adding what it found or decided to the pass (`Pass`): `check_spec`;
`resolve_model` (a model a FineTuneJob made: nothing is served until it is there); `resolve_adapters` (a
FineTuneJob reference waits, as a condition, until that job has Succeeded); `check_claim`;
`render_children` (only the ready adapters go into the adapters ConfigMap); `apply_children`;
`prune_children`; `find_pods`. Then the status is computed once (`observe`, status/modelserve.py's pure
`compute`), and `write_status` patches it when it changed and records an Event per transition.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.rest import ApiException

from kubetune import rfc3339
from kubetune.api import llamafactory
from kubetune.api import modelserve as ms
from kubetune.api.defaults import TrainerSettings
from kubetune.api.validation import Problem, modelserve_spec, pod_security_problems, spec_of
from kubetune.handlers import events
from kubetune.handlers.reconcile_pass import ResourcePass
from kubetune.kube import ADAPTER_REPORT, ChildRefused, Kube, NotOurs, child_problem
from kubetune.render import modelserve as render
from kubetune.runtime.outcome import Outcome
from kubetune.status import modelserve as status_of
from kubetune.status.pods import of_deployment

log = logging.getLogger("kubetune.modelserve")

LLAMAFACTORY_DEFAULT_LORA_RANK = 8


def resolve_adapter(
    kube: Kube,
    namespace: str,
    spec: ms.ModelServeSpec,
    adapter: ms.AdapterSpec,
    previous: dict[str, Any] | None = None,
) -> tuple[status_of.AdapterState, render.ResolvedAdapter | None]:
    """Where the adapter is, or why it is not (yet) there. `previous` is its entry in the last status."""
    claim = spec.storage.claim
    if adapter.path is not None:
        path = adapter.path
        if path.startswith("pvc://"):
            other, _, path = path.removeprefix("pvc://").partition("/")
            if other != claim:
                message = f"is on claim {other}, but only the storage claim {claim} is mounted"
                return status_of.AdapterState(
                    adapter.name, False, adapter.path, "InvalidAdapter", message
                ), None
        state = status_of.AdapterState(adapter.name, True, path.strip("/"))
        return state, render.ResolvedAdapter(adapter.name, render.claim_path(path))

    job_name = adapter.fine_tune_job or ""
    job = kube.get("FineTuneJob", namespace, job_name)
    phase = ((job or {}).get("status") or {}).get("phase")
    kept = (previous or {}).get("path") if (previous or {}).get("fineTuneJob") == job_name else None
    if kept and phase != "Succeeded":
        # Deleted after it succeeded (by hand, or its own TTL), or created again under the same name and
        # not (yet) successful: the adapter it trained outlives it on the claim, and goes on being served
        # from there until a new one is ready; the status says so.
        if job is None:
            note = f"FineTuneJob {job_name} was deleted; serving its adapter from the claim ({kept})"
        else:
            note = (
                f"FineTuneJob {job_name} is {phase or 'Pending'} again; serving the adapter it trained "
                f"before from the claim ({kept}) until it succeeds"
            )
        state = status_of.AdapterState(adapter.name, True, kept, note=note, fine_tune_job=job_name)
        rank = (previous or {}).get("rank")
        return state, render.ResolvedAdapter(
            adapter.name, render.claim_path(kept), rank if isinstance(rank, int) else None
        )
    if job is None:
        message = f"FineTuneJob {job_name} not found in namespace {namespace}"
        return status_of.AdapterState(adapter.name, False, None, "FineTuneJobNotFound", message), None
    status = job.get("status") or {}
    if phase == "Failed":
        message = f"FineTuneJob {job_name} failed: {status.get('message', '')}".rstrip(": ")
        return status_of.AdapterState(adapter.name, False, None, "FineTuneJobFailed", message), None
    if phase != "Succeeded":
        message = f"waiting for FineTuneJob {job_name} to succeed (now {phase or 'Pending'})"
        return status_of.AdapterState(adapter.name, False, None, "WaitingForFineTuneJob", message), None
    output = status.get("output") or {}
    config = (job.get("spec") or {}).get("config") or {}
    if not output.get("adapterPath"):
        kind = llamafactory.finetuning_type(config)
        message = (
            f"FineTuneJob {job_name} trained a whole model ({kind}), not an adapter: serve it as the "
            "ModelServe's model (spec.model.fineTuneJob)"
        )
        return status_of.AdapterState(adapter.name, False, None, "InvalidAdapter", message), None
    if output.get("claim") != claim:
        message = f"FineTuneJob {job_name}'s adapter is on claim {output.get('claim')}, not {claim}"
        return status_of.AdapterState(adapter.name, False, None, "InvalidAdapter", message), None
    path = output["adapterPath"]
    rank = config.get("lora_rank", LLAMAFACTORY_DEFAULT_LORA_RANK)
    rank = rank if isinstance(rank, int) else None
    resolved = render.ResolvedAdapter(adapter.name, render.claim_path(path), rank)
    return status_of.AdapterState(adapter.name, True, path, fine_tune_job=job_name, rank=rank), resolved


def _observed_max_lora_rank(deployment: dict[str, Any] | None) -> int | None:
    if deployment is None:
        return None
    for container in deployment["spec"]["template"]["spec"].get("containers", []):
        args = container.get("args") or []
        if "--max-lora-rank" in args:
            value = args[args.index("--max-lora-rank") + 1]
            return int(value) if re.fullmatch(r"\d+", value) else None
    return None


def _replica_failure(deployment: dict[str, Any] | None) -> str | None:
    """The Deployment's ReplicaFailure condition (its ReplicaSet could not create pods: admission said no)."""
    for condition in ((deployment or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
            return condition.get("message") or condition.get("reason") or "FailedCreate"
    return None


@dataclass
class Pass(ResourcePass):
    """What one reconcile of a ModelServe has found and decided so far; each step adds to it."""

    sidecar_image: str
    full: bool
    spec: ms.ModelServeSpec | None = None
    problems: list[Problem] = field(default_factory=list)
    model: status_of.ModelState | None = None  # spec.model.fineTuneJob's, once resolved
    adapters: list[status_of.AdapterState] = field(default_factory=list)
    resolved: list[render.ResolvedAdapter] = field(default_factory=list)
    target: render.ModelServeTarget | None = None
    deployment: dict[str, Any] | None = None
    pods: list[dict[str, Any]] = field(default_factory=list)
    reports: dict[str, Any] = field(default_factory=dict)
    wanted: list[dict[str, Any]] | None = None  # the children, once the spec allows any
    applied_children: str | None = None  # their hash, once every one of them is applied
    settled: bool = False  # rendered as last applied: nothing to write
    conflict: bool = False  # a child's name is someone else's

    @property
    def spec_changed(self) -> bool:
        return self.previous.get("observedGeneration") != self.meta.get("generation", 1)


def reconcile(
    kube: Kube, body: dict[str, Any], settings: TrainerSettings, sidecar_image: str, *, full: bool = True
) -> Outcome:
    """One level-based pass. `full`: also re-apply every child and prune those of a kind the spec no
    longer asks for (done as well whenever the spec changed since the status was last written)."""
    state = Pass(body, settings, sidecar_image, full)
    for step in STEPS:
        step(kube, state)
    status = status_of.compute(observe(state))
    return write_status(kube, state, status)


def check_spec(kube: Kube, state: Pass) -> None:
    state.spec, state.problems = spec_of(state.body, modelserve_spec)
    if state.spec is not None:
        state.problems += pod_security_problems(state.spec.pod_security, state.settings.pod_security_limit)


def resolve_model(kube: Kube, state: Pass) -> None:
    """The model a FineTuneJob made, when `spec.model` names one: nothing is served until it is there."""
    if state.spec is None or state.spec.model.fine_tune_job is None:
        return
    previous = state.previous.get("model")
    model, problem = resolve_job_model(
        kube, state.namespace, state.spec, previous if isinstance(previous, dict) else None
    )
    state.model = model
    if problem is not None:
        state.problems.append(problem)


def resolve_job_model(
    kube: Kube, namespace: str, spec: ms.ModelServeSpec, previous: dict[str, Any] | None
) -> tuple[status_of.ModelState | None, Problem | None]:
    """Where the FineTuneJob's model is (its merged export, or the output of a full or freeze training),
    or why it is not (yet) there. As for adapters, a model once served goes on being served from the
    claim if its job is deleted or runs again."""
    job_name = spec.model.fine_tune_job or ""
    job = kube.get("FineTuneJob", namespace, job_name)
    status = (job or {}).get("status") or {}
    phase = status.get("phase")
    kept = (previous or {}).get("path") if (previous or {}).get("fineTuneJob") == job_name else None
    if kept and phase != "Succeeded":
        if job is None:
            note = f"FineTuneJob {job_name} was deleted; serving its model from the claim ({kept})"
        else:
            note = f"FineTuneJob {job_name} is {phase or 'Pending'} again; serving its earlier model ({kept})"
        return status_of.ModelState(job_name, kept, note), None
    where = "spec.model.fineTuneJob"
    if job is None:
        message = f"{where}: FineTuneJob {job_name} not found in namespace {namespace}"
        return None, Problem("FineTuneJobNotFound", message, terminal=False)
    if phase == "Failed":
        message = f"{where}: FineTuneJob {job_name} failed: {status.get('message', '')}".rstrip(": ")
        return None, Problem("FineTuneJobFailed", message + "; create it again to serve its model", False)
    if phase != "Succeeded":
        now = phase or "Pending"
        message = f"waiting for FineTuneJob {job_name} to succeed (now {now}): its model is served then"
        return None, Problem("WaitingForFineTuneJob", message, terminal=False)
    output = status.get("output") or {}
    if output.get("claim") != spec.storage.claim:
        message = (
            f"{where}: FineTuneJob {job_name} wrote its model on claim {output.get('claim')}, not on "
            f"spec.storage.claim ({spec.storage.claim})"
        )
        return None, Problem("InvalidModel", message, terminal=True)
    config = (job.get("spec") or {}).get("config") or {}
    path = output.get("mergedPath") or (None if llamafactory.trains_adapter(config) else output.get("path"))
    if not path:
        message = (
            f"{where}: FineTuneJob {job_name} trained an adapter ({llamafactory.finetuning_type(config)}) "
            "and merged none: serve it under spec.adapters, or set its postTraining.merge"
        )
        return None, Problem("InvalidModel", message, terminal=True)
    return status_of.ModelState(job_name, path), None


def resolve_adapters(kube: Kube, state: Pass) -> None:
    """Where each adapter is, or why it is not (yet) there."""
    if state.spec is None:
        return
    before = {a.get("name"): a for a in state.previous.get("adapters") or [] if isinstance(a, dict)}
    for adapter in state.spec.adapters:
        adapter_state, ready = resolve_adapter(
            kube, state.namespace, state.spec, adapter, before.get(adapter.name)
        )
        state.adapters.append(adapter_state)
        if ready is not None:
            state.resolved.append(ready)


def check_claim(kube: Kube, state: Pass) -> None:
    spec = state.spec
    if spec is None or state.problems:
        return
    if kube.get("PersistentVolumeClaim", state.namespace, spec.storage.claim) is None:
        message = f"PersistentVolumeClaim {spec.storage.claim} not found in namespace {state.namespace}"
        state.problems.append(Problem("MissingClaim", message, terminal=False))


def render_children(kube: Kube, state: Pass) -> None:
    """The children as the spec wants them, and whether they are as last applied (nothing to write: the
    Deployment is in the cache, not deleted since). A resync's pass, `full`, writes them all unless every
    one stands as the operator last wrote it; someone's edit or deletion of one brings such a pass at
    once (runtime/controller.py), which writes it back."""
    spec = state.spec
    if spec is None:
        return
    probe = render.ModelServeTarget(name=state.name, namespace=state.namespace, uid=state.uid, spec=spec)
    state.deployment = kube.get("Deployment", state.namespace, probe.deployment_name)
    state.target = render.ModelServeTarget(
        name=state.name,
        namespace=state.namespace,
        uid=state.uid,
        spec=spec,
        adapters=state.resolved,
        observed_max_lora_rank=_observed_max_lora_rank(state.deployment),
        trainer_image=state.settings.image,
        sidecar_image=state.sidecar_image,
        model_dir=render.claim_path(state.model.path) if state.model is not None else None,
    )
    if state.problems:
        return
    state.wanted = render.children(state.target)
    rendered = render.children_hash(state.wanted)
    # A resync's pass (full) is settled too when every child stands as last written (runtime/cache.py):
    # writing it again would change nothing.
    state.settled = (
        state.deployment is not None
        and state.previous.get("appliedChildren") == rendered
        and not state.spec_changed
        and (not state.full or all(kube.stands(child) for child in state.wanted))
    )
    state.applied_children = rendered


def apply_children(kube: Kube, state: Pass) -> None:
    """Every child in order (nothing further beside someone else's object: the Deployment would mount it),
    but one that stands as the operator last wrote it from this very rendering (runtime/cache.py: an edit
    that adds an adapter writes the adapters ConfigMap alone); settled, only the sidecars' report is read."""
    target = state.target
    if target is None or state.wanted is None or state.problems:
        return
    report_read = False
    for child in [] if state.settled else state.wanted:
        if kube.stands(child):
            continue
        try:
            applied = kube.apply(child)
        except (NotOurs, ChildRefused) as error:
            state.problems.append(child_problem(error))
            state.applied_children, state.conflict = None, True
            return
        except ApiException as error:
            if child["kind"] == "ScaledObject" and error.status == 404:
                state.applied_children = None
                message = "autoscaling.provider is keda, but KEDA is not installed"
                state.problems.append(Problem("KedaNotInstalled", message, False))
                continue
            raise
        if child["kind"] == "Deployment":
            state.deployment = applied
        if child["metadata"]["name"] == target.report_config_map_name:
            state.reports = status_of.parse_reports(applied.get("data"))
            report_read = True
    if not report_read:
        report = kube.get(ADAPTER_REPORT, state.namespace, target.report_config_map_name)
        state.reports = status_of.parse_reports((report or {}).get("data"))


def prune_children(kube: Kube, state: Pass) -> None:
    """The children are a set: any this ModelServe may have that the spec no longer asks for goes, if it
    is this one's (switching autoscaler provider, autoscaling removed, an earlier release's name). Only the
    spec changes that set, so it is checked then, and on the periodic resync."""
    if state.target is None or state.wanted is None or state.conflict:
        return
    if state.settled or not (state.full or state.spec_changed):
        return
    kept = {(c["kind"], c["metadata"]["name"]) for c in state.wanted}
    for kind, old_name in sorted(render.possible_children(state.target) - kept):
        kube.delete_owned(kind, state.namespace, old_name, state.uid)


def find_pods(kube: Kube, state: Pass) -> None:
    """The vLLM pods, and why the Deployment has none, if admission refused them."""
    if state.target is None or state.wanted is None:
        return
    # Listed by label (the index), kept only if the Deployment's: a pod that copies the labels is no replica.
    labelled = kube.list("Pod", state.namespace, render.selector(state.target))
    state.pods = [p for p in labelled if of_deployment(p, state.target.deployment_name)]
    refused = _replica_failure(state.deployment)
    if refused and not (state.deployment or {}).get("status", {}).get("readyReplicas"):
        state.problems.append(Problem("PodsRefused", f"the vLLM pods are refused: {refused}", False))


STEPS: tuple[Callable[[Kube, Pass], None], ...] = (
    check_spec,
    resolve_model,
    resolve_adapters,
    check_claim,
    render_children,
    apply_children,
    prune_children,
    find_pods,
)


def observe(state: Pass) -> status_of.Observation:
    """Everything the status is computed from (status/modelserve.py decides, purely)."""
    target, spec = state.target, state.spec
    selector = render.selector(target) if target else {}
    return status_of.Observation(
        generation=state.meta.get("generation", 1),
        now=rfc3339.now(),
        previous=state.previous,
        endpoint=target.endpoint if target else "",
        served_model_name=target.served_model_name if target else state.name,
        selector=",".join(f"{k}={v}" for k, v in selector.items()),
        desired_replicas=render.desired_replicas(spec) if spec else 0,
        problems=state.problems,
        deployment=state.deployment,
        pods=state.pods,
        adapters=state.adapters,
        reports=state.reports,
        applied_children=state.applied_children,
        model=state.model,
    )


def write_status(kube: Kube, state: Pass, status: dict[str, Any]) -> Outcome:
    previous = state.previous
    changed = any(previous.get(k) != v for k, v in status.items())
    if changed:
        kube.patch_status("ModelServe", state.namespace, state.name, status, state.uid, previous)
        for event in status_of.transitions(previous, status):
            events.post(kube, state.body, event)
    # No look again while an adapter loads: the sidecars' reports come through the watch of the report
    # ConfigMaps (runtime/controller.py), and a FineTuneJob's end through its own.
    return Outcome(status=status, changed=changed)
