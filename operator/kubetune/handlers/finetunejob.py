"""The FineTuneJob reconcile: one level-based pass, the same whatever woke it up.

Steps, in order (each reads the cluster, none remembers anything between passes):
1. check the spec and its LLaMA-Factory config (nothing is created for a bad one);
2. look up what it refers to (the claim, ConfigMaps, the hub token Secret);
3. find the current attempt from the Jobs that exist; start the next one after a failure, up to maxRestarts;
4. render the children and apply them (the Job's template is fixed when its attempt starts: only
   `suspend` changes on a running Job, so spec changes take effect at the next attempt);
5. compute the status from what was observed, patch it when it changed, record an Event per transition.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubetune.api import finetunejob as ftj
from kubetune.api.datasetinfo import dataset_info_problems
from kubetune.api.defaults import TrainerSettings
from kubetune.api.validation import Problem, finetunejob_spec
from kubetune.handlers import events
from kubetune.handlers.kube import ChildRefused, Kube, NotOurs, child_problem
from kubetune.handlers.metrics import RESTARTS
from kubetune.render import finetunejob as render
from kubetune.render.names import label_value
from kubetune.status import finetunejob as status_of

log = logging.getLogger("kubetune.finetunejob")

TERMINAL_PHASES = {ftj.Phase.SUCCEEDED.value, ftj.Phase.FAILED.value}


@dataclass(frozen=True)
class Outcome:
    status: dict[str, Any]
    changed: bool
    attempt: int


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _config_map_json(
    kube: Kube, namespace: str, name: str, key: str, what: str
) -> tuple[Any, Problem | None]:
    config_map = kube.get("ConfigMap", namespace, name)
    if config_map is None:
        return None, Problem(
            "MissingConfigMap", f"ConfigMap {name} (for {what}) not found in namespace {namespace}", False
        )
    raw = (config_map.get("data") or {}).get(key)
    if raw is None:
        return None, Problem(
            "MissingConfigMap", f"ConfigMap {name} has no key {key!r} (for {what})", terminal=False
        )
    try:
        return json.loads(raw), None
    except json.JSONDecodeError as error:
        return None, Problem("InvalidConfigMap", f"ConfigMap {name} key {key}: {error}", True)


def resolve_references(
    kube: Kube, namespace: str, spec: ftj.FineTuneJobSpec
) -> tuple[dict[str, Any], dict[str, Any] | None, list[Problem]]:
    """Step 2: the dataset_info entries, a DeepSpeed JSON from a ConfigMap, and what must exist."""
    problems: list[Problem] = []
    claims = {spec.storage.claim}
    if spec.model.claim_and_path is not None:
        claims.add(spec.model.claim_and_path[0])
    for claim in sorted(claims):
        if kube.get("PersistentVolumeClaim", namespace, claim) is None:
            problems.append(
                Problem(
                    "MissingClaim",
                    f"PersistentVolumeClaim {claim} not found in namespace {namespace}: create it "
                    f"or fix spec.storage.claim / spec.model.source",
                    terminal=False,
                )
            )
    # A missing hubTokenSecret is not looked up (the operator holds no right to read Secrets): the pod's
    # own CreateContainerConfigError says which Secret or key is missing (docs/operations.md).

    dataset_info: dict[str, Any] = dict(spec.dataset.info or {})
    ref = spec.dataset.config_map_ref
    if ref is not None:
        loaded, problem = _config_map_json(kube, namespace, ref.name, ref.key, "spec.dataset.configMapRef")
        where = f"ConfigMap {ref.name} key {ref.key} (spec.dataset.configMapRef)"
        if problem:
            problems.append(problem)
        elif found := dataset_info_problems(loaded, where):
            problems += [Problem("InvalidConfigMap", message, terminal=True) for message in found]
        else:
            dataset_info = loaded
    if not problems:
        wanted = spec.dataset_names()
        missing = [n for n in wanted if n not in dataset_info]
        if missing:
            problems.append(
                Problem(
                    "InvalidDataset",
                    f"spec.dataset.names: no dataset_info entry for {', '.join(missing)}",
                    terminal=True,
                )
            )
        dataset_info = {n: dataset_info[n] for n in wanted if n in dataset_info}

    deepspeed_config = None
    if spec.deepspeed is not None and spec.deepspeed.config_map_ref is not None:
        ref = spec.deepspeed.config_map_ref
        deepspeed_config, problem = _config_map_json(
            kube, namespace, ref.name, ref.key, "spec.deepspeed.configMapRef"
        )
        if problem:
            problems.append(problem)
    return dataset_info, deepspeed_config, problems


def _attempt_of(job: dict[str, Any]) -> int:
    try:
        return int(job["metadata"]["labels"][render.ATTEMPT_LABEL])
    except (KeyError, ValueError):
        return 0


def reconcile(
    kube: Kube,
    body: dict[str, Any],
    settings: TrainerSettings,
    *,
    apply_static: bool = True,
) -> Outcome:
    meta = body["metadata"]
    name, namespace, uid = meta["name"], meta["namespace"], meta["uid"]
    generation = meta.get("generation", 1)
    previous = body.get("status") or {}

    spec, problems = finetunejob_spec(body.get("spec") or {})
    dataset_info: dict[str, Any] = {}
    deepspeed_config = None
    if spec is not None and not problems:
        dataset_info, deepspeed_config, problems = resolve_references(kube, namespace, spec)

    # Step 3: the current attempt is the newest Job's; a failed one is followed by the next, within limits.
    jobs = kube.list("Job", namespace, {render.FTJ_LABEL: label_value(name)})
    attempt = max([_attempt_of(j) for j in jobs] + [previous.get("attempt") or 1, 1])
    job = next((j for j in jobs if _attempt_of(j) == attempt), None)
    finished_before = status_of.has_finished(previous)
    if (
        spec is not None
        and not finished_before
        and status_of.job_finished(job) == "Failed"
        and status_of.job_failure_reason(job) != "DeadlineExceeded"
        and attempt - 1 < spec.max_restarts
    ):
        failed_pods = kube.list(
            "Pod", namespace, {render.FTJ_LABEL: label_value(name), render.ATTEMPT_LABEL: str(attempt)}
        )
        failure = "; ".join(f for f in (status_of.pod_failure(p) for p in failed_pods) if f)
        events.post(
            kube, body, "Warning", "AttemptFailed", f"attempt {attempt} failed: {failure or 'the Job failed'}"
        )
        attempt += 1
        job = None
        RESTARTS.inc()

    # Step 4: apply. Nothing is created for a bad spec, and nothing more once the job has finished.
    target = None
    if spec is not None:
        target = render.FineTuneJobTarget(
            name=name,
            namespace=namespace,
            uid=uid,
            spec=spec,
            attempt=attempt,
            dataset_info=dataset_info,
            deepspeed_config=deepspeed_config,
            observed_job_suspend=None if job is None else bool((job.get("spec") or {}).get("suspend")),
            settings=settings,
        )
    if target is not None and not problems and not finished_before and status_of.job_finished(job) is None:
        try:
            if apply_static or job is None:
                for child in render.children(target)[:-1]:
                    kube.apply(child)
            if job is None:
                job = kube.apply(render.job(target))
            elif bool(job["spec"].get("suspend")) != render.job_suspended(target):
                suspend = {"spec": {"suspend": render.job_suspended(target)}}
                job = kube.patch_merge("Job", namespace, job["metadata"]["name"], suspend)
        except (NotOurs, ChildRefused) as error:
            # Someone else's object under a child's name, or a value the API server refuses: said in status.
            problems.append(child_problem(error))

    pods = []
    if job is not None:
        pods = kube.list(
            "Pod", namespace, {render.FTJ_LABEL: label_value(name), render.ATTEMPT_LABEL: str(attempt)}
        )

    if (
        job is not None
        and not pods
        and not job["spec"].get("suspend")
        and status_of.job_finished(job) is None
    ):
        refused = kube.pods_refused(job)  # admission (Pod Security, a policy engine) said no
        if refused:
            problems.append(
                Problem("PodsRefused", f"the training pods are refused: {refused}", terminal=False)
            )

    # Step 5: status.
    observation = status_of.Observation(
        generation=generation,
        now=now(),
        previous=previous,
        nodes=spec.resources.nodes if spec else 1,
        gpus_per_node=spec.resources.gpus_per_node if spec else 0,
        max_restarts=spec.max_restarts if spec else 0,
        suspend=spec.suspend if spec else False,
        queue_name=spec.queue_name if spec else None,
        attempt=attempt,
        problems=problems,
        job=job,
        pods=pods,
        output=render.output(target) if target is not None else None,
    )
    status = status_of.compute(observation)
    changed = _differs(previous, status)
    if changed:
        kube.patch_status("FineTuneJob", namespace, name, status)
        for event in status_of.transitions(previous, status):
            events.post(kube, body, event.type, event.reason, event.message)
    _expire(kube, body, spec, status)
    return Outcome(status=status, changed=changed, attempt=attempt)


def _expire(
    kube: Kube, body: dict[str, Any], spec: ftj.FineTuneJobSpec | None, status: dict[str, Any]
) -> None:
    """ttlSecondsAfterFinished: delete the finished FineTuneJob (its children go with it; the claim stays)."""
    if spec is None or spec.ttl_seconds_after_finished is None or status.get("phase") not in TERMINAL_PHASES:
        return
    finished = status.get("completionTime")
    if not finished:
        return
    age = datetime.now(UTC) - datetime.strptime(finished, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    if age.total_seconds() >= spec.ttl_seconds_after_finished:
        meta = body["metadata"]
        log.info("deleting %s/%s: finished %s ago", meta["namespace"], meta["name"], age)
        kube.delete("FineTuneJob", meta["namespace"], meta["name"])


def _differs(previous: dict[str, Any], status: dict[str, Any]) -> bool:
    """Whether any field the operator owns changed (the launcher's progress and metrics are not compared)."""
    return any(previous.get(key) != value for key, value in status.items())
