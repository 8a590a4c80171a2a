"""The FineTuneJob reconcile: one level-based pass, the same whatever woke it up.

Steps, in order (each reads the cluster, none remembers anything between passes):
1. check the spec and its LLaMA-Factory config (nothing is created for a bad one);
2. look up what it refers to (the claim, ConfigMaps, the hub token Secret);
3. find the current attempt from the Jobs this FineTuneJob owns (by uid); once a failed or disrupted
   attempt's pods have stopped, start the next one (`status.finetunejob` decides whether one follows);
4. render the children and apply them (the Job's template is fixed when its attempt starts: only
   `suspend` changes on a running Job, so spec changes, valid or not, take effect at the next attempt);
5. compute the status from what was observed, patch it when it changed, record an Event per transition,
   and delete the FineTuneJob when its ttlSecondsAfterFinished has expired.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from kubetune.api import finetunejob as ftj
from kubetune.api.datasetinfo import dataset_info_problems
from kubetune.api.defaults import TrainerSettings
from kubetune.api.validation import Problem, finetunejob_spec, pod_security_problems
from kubetune.handlers import events
from kubetune.kube import ChildRefused, Kube, NotOurs, child_problem
from kubetune.render import finetunejob as render
from kubetune.render.names import label_value
from kubetune.runtime.metrics import RESTARTS
from kubetune.runtime.outcome import Key, Outcome
from kubetune.status import finetunejob as status_of

log = logging.getLogger("kubetune.finetunejob")


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


def _output_path_conflicts(kube: Kube, body: dict[str, Any], spec: ftj.FineTuneJobSpec) -> list[Problem]:
    """A `storage.path` on, under or above another FineTuneJob's output path: two jobs writing one directory
    corrupt each other's checkpoints (and overwrite the adapter a ModelServe may serve)."""
    if spec.storage.path is None:
        # Default paths never overlap one another, and a set path may not touch any of them (below): the
        # common case needs no listing.
        return []
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    mine = spec.output_path(namespace, name)
    owner = ftj.default_path_owner(mine, namespace, name)
    if owner is not None:
        whose = (
            f"FineTuneJob {owner}'s default output path runs/{namespace}/{owner}"
            if owner != "*"
            else f"the default output paths of every FineTuneJob in namespace {namespace}"
        )
        message = f"spec.storage.path: {mine} overlaps {whose}: choose a path of its own"
        return [Problem("OutputPathInUse", message, terminal=True)]
    problems = []
    for other in kube.list("FineTuneJob", namespace):
        other_meta = other["metadata"]
        storage = (other.get("spec") or {}).get("storage") or {}
        if other_meta.get("uid") == meta.get("uid") or storage.get("claim") != spec.storage.claim:
            continue
        theirs = ftj.output_path_of(storage.get("path"), namespace, other_meta["name"])
        # Of two jobs whose set paths overlap, the newer one is refused: the older may be writing already.
        older = (other_meta.get("creationTimestamp") or "", other_meta["name"]) < (
            meta.get("creationTimestamp") or "",
            name,
        )
        if older and ftj.paths_overlap(mine, theirs):
            problems.append(
                Problem(
                    "OutputPathInUse",
                    f"spec.storage.path: {mine} overlaps FineTuneJob {other_meta['name']}'s output path "
                    f"{theirs} on claim {spec.storage.claim}: choose a path of its own",
                    terminal=True,
                )
            )
    return problems


# A Job's pods normally appear within seconds; only then is a missing one worth an Event lookup.
FAILED_CREATE_AFTER_SECONDS = 5


def _age_seconds(obj: dict[str, Any]) -> float:
    created = obj["metadata"].get("creationTimestamp")
    if not created:
        return 0.0
    then = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return (datetime.now(UTC) - then).total_seconds()


def reconcile(kube: Kube, body: dict[str, Any], settings: TrainerSettings) -> Outcome:
    meta = body["metadata"]
    name, namespace, uid = meta["name"], meta["namespace"], meta["uid"]
    generation = meta.get("generation", 1)
    previous = body.get("status") or {}

    spec, problems = finetunejob_spec(body.get("spec") or {})
    if spec is not None:
        problems += pod_security_problems(spec.pod_security, settings.pod_security_limit)
    dataset_info: dict[str, Any] = {}
    deepspeed_config = None
    if spec is not None and not problems:
        dataset_info, deepspeed_config, problems = resolve_references(kube, namespace, spec)

    # Step 3: the current attempt is the newest of this FineTuneJob's own Jobs (by owner uid: a Job left
    # by an earlier FineTuneJob of the same name is not ours); a failed one is followed by the next.
    labelled = kube.list("Job", namespace, {render.FTJ_LABEL: label_value(name)})
    jobs = [j for j in labelled if status_of.owned_by(j, uid)]
    leftovers = [j for j in labelled if not status_of.owned_by(j, uid)]
    attempt = max([status_of.attempt_of(j) for j in jobs] + [previous.get("attempt") or 1, 1])
    job = next((j for j in jobs if status_of.attempt_of(j) == attempt), None)
    finished_before = status_of.has_finished(previous)
    end = status_of.attempt_end(job)
    used = status_of.history(jobs, attempt, previous)
    if (
        spec is not None
        and not finished_before
        and status_of.next_attempt_allowed(end, used, spec.max_restarts)
        # Its pods have stopped: two attempts never write the same output directory at once.
        and status_of.job_stopped(job)
    ):
        failed_pods = _pods_of(kube, namespace, name, attempt, job)
        failure = status_of.pod_failures(failed_pods)
        disrupted = end == status_of.AttemptEnd.DISRUPTED
        reason, what = ("AttemptDisrupted", "was disrupted") if disrupted else ("AttemptFailed", "failed")
        events.post(kube, body, "Warning", reason, f"attempt {attempt} {what}: {failure or 'the Job failed'}")
        attempt += 1
        job, end = None, None
        RESTARTS.inc()
        used = status_of.history(jobs, attempt, previous)
    if job is None and not finished_before and spec is not None:
        # The attempt's Job deleted by hand while it ran: its pods may still write checkpoints into the
        # output path. The next attempt waits for them, and takes the next name (new pods, new hostnames).
        orphans = _pods_without_job(kube, namespace, name, attempt, jobs)
        if orphans:
            problems = [*problems, status_of.job_deleted_problem(attempt, len(orphans))]
        elif status_of.job_deleted_while_running(previous, attempt):
            events.post(
                kube, body, "Warning", "AttemptDisrupted", f"attempt {attempt}'s Job was deleted while it ran"
            )
            attempt += 1
            used = status_of.History(used.restarts, used.disruptions + 1)
    if job is None and not finished_before:
        if spec is not None and not problems:
            # Checked when an attempt is about to start: that is when the path gets written.
            problems = _output_path_conflicts(kube, body, spec)
        # A Job left by an earlier FineTuneJob of the same name keeps its name: the next attempt takes the
        # next free one. One still running would write the same output path: wait for it to go.
        names = render.FineTuneJobNames(name)
        taken = {j["metadata"]["name"] for j in leftovers}
        while names.job(attempt) in taken:
            attempt += 1
        running = sorted(j["metadata"]["name"] for j in leftovers if not status_of.job_stopped(j))
        if running:
            problems = [
                *problems,
                Problem(
                    "LeftoverJob",
                    f"Job {', '.join(running)} (left by an earlier FineTuneJob {name}, not owned by this "
                    f"one) still runs on the same output path: delete it or wait for it to finish",
                    terminal=False,
                ),
            ]

    # Preprocessing (spec.dataset.preprocess): a CPU-only Job before the first attempt; the training Job
    # is created only once it succeeded. Once an attempt exists, every later one trains on what it left.
    preprocess = None
    if spec is not None and spec.dataset.preprocessing:
        preprocess = _preprocess_of(kube, namespace, name, uid)
    # The training config names the tokenized dataset only when this job's preprocessing made it (enabled
    # by an edit after an attempt started, or deleted by hand: later attempts tokenize for themselves).
    preprocessed = preprocess is not None and status_of.preprocessed(preprocess.job)
    waiting_for_preprocess = preprocess is not None and not preprocessed and not jobs

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
            preprocessed=preprocessed,
            settings=settings,
        )
    if target is not None and not finished_before and end is None:
        if not problems:
            try:
                # An attempt takes what its children say when it starts: they are written then (a
                # running attempt's pods have read them already), and a Job exists only after them.
                if job is None:
                    *independent, binding, _ = render.children(target)
                    kube.ensure_all(independent)
                    # Only once the launcher's ServiceAccount is known to be this job's: a same-named one
                    # of someone else's would be handed the launcher's Role.
                    kube.ensure(binding)
                if job is None and waiting_for_preprocess:
                    preprocess = _apply_preprocess(kube, target, preprocess)  # type: ignore[arg-type]
                elif job is None:
                    job = kube.ensure(render.job(target))
            except (NotOurs, ChildRefused) as error:
                # Someone else's object under a child's name, or a value the API server refuses: in status.
                problems.append(child_problem(error))
        # `suspend` is the one field of a running attempt's Job that follows the spec, valid or not: a
        # job whose edited spec was refused can still be paused.
        if job is not None and bool(job["spec"].get("suspend")) != render.job_suspended(target):
            suspend = {"spec": {"suspend": render.job_suspended(target)}}
            job = kube.patch_merge("Job", namespace, job["metadata"]["name"], suspend)

    pods = _pods_of(kube, namespace, name, attempt, job) if job is not None else []
    failed_create = None
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    # A spec refused by the models has no shape: the running attempt keeps the one it started with.
    nodes, gpus_per_node = _shape(spec, previous)
    if job is not None and end is None and not job["spec"].get("suspend") and len(live) < nodes:
        # Pods normally appear within seconds; only a Job that still misses some is worth the lookup.
        failed_create = kube.pods_refused(job) if _age_seconds(job) >= FAILED_CREATE_AFTER_SECONDS else None

    # Step 5: status.
    observation = status_of.Observation(
        generation=generation,
        now=now(),
        previous=previous,
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        max_restarts=spec.max_restarts if spec else 0,
        overfitting_patience=spec.overfitting_patience if spec else status_of.curves.DEFAULT_PATIENCE,
        suspend=spec.suspend if spec else False,
        queue_name=spec.queue_name if spec else None,
        attempt=attempt,
        restarts=used.restarts,
        disruptions=used.disruptions,
        problems=problems,
        job=job,
        pods=pods,
        failed_create=failed_create,
        output=render.output(target) if target is not None else None,
        # After the first attempt started, a preprocessing Job deleted by hand changes nothing.
        preprocess=preprocess if preprocess is not None and (preprocess.job or not jobs) else None,
    )
    status = status_of.compute(observation)
    changed = _differs(previous, status)
    if changed:
        kube.patch_status("FineTuneJob", namespace, name, status, uid)
        for event in status_of.transitions(previous, status):
            events.post(kube, body, event.type, event.reason, event.message)
    requeue_after = None
    if spec is not None and status_of.ttl_expired(status, spec.ttl_seconds_after_finished, observation.now):
        # ttlSecondsAfterFinished: the children go with it; the claim and its outputs stay.
        log.info("deleting %s/%s: finished at %s", namespace, name, status.get("completionTime"))
        kube.delete("FineTuneJob", namespace, name, uid=uid)
    elif spec is not None:
        requeue_after = status_of.ttl_remaining(status, spec.ttl_seconds_after_finished, observation.now)
    if failed_create is None and job is not None and end is None and len(live) < nodes:
        # Pods that do not appear are reported by no watch: look again for a FailedCreate Event.
        requeue_after = min(requeue_after or FAILED_CREATE_AFTER_SECONDS, FAILED_CREATE_AFTER_SECONDS)
    wake: tuple[Key, ...] = ()
    if changed and status.get("phase") in (ftj.Phase.SUCCEEDED.value, ftj.Phase.FAILED.value):
        # Its adapter is ready, or never will be: the ModelServes serving it decide again.
        wake = tuple(
            Key("ModelServe", namespace, other["metadata"]["name"])
            for other in kube.list("ModelServe", namespace)
            if any(a.get("fineTuneJob") == name for a in (other.get("spec") or {}).get("adapters") or [])
        )
    return Outcome(status=status, changed=changed, requeue_after=requeue_after, wake=wake)


def _preprocess_of(kube: Kube, namespace: str, name: str, uid: str) -> status_of.PreprocessObservation:
    """This FineTuneJob's preprocessing Job (by owner uid) and the pods that Job owns."""
    selector = {render.PREPROCESS_LABEL: label_value(name)}
    job = next((j for j in kube.list("Job", namespace, selector) if status_of.owned_by(j, uid)), None)
    if job is None:
        return status_of.PreprocessObservation()
    job_uid = job["metadata"].get("uid", "")
    pods = [p for p in kube.list("Pod", namespace, selector) if status_of.owned_by(p, job_uid)]
    return status_of.PreprocessObservation(job=job, pods=pods)


def _apply_preprocess(
    kube: Kube, target: render.FineTuneJobTarget, preprocess: status_of.PreprocessObservation
) -> status_of.PreprocessObservation:
    """Creates the preprocessing Job, or follows spec.suspend on it; a finished one is left as it is."""
    job = preprocess.job
    if job is None:
        return status_of.PreprocessObservation(job=kube.ensure(render.preprocess_job(target)))
    if status_of.attempt_end(job) is None and bool(job["spec"].get("suspend")) != target.spec.suspend:
        patched = kube.patch_merge(
            "Job", target.namespace, job["metadata"]["name"], {"spec": {"suspend": target.spec.suspend}}
        )
        return status_of.PreprocessObservation(job=patched, pods=preprocess.pods)
    return preprocess


def _shape(spec: ftj.FineTuneJobSpec | None, previous: dict[str, Any]) -> tuple[int, int]:
    if spec is not None:
        return spec.resources.nodes, spec.resources.gpus_per_node
    nodes, _, gpus = str(previous.get("shape") or "1x0").partition("x")
    try:
        return int(nodes), int(gpus)
    except ValueError:
        return 1, 0


def _pods_of(
    kube: Kube, namespace: str, name: str, attempt: int, job: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """The attempt's pods: those its Job owns (a label alone could be a leftover's)."""
    if job is None:
        return []
    labels = {render.FTJ_LABEL: label_value(name), render.ATTEMPT_LABEL: str(attempt)}
    job_uid = job["metadata"].get("uid", "")
    return [p for p in kube.list("Pod", namespace, labels) if status_of.owned_by(p, job_uid)]


def _pods_without_job(
    kube: Kube, namespace: str, name: str, attempt: int, jobs: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Pods of this attempt that still run though no Job of this FineTuneJob owns them (theirs is gone)."""
    labels = {render.FTJ_LABEL: label_value(name), render.ATTEMPT_LABEL: str(attempt)}
    job_uids = {j["metadata"].get("uid") for j in jobs}
    return [
        p
        for p in kube.list("Pod", namespace, labels)
        if not any(status_of.owned_by(p, uid) for uid in job_uids)
        and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    ]


def _differs(previous: dict[str, Any], status: dict[str, Any]) -> bool:
    """Whether any field the operator owns changed (the launcher's progress and metrics are not compared)."""
    return any(previous.get(key) != value for key, value in status.items())
