"""The FineTuneJob reconcile: one level-based pass, the same whatever woke it up.

`STEPS`, in order, each a function that reads the cluster (through the caches) and adds what it found or
decided to the pass (`Pass`); none remembers anything between passes:
`check_spec` (the spec, its LLaMA-Factory config, what it refers to: nothing is created for a bad one),
`find_attempt` (from the Jobs this FineTuneJob owns, by uid), `follow_a_failed_attempt` and
`follow_a_deleted_job` (when the next attempt starts), `check_before_starting` (the output path, a
leftover Job of the same name), `find_preprocessing`, `render_target`, `ensure_children` (the Job's template
is fixed when its attempt starts: only `suspend` follows the spec on a running Job), `find_pods`. Then the
status is computed once from what was observed (`observe`, status/finetunejob.py's pure `compute`), and
`write_status` patches it when it changed, records an Event per transition and applies
ttlSecondsAfterFinished. A new job's first status waits a moment for its pods (`first_status_wait`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubetune import rfc3339
from kubetune.api import finetunejob as ftj
from kubetune.api.datasetinfo import dataset_info_problems
from kubetune.api.defaults import TrainerSettings
from kubetune.api.validation import Problem, finetunejob_spec, pod_security_problems, spec_of
from kubetune.handlers import events
from kubetune.handlers.reconcile_pass import ResourcePass
from kubetune.kube import ChildRefused, Kube, NotOurs, child_problem
from kubetune.render import finetunejob as render
from kubetune.runtime.metrics import RESTARTS
from kubetune.runtime.outcome import Outcome
from kubetune.status import attempts
from kubetune.status import finetunejob as status_of
from kubetune.status.conditions import Event
from kubetune.status.pods import owned_by

log = logging.getLogger("kubetune.finetunejob")


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


# Seconds from the Job controller's start of a Job (its status.startTime) that a pod it reports missing is
# worth an Event lookup: its FailedCreate Event is posted by then. See `short_of_pods`.
FAILED_CREATE_AFTER_SECONDS = 5
# How long a new FineTuneJob's first status (Pending, Starting) waits for its pods to start, from its
# Job's creationTimestamp (whole seconds: 2 to 3 s in fact). See `first_status_wait`. With 2 (1 to 2 s),
# a loaded control plane's pods ran about when it ended: 2 to 85% of a thousand jobs applied at once still
# wrote Starting, then Running (three runs); with 3, 0, 0, 22 and 79% (four runs).
FIRST_STATUS_WAIT_SECONDS = 3


def _age_seconds(obj: dict[str, Any]) -> float:
    return _seconds_since(obj["metadata"].get("creationTimestamp"))


def _seconds_since(when: str | None) -> float:
    if not when:
        return 0.0
    return (datetime.now(UTC) - rfc3339.parse(when)).total_seconds()


def short_of_pods(job: dict[str, Any], nodes: int) -> bool:
    """Whether the Job controller has started this Job and counts fewer pods than the attempt's nodes: it
    could not create some (its FailedCreate Event says why) or has not replaced one yet.

    Only the Job controller's own count says a pod was refused. A Job of a loaded control plane can lack
    its pods for seconds because the Job controller has not reached it, or because their watch events
    are still on their way: a lookup for those found nothing, and cost a LIST of the namespace's Events
    that the API server reads from etcd whole (Events have no watch cache) and filters, 4 s each at a
    thousand jobs starting. The Job controller writes startTime and its count in the very sync that tried
    to create the pods, and that write wakes the reconcile through the Job's watch.
    """
    status = job.get("status") or {}
    if not status.get("startTime"):
        return False
    return (status.get("active") or 0) + (status.get("succeeded") or 0) < nodes


def _attempt_short_of_pods(state: Pass, nodes: int) -> bool:
    """The running, unsuspended attempt lacks pods, and the Job controller says so too (`short_of_pods`)."""
    job = state.job
    if job is None or state.end is not None or job["spec"].get("suspend"):
        return False
    return len(_live(state.pods)) < nodes and short_of_pods(job, nodes)


@dataclass
class Pass(ResourcePass):
    """What one reconcile of a FineTuneJob has found and decided so far; each step adds to it."""

    spec: ftj.FineTuneJobSpec | None = None
    problems: list[Problem] = field(default_factory=list)
    dataset_info: dict[str, Any] = field(default_factory=dict)
    deepspeed_config: Any = None
    jobs: list[dict[str, Any]] = field(default_factory=list)  # this FineTuneJob's own Jobs (attempts)
    leftovers: list[dict[str, Any]] = field(default_factory=list)  # same labels, an earlier one's
    attempt: int = 1
    job: dict[str, Any] | None = None  # the current attempt's Job
    end: attempts.AttemptEnd | None = None
    used: attempts.History = field(default_factory=attempts.History)
    preprocess: status_of.PreprocessObservation | None = None
    preprocessed: bool = False
    target: render.FineTuneJobTarget | None = None
    pods: list[dict[str, Any]] = field(default_factory=list)
    failed_create: str | None = None

    @property
    def finished_before(self) -> bool:
        return attempts.has_finished(self.previous)

    @property
    def may_start(self) -> bool:
        """No Job for the current attempt yet, and the training is not over."""
        return self.job is None and not self.finished_before


def reconcile(kube: Kube, body: dict[str, Any], settings: TrainerSettings) -> Outcome:
    """One level-based pass: the same steps in the same order, whatever woke it up."""
    state = Pass(body, settings)
    for step in STEPS:
        step(kube, state)
    observation = observe(state)
    status = status_of.compute(observation)
    return write_status(kube, state, observation, status)


def check_spec(kube: Kube, state: Pass) -> None:
    """The spec, its LLaMA-Factory config and what it refers to (the claim, ConfigMaps, the hub token)."""
    state.spec, state.problems = spec_of(state.body, finetunejob_spec)
    if state.spec is None:
        return
    state.problems += pod_security_problems(state.spec.pod_security, state.settings.pod_security_limit)
    if not state.problems:
        state.dataset_info, state.deepspeed_config, state.problems = resolve_references(
            kube, state.namespace, state.spec
        )


def find_attempt(kube: Kube, state: Pass) -> None:
    """The current attempt is the newest of this FineTuneJob's own Jobs (by owner uid: a Job left by an
    earlier FineTuneJob of the same name is not ours)."""
    labelled = kube.list("Job", state.namespace, render.selector(state.name))
    state.jobs = [j for j in labelled if owned_by(j, state.uid)]
    state.leftovers = [j for j in labelled if not owned_by(j, state.uid)]
    state.attempt = max(
        [attempts.attempt_of(j) for j in state.jobs] + [state.previous.get("attempt") or 1, 1]
    )
    state.job = next((j for j in state.jobs if attempts.attempt_of(j) == state.attempt), None)
    state.end = attempts.attempt_end(state.job)
    state.used = attempts.history(state.jobs, state.attempt, state.previous)


def follow_a_failed_attempt(kube: Kube, state: Pass) -> None:
    """A failed or disrupted attempt whose pods have stopped is followed by the next one, if allowed (two
    attempts never write the same output directory at once)."""
    spec = state.spec
    if (
        spec is None
        or state.finished_before
        or not attempts.next_attempt_allowed(state.end, state.used, spec.max_restarts)
        or not attempts.job_stopped(state.job)
    ):
        return
    failed_pods = _pods_of(kube, state.namespace, state.name, state.attempt, state.job)
    failure = status_of.pod_failures(failed_pods)
    disrupted = state.end == attempts.AttemptEnd.DISRUPTED
    reason, what = ("AttemptDisrupted", "was disrupted") if disrupted else ("AttemptFailed", "failed")
    message = f"attempt {state.attempt} {what}: {failure or 'the Job failed'}"
    events.post(kube, state.body, Event("Warning", reason, message))
    state.attempt += 1
    state.job, state.end = None, None
    RESTARTS.inc()
    state.used = attempts.history(state.jobs, state.attempt, state.previous)


def follow_a_deleted_job(kube: Kube, state: Pass) -> None:
    """The attempt's Job deleted by hand while it ran: its pods may still write checkpoints into the output
    path. The next attempt waits for them, and takes the next name (new pods, new hostnames)."""
    if not state.may_start or state.spec is None:
        return
    orphans = _pods_without_job(kube, state.namespace, state.name, state.attempt, state.jobs)
    if orphans:
        state.problems = [*state.problems, attempts.job_deleted_problem(state.attempt, len(orphans))]
    elif attempts.job_deleted_while_running(state.previous, state.attempt):
        message = f"attempt {state.attempt}'s Job was deleted while it ran"
        events.post(kube, state.body, Event("Warning", "AttemptDisrupted", message))
        state.attempt += 1
        state.used = attempts.History(state.used.restarts, state.used.disruptions + 1)


def check_before_starting(kube: Kube, state: Pass) -> None:
    """What only matters when an attempt is about to start: the output path (that is when it gets
    written), and a Job of an earlier FineTuneJob of the same name, which keeps its name: the attempt
    takes the next free one, and waits while that Job still runs on the same output path."""
    if not state.may_start:
        return
    if state.spec is not None and not state.problems:
        state.problems = _output_path_conflicts(kube, state.body, state.spec)
    names = render.FineTuneJobNames(state.name)
    taken = {j["metadata"]["name"] for j in state.leftovers}
    while names.job(state.attempt) in taken:
        state.attempt += 1
    running = sorted(j["metadata"]["name"] for j in state.leftovers if not attempts.job_stopped(j))
    if running:
        state.problems = [
            *state.problems,
            Problem(
                "LeftoverJob",
                f"Job {', '.join(running)} (left by an earlier FineTuneJob {state.name}, not owned by this "
                f"one) still runs on the same output path: delete it or wait for it to finish",
                terminal=False,
            ),
        ]


def find_preprocessing(kube: Kube, state: Pass) -> None:
    """spec.dataset.preprocess: a CPU-only Job before the first attempt. The training config names the
    tokenized dataset only when this job's preprocessing made it (enabled by an edit after an attempt
    started, or deleted by hand: later attempts tokenize for themselves)."""
    if state.spec is not None and state.spec.dataset.preprocessing:
        state.preprocess = _preprocess_of(kube, state.namespace, state.name, state.uid)
    state.preprocessed = state.preprocess is not None and status_of.preprocessed(state.preprocess.job)


def render_target(kube: Kube, state: Pass) -> None:
    if state.spec is None:
        return
    job = state.job
    state.target = render.FineTuneJobTarget(
        name=state.name,
        namespace=state.namespace,
        uid=state.uid,
        spec=state.spec,
        attempt=state.attempt,
        dataset_info=state.dataset_info,
        deepspeed_config=state.deepspeed_config,
        observed_job_suspend=None if job is None else bool((job.get("spec") or {}).get("suspend")),
        preprocessed=state.preprocessed,
        settings=state.settings,
    )


def ensure_children(kube: Kube, state: Pass) -> None:
    """Nothing is created for a bad spec, and nothing more once the job has finished. An attempt takes
    what its children say when it starts: they are written then (a running attempt's pods have read them
    already), and its Job exists only after them (and after the preprocessing, when there is one)."""
    target = state.target
    if target is None or state.finished_before or state.end is not None:
        return
    if not state.problems and state.job is None:
        waiting_for_preprocess = state.preprocess is not None and not state.preprocessed and not state.jobs
        try:
            *independent, binding, _ = render.children(target)
            kube.ensure_all(independent)
            # Only once the launcher's ServiceAccount is known to be this job's: a same-named one of
            # someone else's would be handed the launcher's Role.
            kube.ensure(binding)
            if waiting_for_preprocess:
                state.preprocess = _apply_preprocess(kube, target, state.preprocess)  # type: ignore[arg-type]
            else:
                state.job = kube.ensure(render.job(target))
        except (NotOurs, ChildRefused) as error:
            # Someone else's object under a child's name, or a value the API server refuses: in status.
            state.problems.append(child_problem(error))
    # `suspend` is the one field of a running attempt's Job that follows the spec, valid or not: a job
    # whose edited spec was refused can still be paused.
    job = state.job
    if job is not None and bool(job["spec"].get("suspend")) != render.job_suspended(target):
        suspend = {"spec": {"suspend": render.job_suspended(target)}}
        state.job = kube.patch_merge("Job", state.namespace, job["metadata"]["name"], suspend)


def find_pods(kube: Kube, state: Pass) -> None:
    """The attempt's pods; for a Job that still misses some after a while, why (its FailedCreate Event)."""
    job = state.job
    if job is None:
        return
    state.pods = _pods_of(kube, state.namespace, state.name, state.attempt, job)
    nodes, _ = _shape(state.spec, state.previous)
    # Only pods the Job controller says it is short of, a while after it started the Job, are worth the
    # lookup: its FailedCreate Event is posted by then.
    if (
        _attempt_short_of_pods(state, nodes)
        and _seconds_since(job["status"]["startTime"]) >= FAILED_CREATE_AFTER_SECONDS
    ):
        state.failed_create = kube.pods_refused(job)


STEPS: tuple[Callable[[Kube, Pass], None], ...] = (
    check_spec,
    find_attempt,
    follow_a_failed_attempt,
    follow_a_deleted_job,
    check_before_starting,
    find_preprocessing,
    render_target,
    ensure_children,
    find_pods,
)


def observe(state: Pass) -> status_of.Observation:
    """Everything the status is computed from (status/finetunejob.py decides, purely)."""
    spec, previous = state.spec, state.previous
    # A spec refused by the models has no shape: the running attempt keeps the one it started with.
    nodes, gpus_per_node = _shape(spec, previous)
    preprocess = state.preprocess
    return status_of.Observation(
        generation=state.meta.get("generation", 1),
        now=rfc3339.now(),
        previous=previous,
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        max_restarts=spec.max_restarts if spec else 0,
        overfitting_patience=spec.overfitting_patience if spec else status_of.curves.DEFAULT_PATIENCE,
        suspend=spec.suspend if spec else False,
        queue_name=spec.queue_name if spec else None,
        attempt=state.attempt,
        restarts=state.used.restarts,
        disruptions=state.used.disruptions,
        problems=state.problems,
        job=state.job,
        pods=state.pods,
        failed_create=state.failed_create,
        output=render.output(state.target) if state.target is not None else None,
        # After the first attempt started, a preprocessing Job deleted by hand changes nothing.
        preprocess=preprocess if preprocess is not None and (preprocess.job or not state.jobs) else None,
    )


def write_status(
    kube: Kube, state: Pass, observation: status_of.Observation, status: dict[str, Any]
) -> Outcome:
    """The status when it changed (an Event per transition), the TTL's delete, and when to look again."""
    previous, spec = state.previous, state.spec
    changed = _differs(previous, status)
    wait = first_status_wait(state, status) if changed else None
    if wait is not None:
        return Outcome(status=status, changed=False, requeue_after=wait)  # decided, not yet written
    if changed:
        kube.patch_status("FineTuneJob", state.namespace, state.name, status, state.uid, previous)
        for event in status_of.transitions(previous, status):
            events.post(kube, state.body, event)
    requeue_after = None
    if spec is not None and attempts.ttl_expired(status, spec.ttl_seconds_after_finished, observation.now):
        # ttlSecondsAfterFinished: the children go with it; the claim and its outputs stay.
        log.info("deleting %s/%s: finished at %s", state.namespace, state.name, status.get("completionTime"))
        kube.delete("FineTuneJob", state.namespace, state.name, uid=state.uid)
    elif spec is not None:
        requeue_after = attempts.ttl_remaining(status, spec.ttl_seconds_after_finished, observation.now)
    if state.failed_create is None and _attempt_short_of_pods(state, observation.nodes):
        # A refused pod is reported by no watch: look again for its FailedCreate Event. Pods the Job
        # controller has not counted short yet need no look: its status write will bring the Job's event.
        requeue_after = min(requeue_after or FAILED_CREATE_AFTER_SECONDS, FAILED_CREATE_AFTER_SECONDS)
    return Outcome(status=status, changed=changed, requeue_after=requeue_after)


def first_status_wait(state: Pass, status: dict[str, Any]) -> float | None:
    """Seconds the first status of a new job still waits, or None to write it now.

    A job whose pods start at once on a node that has its image goes straight to Running: one status
    write and one Event, not two (Pending then Running a second later). That is up to half of the status
    writes and Events of a thousand jobs applied at once, and the API server's time for them
    (docs/operations.md). Only a first status that would say Starting waits, and only for
    FIRST_STATUS_WAIT_SECONDS from the Job's creation: a refused spec, a missing claim or a pod that cannot
    be scheduled is written at once, and so is every later attempt. Level-based: the wait is read from
    the Job's creationTimestamp, nothing is held in the process; a clock far behind the API server's
    (a Job created "in the future") holds nothing back.
    """
    if state.previous.get("phase") or status.get("reason") != "Starting" or state.job is None:
        return None
    age = _age_seconds(state.job)
    if age < -FIRST_STATUS_WAIT_SECONDS:
        return None
    left = FIRST_STATUS_WAIT_SECONDS - max(age, 0.0)
    return left if left > 0 else None


def _live(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]


def _preprocess_of(kube: Kube, namespace: str, name: str, uid: str) -> status_of.PreprocessObservation:
    """This FineTuneJob's preprocessing Job (by owner uid) and the pods that Job owns."""
    selector = render.preprocess_selector(name)
    job = next((j for j in kube.list("Job", namespace, selector) if owned_by(j, uid)), None)
    if job is None:
        return status_of.PreprocessObservation()
    job_uid = job["metadata"].get("uid", "")
    pods = [p for p in kube.list("Pod", namespace, selector) if owned_by(p, job_uid)]
    return status_of.PreprocessObservation(job=job, pods=pods)


def _apply_preprocess(
    kube: Kube, target: render.FineTuneJobTarget, preprocess: status_of.PreprocessObservation
) -> status_of.PreprocessObservation:
    """Creates the preprocessing Job, or follows spec.suspend on it; a finished one is left as it is."""
    job = preprocess.job
    if job is None:
        return status_of.PreprocessObservation(job=kube.ensure(render.preprocess_job(target)))
    if attempts.attempt_end(job) is None and bool(job["spec"].get("suspend")) != target.spec.suspend:
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
    selector = render.selector(name, attempt)
    job_uid = job["metadata"].get("uid", "")
    return [p for p in kube.list("Pod", namespace, selector) if owned_by(p, job_uid)]


def _pods_without_job(
    kube: Kube, namespace: str, name: str, attempt: int, jobs: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Pods of this attempt that still run though no Job of this FineTuneJob owns them (theirs is gone)."""
    selector = render.selector(name, attempt)
    job_uids = {j["metadata"].get("uid") for j in jobs}
    return [
        p
        for p in kube.list("Pod", namespace, selector)
        if not any(owned_by(p, uid) for uid in job_uids)
        and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    ]


def _differs(previous: dict[str, Any], status: dict[str, Any]) -> bool:
    """Whether any field the operator owns changed (the launcher's progress and metrics are not compared)."""
    return any(previous.get(key) != value for key, value in status.items())
