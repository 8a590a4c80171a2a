"""The controller: the watches' caches, the work queue and a fixed pool of workers that reconciles.

The watches (kopf's of the two custom resources, handlers/watches.py; the runtime's own of their children,
runtime/listwatch.py) only record what they saw and queue (`Controller.react`) the key of the resource it
concerns: a FineTuneJob for its own events and those of its Jobs and pods, a
ModelServe for its own, its Deployment's and its pods'. The work queue holds each key once however many
events arrive, never hands one key to two workers, and brings failed keys back with a capped backoff
(runtime/workqueue.py). A child's change queues its owner batched (`CHILD_BATCH_SECONDS` after the first of
a burst), and an event that decides nothing (`decides_nothing`: the echo of the operator's own write)
queues nothing: at a thousand jobs starting, about three reconciles each instead of six. Workers reconcile
from the caches (runtime/cache.py), so an event costs no read of the API server. The periodic resync queues
keys; it reconciles nothing itself.

The workers wait until every watch has listed its kind once (`caches_filled`), so that no reconcile decides
on a half-filled cache (a Job missing from it would look like an attempt not started yet): kopf runs index
handlers over the custom resources' listings before any other handler, and its first ordinary handler call
says they are in; each child kind's list-watch says so after its first listing (`listed`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes.client.rest import ApiException

from kubetune.api import GROUP, VERSION, label_names
from kubetune.api import finetunejob as ftj
from kubetune.api import modelserve as ms
from kubetune.config import OperatorConfig
from kubetune.kube import Kube
from kubetune.render.names import label_value
from kubetune.runtime.cache import (
    ECHOED,
    FINGERPRINTED,
    TRACKED,
    Cache,
    CachedKube,
    also_kept_as,
    version_number,
)
from kubetune.runtime.listwatch import ListWatch
from kubetune.runtime.metrics import (
    CACHED_OBJECTS,
    JOBS_BY_PHASE,
    QUEUE_DEPTH,
    QUEUE_WAIT_SECONDS,
    RECONCILE_CAUSES,
    RECONCILE_SECONDS,
    RECONCILES,
    RETRIES,
)
from kubetune.runtime.outcome import Key, Outcome
from kubetune.runtime.workqueue import Item, WorkQueue
from kubetune.status import attempts

log = logging.getLogger("kubetune.operator")
CHILD_KINDS = frozenset({"Job", "Pod", "Deployment"})
FTJ, MS = ftj.KIND, ms.KIND
# A child's change is reconciled this long after the first of a burst (runtime/workqueue.py's `add_batched`):
# a pod created, bound and started, and its Job counting it, are one reconcile, as the Job controller
# batches its pods' events, for a second too (its syncJobBatchPeriod): a Job's status moves at most once a
# second anyway. The status follows the pods that much later. At 5000 jobs starting, a pod's events spread
# over seconds: with half a second, 2.45 reconciles per job came from children's changes. A pod's phase
# changing (it started or ended: what users wait for) is not batched: its owner is queued at once, and the
# batched addition still to come goes with it.
CHILD_BATCH_SECONDS = 1.0
# What a ModelServe's status says of an adapter while it waits on its FineTuneJob (handlers/modelserve.py).
JOB_REASONS = frozenset({"WaitingForFineTuneJob", "FineTuneJobNotFound", "FineTuneJobFailed"})

# (kind in the cache, group, version, plural): everything the operator watches. kopf watches the custom
# resources (RESOURCES); the runtime lists and watches the children itself (runtime/listwatch.py says why).
WATCHED = (
    (FTJ, GROUP, VERSION, ftj.PLURAL),
    (MS, GROUP, VERSION, ms.PLURAL),
    ("Job", "batch", "v1", "jobs"),
    ("Pod", "", "v1", "pods"),
    ("Deployment", "apps", "v1", "deployments"),
    ("PersistentVolumeClaim", "", "v1", "persistentvolumeclaims"),
    # A ModelServe's other children (label_names.MODELSERVE_CHILDREN_SELECTOR), to tell whether each stands
    # as written (runtime/cache.py): a resync's pass writes only what does not, and someone's edit or
    # deletion is repaired at once. A sidecar's report (a ConfigMap among them) wakes its ModelServe, and a
    # settled one reads the report from the cache (kube.ADAPTER_REPORT).
    ("ConfigMap", "", "v1", "configmaps"),
    ("Service", "", "v1", "services"),
    ("ServiceAccount", "", "v1", "serviceaccounts"),
    ("Role", "rbac.authorization.k8s.io", "v1", "roles"),
    ("RoleBinding", "rbac.authorization.k8s.io", "v1", "rolebindings"),
    ("HorizontalPodAutoscaler", "autoscaling", "v2", "horizontalpodautoscalers"),
)
RESOURCES = frozenset({FTJ, MS})
# The label selector of each watched child kind: the API server sends the operator its own objects only.
SELECTORS = {
    **dict.fromkeys(CHILD_KINDS, label_names.CHILDREN_SELECTOR),
    **dict.fromkeys(TRACKED, label_names.MODELSERVE_CHILDREN_SELECTOR),
}


def status_only(event_type: str | None, body: Any) -> bool:
    """A change the operator already acted on: its own status write, or the launcher's progress report.

    The spec's generation is what the status was computed for, so there is nothing new to decide; the
    children's own events and the resync cover everything else. (A listing has no type: never skipped.)
    """
    if event_type != "MODIFIED":
        return False
    status = body.get("status") or {}
    return status.get("observedGeneration") == body.get("metadata", {}).get("generation")


def adapter_behind(reported: dict[str, Any] | None, event_type: str | None, phase: str | None) -> bool:
    """Whether a ModelServe's status entry for an adapter (`reported`) is out of date with its FineTuneJob
    (this watch event, the job's phase): the job was deleted, appeared, or ended (its adapter is ready, or
    never will be). An adapter the ModelServe has not reported yet is its own first pass's to resolve."""
    if event_type == "DELETED":
        return True
    if reported is None:
        return False
    reason = reported.get("reason")
    if phase == ftj.Phase.SUCCEEDED.value:
        return not reported.get("ready") and reason in JOB_REASONS
    if phase == ftj.Phase.FAILED.value:
        return reason != "FineTuneJobFailed"
    return reason == "FineTuneJobNotFound"


# What queued a reconcile (kubetune_reconcile_causes_total), besides a watched kind's event (that kind) and
# the work queue's own (runtime/workqueue.py: while held, retry).
RESYNC, AGAIN = "resync", "again"
# The source of the custom resources' listing among those the workers wait for (`Controller.listed_once`).
RESOURCES_LISTED = "custom resources"


def _newer(held: dict[str, Any], version: str) -> bool:
    """Whether the cached object was written after a listing at `version` (compared as the cache compares
    versions; one that is not a number is taken as older)."""
    mine, listed = version_number(held["metadata"].get("resourceVersion")), version_number(version)
    return mine is not None and listed is not None and mine > listed


def namespace_terminating(error: ApiException) -> bool:
    """A write refused because the namespace is being deleted (its resources go with it)."""
    return error.status == 403 and "NamespaceTerminating" in str(error.body or "")


# One reconcile of a kind: (the client, the resource's body, the operator's config, full) -> its Outcome.
# `full`: a resync's pass, which also repairs children changed by hand. The handlers provide them.
Reconcile = Callable[[Kube, dict[str, Any], OperatorConfig, bool], Outcome]


def _phase(obj: dict[str, Any]) -> str | None:
    return (obj.get("status") or {}).get("phase")


def _decided_on(job: dict[str, Any]) -> tuple[Any, ...]:
    """What of a Job a FineTuneJob's reconcile decides on (`Controller._job_moved`)."""
    meta = job.get("metadata") or {}
    return (
        (job.get("status") or {}).get("conditions"),
        (job.get("spec") or {}).get("suspend"),
        meta.get("ownerReferences"),
        meta.get("labels"),
        meta.get("deletionTimestamp"),
    )


def _behind(modelserve: dict[str, Any], job: str, event_type: str | None, phase: str | None) -> Key | None:
    """The ModelServe's key if it serves this FineTuneJob's adapter or model (`job`) and its status has not
    caught up with the job's event."""
    spec, status = modelserve.get("spec") or {}, modelserve.get("status") or {}
    reported = {a.get("name"): a for a in status.get("adapters") or []}
    said = [
        reported.get(a.get("name"))
        for a in spec.get("adapters") or []
        if isinstance(a, dict) and a.get("fineTuneJob") == job
    ]
    if (spec.get("model") or {}).get("fineTuneJob") == job:
        # The served model: what the status says of it, read as an adapter's entry.
        reason = status.get("reason")
        ready = reason not in JOB_REASONS and bool(status.get("model"))
        said.append({"ready": ready, "reason": reason} if status else None)
    if not any(adapter_behind(entry, event_type, phase) for entry in said):
        return None
    meta = modelserve["metadata"]
    return Key(MS, meta.get("namespace") or "", meta["name"])


def _on_claim(kind: str, resource: dict[str, Any], claim: str) -> Key | None:
    """The resource's key if it keeps its outputs on that claim."""
    if ((resource.get("spec") or {}).get("storage") or {}).get("claim") != claim:
        return None
    meta = resource["metadata"]
    return Key(kind, meta.get("namespace") or "", meta["name"])


def _resync_view(body: dict[str, Any]) -> tuple[Key, str, bool]:
    """What the resync reads of a FineTuneJob: its key, its phase, and whether a reconcile may still change
    anything (not finished for good, or a TTL to fire; a spec refused before it ran is not finished: fixed,
    it proceeds)."""
    meta, status = body["metadata"], body.get("status") or {}
    ttl = (body.get("spec") or {}).get("ttlSecondsAfterFinished") is not None
    may_change = not attempts.has_finished(status) or ttl
    return (
        Key(FTJ, meta["namespace"], meta["name"]),
        status.get("phase") or ftj.Phase.PENDING.value,
        may_change,
    )


class Controller:
    """The caches, the queue, and the reconciles of both kinds; the only state is what the watches saw."""

    def __init__(
        self,
        kube: Kube,
        config: OperatorConfig,
        reconcilers: Mapping[str, Reconcile],
        cache: Cache | None = None,
        batch_seconds: float = CHILD_BATCH_SECONDS,
        queue: WorkQueue[Key] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.config = config
        self.kube = kube
        self._clock = clock
        # When each FineTuneJob was last reconciled, and when the last resync ran (or the caches were
        # listed, which reconciles everything): the resync skips one reconciled since.
        self._last_pass: dict[Key, float] = {}
        self._last_resync = clock()
        self.batch_seconds = batch_seconds
        self.reconcilers = reconcilers
        self.cache = cache or Cache()
        self.client = CachedKube(kube, self.cache)
        self.queue: WorkQueue[Key] = queue if queue is not None else WorkQueue()
        self.caches_filled = threading.Event()
        # The listings not in yet: (kind, namespace) of each child list-watch, and kopf's (RESOURCES).
        self._unlisted: set[tuple[str, str | None]] = {(RESOURCES_LISTED, None), *self.watched_children()}
        self._unlisted_lock = threading.Lock()
        self.stopping = threading.Event()

    # --- what the watches call (in kopf's event loop: quick, no API calls) --------------------------

    def observed(self, kind: str, event_type: str | None, body: dict[str, Any]) -> None:
        """One watch event: kept in the cache, and the resources it concerns queued."""
        now = kind == "Pod" and event_type == "MODIFIED" and self._phase_moved(body)
        counted = kind == "Job" and event_type == "MODIFIED" and not self._job_moved(body)
        if event_type != "DELETED":
            self.cache.upsert(kind, body)
        if not counted:
            self.react(kind, event_type, body, now=now)

    def _phase_moved(self, pod: dict[str, Any]) -> bool:
        """Whether this pod's phase differs from the cached copy's: it started or ended."""
        held = self._held("Pod", pod, _phase)
        return held is not None and held != _phase(pod)

    def _job_moved(self, job: dict[str, Any]) -> bool:
        """Whether what a reconcile decides on in this Job differs from the cached copy's: its conditions
        (it ended, or failed over), `suspend`, its owners and labels. Its counts of active and ready pods
        follow its pods, whose own events queue the owner: a change of counts alone, one or two per Job
        as its pods start, queues nothing (a reconcile each, a third of them, at 1000 jobs)."""
        held = self._held("Job", job, _decided_on)
        return held is None or held != _decided_on(job)

    def _held(self, kind: str, obj: dict[str, Any], read: Callable[[dict[str, Any]], Any]) -> Any:
        """`read` of the cached copy of `obj` (before this event is kept); None when none is held."""
        meta = obj.get("metadata") or {}
        return self.cache.read(kind, meta.get("namespace"), meta.get("name", ""), read)

    def listed(self, kind: str, namespace: str | None, items: list[dict[str, Any]], version: str) -> None:
        """A whole listing of a child kind in `namespace` (None: everywhere), at `version`: each object is
        kept and its owner queued, as kopf's listing of the custom resources does, and each the cache holds
        that the listing has not is a deletion missed while no watch ran (an object the operator wrote after
        `version` stays: the watch from `version` brings it)."""
        present = set()
        for obj in items:
            meta = obj.get("metadata") or {}
            present.add((meta.get("namespace") or "", meta.get("name")))
            try:
                self.observed(kind, None, obj)
            except Exception:  # one object the controller fails on never stops the others
                log.exception("listed %s %s/%s not handled", kind, meta.get("namespace"), meta.get("name"))
        for key in self.cache.keys(kind):
            if key in present or (namespace is not None and key[0] != namespace):
                continue
            held = self.cache.get(kind, *key)
            if held is not None and not _newer(held, version):
                self.observed(kind, "DELETED", held)
        self.listed_once(kind, namespace)

    def listed_once(self, kind: str, namespace: str | None = None) -> None:
        """One watch's first listing is in: when every watch's is, the workers start."""
        with self._unlisted_lock:
            self._unlisted.discard((kind, namespace))
            if self._unlisted or self.caches_filled.is_set():
                return
            self.caches_filled.set()
        log.info("caches filled: %s", ", ".join(f"{self.cache.count(k)} {k}" for k, *_ in WATCHED))

    def watched_children(self) -> list[tuple[str, str | None]]:
        """(kind, namespace) of each child list-watch: one per child kind and watched namespace, or one per
        kind cluster-wide (namespace None)."""
        namespaces = self.config.namespaces or (None,)
        return [(kind, ns) for kind, *_ in WATCHED if kind not in RESOURCES for ns in namespaces]

    def list_watches(self) -> list[ListWatch]:
        return [
            ListWatch(
                self.kube,
                kind,
                namespace,
                SELECTORS.get(kind),
                on_listed=lambda ns, items, version, kind=kind: self.listed(kind, ns, items, version),
                on_event=lambda event_type, obj, kind=kind: self.observed(kind, event_type, obj),
                watch_seconds=self.config.watch_seconds,
                connect_seconds=self.config.api_connect_seconds,
            )
            for kind, namespace in self.watched_children()
        ]

    def repaired(self, kind: str, event_type: str | None, body: dict[str, Any]) -> bool:
        """Whether the event is someone else's change to a ModelServe's child, or its deletion: its owner
        writes it again at once (a full pass), instead of at the next resync."""
        if kind not in FINGERPRINTED or event_type not in ("MODIFIED", "DELETED"):
            return False
        meta = body.get("metadata") or {}
        if label_names.MODELSERVE not in (meta.get("labels") or {}):
            return False
        return event_type == "DELETED" or not self.cache.stands(kind, meta.get("namespace"), meta["name"])

    def decides_nothing(self, kind: str, event_type: str | None, body: dict[str, Any]) -> bool:
        """An event no reconcile needs: the operator's own write coming back through the watch (the
        reconcile that wrote it decided on the reply: a Job it created, a Deployment it applied), or a
        change to a child no reconcile reads (all the tracked kinds but the report) that leaves it standing
        as written."""
        if kind not in ECHOED or event_type not in ("ADDED", "MODIFIED"):
            return False
        if kind in TRACKED and also_kept_as(kind, body) is None:
            meta = body.get("metadata") or {}
            return self.cache.stands(kind, meta.get("namespace"), meta["name"])
        return self.cache.echoes(kind, body)

    def react(self, kind: str, event_type: str | None, body: dict[str, Any], now: bool = False) -> None:
        """The second half of `observed`, for an event whose object the cache holds already. `now`: a
        change users wait for (a pod started or ended), queued soon without the batch period."""
        if event_type == "DELETED":
            meta = body.get("metadata") or {}
            self.cache.remove(kind, meta.get("namespace"), meta["name"], meta.get("uid"))
            self._last_pass.pop(Key(kind, meta.get("namespace") or "", meta["name"]), None)
        if self.decides_nothing(kind, event_type, body):
            return
        # A child's change goes before new resources, batched: the status follows the pods (workqueue.py).
        soon = kind in CHILD_KINDS or also_kept_as(kind, body) is not None
        full = self.repaired(kind, event_type, body)
        for key in self.keys_for(kind, event_type, body):
            if soon and not full and not now:
                self.queue.add_batched(key, self.batch_seconds, cause=kind)
            else:
                self.queue.add(key, full=full, soon=soon, cause=kind)
        QUEUE_DEPTH.set(len(self.queue))

    def keys_for(self, kind: str, event_type: str | None, body: dict[str, Any]) -> list[Key]:
        """The resources that decide again on this event."""
        meta = body.get("metadata") or {}
        namespace = meta.get("namespace") or ""
        labels = meta.get("labels") or {}
        if kind in (FTJ, MS):
            decides = not (event_type == "DELETED" or status_only(event_type, body))
            keys = [Key(kind, namespace, meta["name"])] if decides else []
            if kind == FTJ:
                keys += self._modelserves_behind(namespace, meta["name"], event_type, body)
            return keys
        if kind == "PersistentVolumeClaim":
            # A claim that appeared: the resources waiting for it (MissingClaim) look again.
            if event_type != "ADDED":  # a claim in use cannot go (its protection finalizer waits)
                return []
            waiting = [
                self.cache.read_each(k, lambda o, k=k: _on_claim(k, o, meta["name"]), namespace)
                for k in (FTJ, MS)
            ]
            return [key for keys in waiting for key in keys if key is not None]
        # The owner label's value is the owner's name (names longer than a label value end in a hash and
        # are found through the cache instead).
        keys = []
        for label, owner_kind in (
            (label_names.FINETUNEJOB, FTJ),
            (label_names.PREPROCESS_OF, FTJ),
            (label_names.MODELSERVE, MS),
        ):
            if label in labels:
                keys.append(
                    Key(owner_kind, namespace, self._owner_name(owner_kind, namespace, labels[label]))
                )
        return keys

    def _modelserves_behind(
        self, namespace: str, name: str, event_type: str | None, body: dict[str, Any]
    ) -> list[Key]:
        """The ModelServes serving this FineTuneJob's adapter or model whose status has not caught up with it.

        Level-based: what the ModelServe's status says of the adapter against what the job is now, so the
        job's later events (its progress, the resync's listing) queue nobody once the ModelServe agrees.
        """
        phase = (body.get("status") or {}).get("phase")
        if event_type == "MODIFIED" and phase not in (ftj.Phase.SUCCEEDED.value, ftj.Phase.FAILED.value):
            # A running job's progress, many a minute: nothing a ModelServe waits for (it waits for the job
            # to appear, end or go), and this runs in the watches' loop.
            return []
        behind = self.cache.read_each(MS, lambda ms: _behind(ms, name, event_type, phase), namespace)
        return [key for key in behind if key is not None]

    def _owner_name(self, kind: str, namespace: str, label: str) -> str:
        if len(label) < 63:
            return label
        names = [n for ns, n in self.cache.keys(kind) if ns == namespace and label_value(n) == label]
        return names[0] if names else label

    # --- the workers ------------------------------------------------------------------------------

    def start(self) -> None:
        for watch in self.list_watches():
            watch.start(self.stopping)
        for index in range(self.config.workers):
            threading.Thread(target=self._work, name=f"reconcile-{index}", daemon=True).start()
        threading.Thread(target=self._resync_loop, name="resync", daemon=True).start()

    def _work(self) -> None:
        self.caches_filled.wait()
        while True:
            item = self.queue.get()
            if item is None:
                return
            self.work(item)

    def work(self, item: Item[Key]) -> None:
        """One key from the queue: its reconcile, then a retry, a look again later, or nothing."""
        QUEUE_DEPTH.set(len(self.queue))
        QUEUE_WAIT_SECONDS.labels(item.key.kind).observe(item.waited)
        RECONCILE_CAUSES.labels(item.key.kind, item.cause or "unknown").inc()
        try:
            outcome = self.reconcile(item.key, full=item.full)
        except Exception as error:
            delay = self.queue.retry(item.key)
            RETRIES.labels(item.key.kind).inc()
            if isinstance(error, ApiException):
                log.warning(
                    "reconcile of %s failed: %s %s (again in %.1fs)",
                    item.key,
                    error.status,
                    error.reason,
                    delay,
                )
            else:
                log.exception("reconcile of %s failed (again in %.1fs)", item.key, delay)
        else:
            self.queue.forget(item.key)
            if item.key.kind == FTJ and outcome is not None:
                self._last_pass[item.key] = self._clock()
            # This reconcile's look again replaces the one the previous reconcile asked for.
            self.queue.again(item.key, outcome.requeue_after if outcome is not None else None, cause=AGAIN)
        finally:
            self.queue.done(item.key)

    def reconcile(self, key: Key, full: bool = False) -> Outcome | None:
        """One reconcile of the resource as the cache holds it now (gone or being deleted: nothing to do)."""
        body = self.client.get(key.kind, key.namespace, key.name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        body.setdefault("apiVersion", f"{GROUP}/{VERSION}")
        body.setdefault("kind", key.kind)
        started = time.perf_counter()
        try:
            outcome = self.reconcilers[key.kind](self.client, body, self.config, full)
        except ApiException as error:
            if namespace_terminating(error):
                # Its namespace is being deleted, and the resource with it: nothing is left to do.
                RECONCILES.labels(key.kind, "unchanged").inc()
                return None
            RECONCILES.labels(key.kind, "error").inc()
            raise
        except Exception:
            RECONCILES.labels(key.kind, "error").inc()
            raise
        finally:
            RECONCILE_SECONDS.labels(key.kind).observe(time.perf_counter() - started)
        RECONCILES.labels(key.kind, "changed" if outcome.changed else "unchanged").inc()
        log.debug(
            "reconciled %s in %.3fs: %s%s", key, time.perf_counter() - started,
            "status written" if outcome.changed else "no change",
            f", again in {outcome.requeue_after:.1f}s" if outcome.requeue_after is not None else "",
        )  # fmt: skip
        return outcome

    # --- the periodic resync: it queues, the workers reconcile --------------------------------------

    def _resync_loop(self) -> None:
        self.caches_filled.wait()
        while True:
            time.sleep(self.config.resync_seconds)
            try:
                self.resync()
            except Exception:
                log.exception("resync failed")

    def resync(self) -> None:
        """Queues every FineTuneJob that can still change and every ModelServe: the safety net under the
        watches, and what makes TTLs fire after a restart. Each such FineTuneJob is reconciled at least once
        between two resyncs: one reconciled since the last (its events came) is not queued again. A
        thousand jobs starting would otherwise be a thousand reconciles more each minute, that decide
        nothing."""
        phases: dict[str, int] = dict.fromkeys([p.value for p in ftj.Phase], 0)
        since, self._last_resync = self._last_resync, self._clock()
        for key, phase, may_change in self.cache.read_each(FTJ, _resync_view):
            phases[phase] += 1
            if may_change and self._last_pass.get(key, -math.inf) <= since:
                self.queue.add(key, full=True, cause=RESYNC)
        for namespace, name in self.cache.keys(MS):
            self.queue.add(Key(MS, namespace, name), full=True, cause=RESYNC)
        for phase, count in phases.items():
            JOBS_BY_PHASE.labels(phase).set(count)
        for kind, *_ in WATCHED:
            CACHED_OBJECTS.labels(kind).set(self.cache.count(kind))
        QUEUE_DEPTH.set(len(self.queue))
