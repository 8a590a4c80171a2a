"""The ModelServe reconcile: one level-based pass, the same whatever woke it up.

1. check the spec; 2. resolve the adapters (a FineTuneJob reference waits, as a condition, until that job
has Succeeded); 3. check the claim; 4. render and apply the children (only the ready adapters go into
the adapters ConfigMap); 5. compute the status, patch it when it changed, record an Event per transition.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.rest import ApiException

from kubetune.api import modelserve as ms
from kubetune.api.defaults import TrainerSettings
from kubetune.api.validation import Problem, modelserve_spec, pod_security_problems
from kubetune.handlers import events
from kubetune.kube import ChildRefused, Kube, NotOurs, child_problem
from kubetune.render import modelserve as render
from kubetune.runtime.outcome import Outcome
from kubetune.status import modelserve as status_of

log = logging.getLogger("kubetune.modelserve")

LLAMAFACTORY_DEFAULT_LORA_RANK = 8
ADAPTERS_POLL_SECONDS = 5.0


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
        kind = config.get("finetuning_type", "lora")
        message = (
            f"FineTuneJob {job_name} trained a whole model ({kind}), not an adapter: serve it as a model"
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


def reconcile(
    kube: Kube, body: dict[str, Any], settings: TrainerSettings, sidecar_image: str, *, full: bool = True
) -> Outcome:
    """`full`: also prune the children of a kind the spec no longer asks for (done as well whenever the
    spec changed since the status was last written)."""
    meta = body["metadata"]
    name, namespace, uid = meta["name"], meta["namespace"], meta["uid"]
    previous = body.get("status") or {}
    spec, problems = modelserve_spec(body.get("spec") or {})
    if spec is not None:
        problems += pod_security_problems(spec.pod_security, settings.pod_security_limit)

    adapter_states: list[status_of.AdapterState] = []
    resolved: list[render.ResolvedAdapter] = []
    target = None
    deployment = None
    pods: list[dict[str, Any]] = []
    reports: dict[str, Any] = {}
    wanted: list[dict[str, Any]] | None = None  # the children, once the spec allows any
    applied_children: str | None = None  # their hash, once every one of them is applied
    settled = conflict = False
    if spec is not None:
        before = {a.get("name"): a for a in previous.get("adapters") or [] if isinstance(a, dict)}
        for adapter in spec.adapters:
            state, ready = resolve_adapter(kube, namespace, spec, adapter, before.get(adapter.name))
            adapter_states.append(state)
            if ready is not None:
                resolved.append(ready)
        if not problems and kube.get("PersistentVolumeClaim", namespace, spec.storage.claim) is None:
            problems.append(
                Problem(
                    "MissingClaim",
                    f"PersistentVolumeClaim {spec.storage.claim} not found in namespace {namespace}",
                    terminal=False,
                )
            )
        probe = render.ModelServeTarget(name=name, namespace=namespace, uid=uid, spec=spec)
        deployment = kube.get("Deployment", namespace, probe.deployment_name)
        target = render.ModelServeTarget(
            name=name,
            namespace=namespace,
            uid=uid,
            spec=spec,
            adapters=resolved,
            observed_max_lora_rank=_observed_max_lora_rank(deployment),
            trainer_image=settings.image,
            sidecar_image=sidecar_image,
        )
        if not problems:
            wanted = render.children(target)
            rendered = render.children_hash(wanted)
            # Nothing to write when the children are rendered as they were last applied, every one of them
            # (the Deployment is in the cache: not deleted since). The periodic resync (`full`) applies
            # them all anyway, which repairs a child changed or deleted by hand.
            settled = (
                not full
                and deployment is not None
                and previous.get("appliedChildren") == rendered
                and previous.get("observedGeneration") == meta.get("generation", 1)
            )
            applied_children = rendered
        if not problems and settled:
            report = kube.get("ConfigMap", namespace, target.report_config_map_name)
            reports = status_of.parse_reports((report or {}).get("data"))
        elif not problems:
            for child in wanted:
                try:
                    applied = kube.apply(child)
                except (NotOurs, ChildRefused) as error:
                    # Nothing further is written beside someone else's object (the Deployment would mount it).
                    problems.append(child_problem(error))
                    applied_children, conflict = None, True
                    break
                except ApiException as error:
                    if child["kind"] == "ScaledObject" and error.status == 404:
                        applied_children = None
                        problems.append(
                            Problem(
                                "KedaNotInstalled",
                                "autoscaling.provider is keda, but KEDA is not installed",
                                False,
                            )
                        )
                        continue
                    raise
                if child["kind"] == "Deployment":
                    deployment = applied
                if child["metadata"]["name"] == target.report_config_map_name:
                    reports = status_of.parse_reports(applied.get("data"))
        # The children are a set: any this ModelServe may have that the spec no longer asks for goes, if
        # it is this one's (switching autoscaler provider, autoscaling removed, an earlier release's name).
        # Only the spec changes that set, so it is checked then, and on the periodic resync.
        spec_changed = previous.get("observedGeneration") != meta.get("generation", 1)
        if target is not None and wanted is not None and not conflict and (full or spec_changed):
            kept = {(c["kind"], c["metadata"]["name"]) for c in wanted}
            for kind, old_name in sorted(render.possible_children(target) - kept):
                kube.delete_owned(kind, namespace, old_name, uid)
        if target is not None and wanted is not None:
            pods = kube.list("Pod", namespace, render.selector(target))
            refused = _replica_failure(deployment)
            if refused and not (deployment or {}).get("status", {}).get("readyReplicas"):
                problems.append(Problem("PodsRefused", f"the vLLM pods are refused: {refused}", False))

    served_name = target.served_model_name if target else name
    observation = status_of.Observation(
        generation=meta.get("generation", 1),
        now=now(),
        previous=previous,
        endpoint=target.endpoint if target else "",
        served_model_name=served_name,
        selector=",".join(f"{k}={v}" for k, v in render.selector(target).items()) if target else "",
        desired_replicas=render.desired_replicas(spec) if spec else 0,
        problems=problems,
        deployment=deployment,
        pods=pods,
        adapters=adapter_states,
        reports=reports,
        applied_children=applied_children,
    )
    status = status_of.compute(observation)
    changed = any(previous.get(k) != v for k, v in status.items())
    if changed:
        kube.patch_status("ModelServe", namespace, name, status, uid)
        for type_, reason, message in status_of.transitions(previous, status):
            events.post(kube, body, type_, reason, message)
    # The sidecars report what vLLM loaded into a ConfigMap the operator does not watch (that would need
    # the right to read every ConfigMap): while an adapter is not served yet, look again in a few seconds.
    pending = status_of.adapters_pending(status)
    return Outcome(status=status, changed=changed, requeue_after=ADAPTERS_POLL_SECONDS if pending else None)
