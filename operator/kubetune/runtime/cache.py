"""What the watches delivered, kept in memory for the reconciles to read instead of a GET or a LIST per event.

Each object is kept slim: only the fields a reconcile reads (a pod's phase, conditions and containers'
states, not its spec, addresses or images; a Job's status and `suspend`, not its pod template), with its keys
and short strings shared between copies (`compact`), so that memory grows by a few KiB per object. Objects
are found by kind, namespace and name, and by the labels that name their owner (the reconciles list children
by those).

A ModelServe's other children (TRACKED) are kept only to tell whether each still stands as the operator
last wrote it (`Cache.stands`): a copy the operator's own write returned is marked with the manifest it
wrote, a watch event with the same content keeps the mark, and one that changed the content (someone
else's edit) or a deletion loses it. A reconcile then writes only the children whose rendering changed or
that no longer stand, and a quiet cluster costs the API server nothing. The marks are this process's own:
after a restart, the first resync writes every child once.

A cache can be stale (an event still on its way): the reconciles tolerate it. Creation is by deterministic
name and is refused by the API server for an object that exists (`Kube.ensure`), the owner uid is checked on
everything read, and status is compared with what was written last (`CachedKube` keeps its own writes).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, TypeVar

from kubernetes.client.rest import ApiException

from kubetune.api import label_names
from kubetune.api.label_names import INDEXED as INDEXED_LABELS
from kubetune.kube import ADAPTER_REPORT, Kube, controller_uid
from kubetune.remembered import Remembered
from kubetune.render.names import short_hash
from kubetune.runtime.metrics import EVENTS_DROPPED, EVENTS_PENDING

log = logging.getLogger("kubetune.events")

Result = TypeVar("Result")

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = dict(obj.get("metadata") or {})
    meta.pop("managedFields", None)
    annotations = meta.get("annotations")
    if annotations and LAST_APPLIED in annotations:
        meta["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
    return meta


def compact(value: Any) -> Any:
    """A copy whose keys and short strings are the interpreter's shared copies: the same few hundred keys
    and values ("lastTransitionTime", "True", a label) recur in every object, and a copy each is most of a
    slim object's memory (a pod's falls from about 10 KiB to 5)."""
    if isinstance(value, dict):
        return {sys.intern(k): compact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [compact(v) for v in value]
    if isinstance(value, str) and len(value) <= SHARED_STRING_LENGTH:
        return sys.intern(value)
    return value


def copied(value: Any) -> Any:
    """A copy a reader may change: new dicts and lists, the same strings and numbers (a cached copy holds
    nothing else, and those cannot change). Three times as fast as `copy.deepcopy`, which keeps a memo of
    everything it copied for cycles that JSON cannot have."""
    if isinstance(value, dict):
        return {k: copied(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copied(v) for v in value]
    return value


# Strings up to this long are shared (names, uids, timestamps, reasons); longer ones are messages and data.
SHARED_STRING_LENGTH = 64


def slim_resource(obj: dict[str, Any]) -> dict[str, Any]:
    """A FineTuneJob or a ModelServe: all of it but its field managers and kubectl's copy of itself."""
    return {**obj, "metadata": _meta(obj)}


def _only(obj: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: obj[k] for k in keys if k in obj}


def slim_job(obj: dict[str, Any]) -> dict[str, Any]:
    """Its status and `suspend`, the one field of its spec a reconcile reads (the attempt is fixed when it
    starts); the pod template and the pod failure policy are most of a Job."""
    spec = _only(obj.get("spec") or {}, ("suspend",))
    return {"metadata": _meta(obj), "spec": spec, "status": obj.get("status") or {}}


# What a reconcile reads of a pod's status (its phase, why it waits or failed); its addresses, times, QoS
# class and its containers' images and ids are half of a pod's copy, and nothing reads them.
POD_STATUS = ("phase", "reason", "message", "conditions", "initContainerStatuses", "containerStatuses")
POD_CONDITION = ("type", "status", "reason", "message")
CONTAINER_STATUS = ("name", "state", "lastState", "restartCount")


def slim_pod(obj: dict[str, Any]) -> dict[str, Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    kept = _only(status, POD_STATUS)
    if "conditions" in kept:
        kept["conditions"] = [_only(c, POD_CONDITION) for c in kept["conditions"] or []]
    for key in ("initContainerStatuses", "containerStatuses"):
        if key in kept:
            kept[key] = [_only(c, CONTAINER_STATUS) for c in kept[key] or []]
    return {
        "metadata": _meta(obj),
        "spec": {"nodeName": spec["nodeName"]} if spec.get("nodeName") else {},
        "status": kept,
    }


def slim_deployment(obj: dict[str, Any]) -> dict[str, Any]:
    """Its status, replicas, and its containers' names and args (the rendered --max-lora-rank is read)."""
    spec = obj.get("spec") or {}
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    kept = [{"name": c.get("name"), "args": c.get("args") or []} for c in containers]
    return {
        "metadata": _meta(obj),
        "spec": {"replicas": spec.get("replicas"), "template": {"spec": {"containers": kept}}},
        "status": obj.get("status") or {},
    }


def slim_claim(obj: dict[str, Any]) -> dict[str, Any]:
    """A claim is looked up for whether it exists."""
    return {"metadata": _meta(obj), "status": {"phase": (obj.get("status") or {}).get("phase")}}


def slim_tracked(obj: dict[str, Any]) -> dict[str, Any]:
    """A tracked child: who owns it and its labels; its content is in its fingerprint."""
    return {"metadata": _meta(obj)}


def slim_report(obj: dict[str, Any]) -> dict[str, Any]:
    """A report ConfigMap wakes its ModelServe, and a settled ModelServe reads its report here (a few
    hundred bytes per adapter): at 500 ModelServes, a GET each per resync would be most of the operator's
    requests in a quiet cluster."""
    return {"metadata": _meta(obj), "data": obj.get("data") or {}}


SLIMMERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "FineTuneJob": slim_resource,
    "ModelServe": slim_resource,
    "Job": slim_job,
    "Pod": slim_pod,
    "Deployment": slim_deployment,
    "PersistentVolumeClaim": slim_claim,
    ADAPTER_REPORT: slim_report,
}
# Watched only to tell whether each of a ModelServe's children stands as written: never read in place of
# a GET (a FineTuneJob's ConfigMap or Service is not among them, nor a user's ConfigMap).
TRACKED = ("ConfigMap", "Service", "ServiceAccount", "Role", "RoleBinding", "HorizontalPodAutoscaler")
# The kinds whose copies carry a fingerprint and the written mark (a ModelServe's children): the
# fingerprint is of the object's content, the mark of the manifest the operator last wrote.
FINGERPRINTED = frozenset({*TRACKED, "Deployment"})
FINGERPRINT, WRITTEN = "kubetune/fingerprint", "kubetune/written"
# The resourceVersion the operator's own write returned: the watch event of that version is its echo. Kept
# for the kinds it both writes and watches: a ModelServe's children, and a FineTuneJob's Jobs.
WRITTEN_VERSION = "kubetune/written-version"
ECHOED = frozenset({*FINGERPRINTED, "Job"})
# What is not content: the API server's bookkeeping, others' annotations (the Deployment controller's
# revision), and status, which controllers write all the time.
NOT_CONTENT = ("apiVersion", "kind", "metadata", "status")


def _digest(value: Any) -> str:
    return short_hash(json.dumps(value, sort_keys=True, default=str), 16)


def fingerprint(obj: dict[str, Any], report: bool = False) -> str:
    """The content the operator writes: every field but NOT_CONTENT, its labels and its owner; of a
    `report` ConfigMap, not its data, which the sidecars write (their reports keep it standing)."""
    meta = obj.get("metadata") or {}
    skipped = (*NOT_CONTENT, "data") if report else NOT_CONTENT
    content = {k: v for k, v in obj.items() if k not in skipped}
    content["metadata"] = {"labels": meta.get("labels"), "ownerReferences": meta.get("ownerReferences")}
    return _digest(content)


def manifest_hash(manifest: dict[str, Any]) -> str:
    """The written mark: which rendering of a child the operator wrote."""
    return _digest(manifest)


# The written mark of a kind whose copies are not fingerprinted (a FineTuneJob's Job): only that the operator
# wrote it, so that the watch event of the version its write returned is taken for the echo.
OWN_WRITE = "own write"


def written_mark(kind: str, manifest: dict[str, Any] | None) -> str | None:
    """What `Cache.upsert` keeps of the operator's write of `manifest`: which rendering it wrote, for a kind
    whose copies stand as written or not (FINGERPRINTED); for another kind only that it was its own write
    (hashing a FineTuneJob's five children on every creation was 2 % of the operator's CPU)."""
    if manifest is None:
        return None
    return manifest_hash(manifest) if kind in FINGERPRINTED else OWN_WRITE


def also_kept_as(kind: str, obj: dict[str, Any]) -> str | None:
    """A ModelServe's report ConfigMap is a tracked child and, with its data, the ADAPTER_REPORT the
    reconcile reads."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return (
        ADAPTER_REPORT if kind == "ConfigMap" and labels.get(label_names.ADAPTER_REPORT) == "true" else None
    )


def version_number(value: Any) -> int | None:
    """A resourceVersion as a number (etcd's revision), to tell which of two copies is newer; None when it
    is not one."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _version(obj: dict[str, Any]) -> int | None:
    return version_number((obj.get("metadata") or {}).get("resourceVersion"))


# Events waiting to be recorded, at most: each is a small dict (client-go's recorder holds 1000).
MAX_PENDING_EVENTS = 1000
# How many deleted objects' uids are remembered: a write's reply can arrive after the deletion's event, and
# must not bring the object back. A uid is never reused, so one remembered is refused for good.
TOMBSTONES = 20_000


class Cache:
    """Slim copies of the watched objects, by kind; safe to use from the watch loop and the workers."""

    def __init__(self, kinds: Iterable[str] = (*SLIMMERS, *TRACKED), tombstones: int = TOMBSTONES):
        self.kinds = frozenset(kinds)
        # What the reconciles read here instead of a GET or a LIST.
        self.served = frozenset(k for k in self.kinds if k in SLIMMERS)
        self._lock = threading.Lock()
        self._deleted: Remembered[str] = Remembered(tombstones)
        self._objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = defaultdict(dict)
        # (kind, namespace, label, value) -> names
        self._by_label: dict[tuple[str, str, str, str], set[str]] = defaultdict(set)

    def upsert(self, kind: str, obj: dict[str, Any], written: str | None = None) -> bool:
        """Keeps the object, unless the cache holds a newer version of it already. Returns whether kept.
        `written`: the object as the operator's write of this manifest (its `manifest_hash`) returned it."""
        alias = also_kept_as(kind, obj)
        if alias is not None and alias in self.kinds:
            self.upsert(alias, obj)
        if kind in TRACKED and label_names.MODELSERVE not in (
            (obj.get("metadata") or {}).get("labels") or {}
        ):
            return False  # not a ModelServe's child: no watch would ever bring its deletion
        slim = compact(SLIMMERS.get(kind, slim_tracked)(obj))
        meta = slim["metadata"]
        key = (meta.get("namespace") or "", meta["name"])
        mark = fingerprint(obj, report=alias is not None) if kind in FINGERPRINTED else None
        with self._lock:
            if meta.get("uid") in self._deleted:
                return False  # deleted already: a late reply of a write to it
            held = self._objects[kind].get(key)
            if held is not None:
                old, new = _version(held), _version(slim)
                same_object = held["metadata"].get("uid") == meta.get("uid")
                if same_object and old is not None and new is not None and new < old:
                    return False
                self._unindex(kind, key, held)
            if mark is not None:
                unchanged = (
                    held is not None
                    and held["metadata"].get("uid") == meta.get("uid")
                    and held.get(FINGERPRINT) == mark
                )
                slim[FINGERPRINT] = mark
                slim[WRITTEN] = written or (held.get(WRITTEN) if unchanged else None)
                slim[WRITTEN_VERSION] = (
                    meta.get("resourceVersion")
                    if written
                    else (held.get(WRITTEN_VERSION) if unchanged else None)
                )
            elif kind in ECHOED:
                version = meta.get("resourceVersion")
                echo = held is not None and held.get(WRITTEN_VERSION) == version
                slim[WRITTEN_VERSION] = version if written or echo else None
            self._objects[kind][key] = slim
            for label in INDEXED_LABELS:
                value = (meta.get("labels") or {}).get(label)
                if value is not None:
                    self._by_label[(kind, key[0], label, value)].add(key[1])
            return True

    def remove(self, kind: str, namespace: str | None, name: str, uid: str | None = None) -> None:
        """Drops the object, and remembers it as deleted. With `uid`, only if it is that very object (a new
        one of the same name stays)."""
        if kind == "ConfigMap" and ADAPTER_REPORT in self.kinds:
            self._remove(ADAPTER_REPORT, namespace, name, uid)
        self._remove(kind, namespace, name, uid)

    def _remove(self, kind: str, namespace: str | None, name: str, uid: str | None) -> None:
        key = (namespace or "", name)
        with self._lock:
            held = self._objects[kind].get(key)
            if uid is not None:
                self._deleted.add(uid)
            if held is None or (uid is not None and held["metadata"].get("uid") != uid):
                return
            del self._objects[kind][key]
            self._unindex(kind, key, held)
            if held["metadata"].get("uid"):
                self._deleted.add(held["metadata"]["uid"])

    def _unindex(self, kind: str, key: tuple[str, str], held: dict[str, Any]) -> None:
        for label in INDEXED_LABELS:
            value = (held["metadata"].get("labels") or {}).get(label)
            if value is None:
                continue
            names = self._by_label.get((kind, key[0], label, value))
            if names is not None:
                names.discard(key[1])
                if not names:
                    del self._by_label[(kind, key[0], label, value)]

    def stands(
        self, kind: str, namespace: str | None, name: str, owner_uid: str | None = None, rendered: str = ""
    ) -> bool:
        """Whether the object is as the operator's last write left it, that write was of the manifest
        `rendered` (its hash; any, if empty), and `owner_uid` controls it."""
        with self._lock:
            held = self._objects[kind].get((namespace or "", name))
            if held is None or not held.get(WRITTEN) or (rendered and held[WRITTEN] != rendered):
                return False
            return owner_uid is None or controller_uid(held) == owner_uid

    def echoes(self, kind: str, obj: dict[str, Any]) -> bool:
        """Whether this is the operator's own write coming back through the watch: the version that write
        returned, still marked as written. The reconcile that wrote it decided on the reply already."""
        meta = obj.get("metadata") or {}
        with self._lock:
            held = self._objects[kind].get((meta.get("namespace") or "", meta.get("name", "")))
            version = meta.get("resourceVersion")
            return bool(held and version and held.get(WRITTEN_VERSION) == version)

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """A copy (the reconciles may change what they read)."""
        with self._lock:
            held = self._objects[kind].get((namespace or "", name))
            return copied(held) if held is not None else None

    def list(
        self, kind: str, namespace: str | None = None, labels: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        labels = labels or {}
        indexed = next((label for label in INDEXED_LABELS if label in labels), None)
        with self._lock:
            objects = self._objects[kind]
            if indexed is not None and namespace is not None:
                names = self._by_label.get((kind, namespace, indexed, labels[indexed]), ())
                candidates = [objects[(namespace, n)] for n in sorted(names)]
            else:
                candidates = [o for (ns, _), o in objects.items() if namespace is None or ns == namespace]
            found = [
                o
                for o in candidates
                if all((o["metadata"].get("labels") or {}).get(k) == v for k, v in labels.items())
            ]
            return copied(found)

    def read(
        self, kind: str, namespace: str | None, name: str, read: Callable[[dict[str, Any]], Result]
    ) -> Result | None:
        """`read` of one object on the cache's own copy (as `read_each`); None when none is held."""
        with self._lock:
            held = self._objects[kind].get((namespace or "", name))
            return read(held) if held is not None else None

    def read_each(
        self, kind: str, read: Callable[[dict[str, Any]], Result], namespace: str | None = None
    ) -> list[Result]:
        """`read` of each object of a kind (in `namespace`, or everywhere), on the cache's own copies: for a
        scan over every object that needs a few fields of each (the resync), where a copy of each would be
        the whole cache again, allocated and dropped every minute (30 MiB at 5000 FineTuneJobs). `read`
        only reads, and returns nothing of the object's own dicts and lists."""
        with self._lock:
            return [
                read(o) for (ns, _), o in self._objects[kind].items() if namespace is None or ns == namespace
            ]

    def keys(self, kind: str) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._objects[kind])

    def count(self, kind: str) -> int:
        with self._lock:
            return len(self._objects[kind])


class CachedKube:
    """The client the reconciles use: reads of watched kinds come from the cache, everything else and every
    write goes to the API server; what a write returns is kept in the cache at once (the watch event that
    follows may take a while), so the next reconcile does not decide on what it has just changed."""

    def __init__(
        self,
        kube: Kube,
        cache: Cache,
        writers: int = 32,
        events_in_background: bool = True,
        max_pending_events: int = MAX_PENDING_EVENTS,
    ):
        self.kube, self.cache = kube, cache
        self._pending_events = 0
        self._max_pending_events = max_pending_events
        self._events_lock = threading.Lock()
        # Independent creations go out together; Events are recorded in the background, as client-go's
        # recorder does (a reconcile never waits for one, and never decides on one). A test that counts
        # calls records them in line, so that none lands after it looked.
        self._writers = ThreadPoolExecutor(writers, thread_name_prefix="writer")
        self._events = ThreadPoolExecutor(2, thread_name_prefix="events") if events_in_background else None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kube, name)

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        if kind in self.cache.served:
            return self.cache.get(kind, namespace, name)
        return self.kube.get(kind, namespace, name)

    def list(self, kind: str, namespace: str | None, labels: dict[str, str] | None = None) -> list[dict]:
        if kind in self.cache.served:
            return self.cache.list(kind, namespace, labels)
        return self.kube.list(kind, namespace, labels)

    def stands(self, manifest: dict[str, Any]) -> bool:
        """Whether this child is as the operator last wrote it, from this very manifest, so that writing it
        again would change nothing (see the module's docstring); a kind not watched is not known to."""
        meta = manifest["metadata"]
        kind = manifest["kind"]
        if kind not in FINGERPRINTED or kind not in self.cache.kinds:
            return False
        return self.cache.stands(
            kind, meta.get("namespace"), meta["name"], controller_uid(manifest), manifest_hash(manifest)
        )

    def _kept(self, kind: str, obj: dict[str, Any], manifest: dict[str, Any] | None = None) -> dict[str, Any]:
        """What a write returned, into the cache; `manifest`: what was written, whole (an apply's)."""
        if kind in self.cache.kinds and obj.get("metadata"):
            self.cache.upsert(kind, obj, written=written_mark(kind, manifest))
        return obj

    def apply(self, manifest: dict[str, Any], existing: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._kept(manifest["kind"], self.kube.apply(manifest, existing), manifest)

    def ensure(self, manifest: dict[str, Any]) -> dict[str, Any]:
        return self._kept(manifest["kind"], self.kube.ensure(manifest), manifest)

    def ensure_all(self, manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`ensure` for objects that do not depend on one another, all at once; the first error is raised
        once every one was tried (the next reconcile tries again)."""
        futures = [self._writers.submit(self.ensure, manifest) for manifest in manifests]
        wait(futures)
        return [future.result() for future in futures]

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        if manifest["kind"] == "Event":
            if self._events is None:
                self._record(manifest)
            elif self._hold_event():
                self._events.submit(self._record_held, manifest)
            return manifest
        return self._kept(manifest["kind"], self.kube.create(manifest), manifest)

    def _hold_event(self) -> bool:
        """Whether an Event may wait for the background: at most `max_pending_events` do (a thousand jobs
        starting post two thousand, faster than two threads record them on a loaded API server), as
        client-go's recorder drops what its full queue cannot take. A dropped one is counted."""
        with self._events_lock:
            if self._pending_events >= self._max_pending_events:
                EVENTS_DROPPED.inc()
                return False
            self._pending_events += 1
            EVENTS_PENDING.set(self._pending_events)
            return True

    def _record_held(self, event: dict[str, Any]) -> None:
        """`_record` in the background, for an Event `_hold_event` let wait."""
        try:
            self._record(event)
        finally:
            with self._events_lock:
                self._pending_events -= 1
                EVENTS_PENDING.set(self._pending_events)

    def _record(self, event: dict[str, Any]) -> None:
        involved = event.get("involvedObject") or {}
        try:
            self.kube.create(event)
        except Exception as error:  # an Event that cannot be recorded is logged, never fatal
            log.warning(
                "could not record event %s on %s/%s: %s",
                event.get("reason"), involved.get("namespace"), involved.get("name"), error,
            )  # fmt: skip

    def patch_merge(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self._kept(kind, self.kube.patch_merge(kind, namespace, name, patch))

    def patch_status(
        self,
        kind: str,
        namespace: str,
        name: str,
        status: dict[str, Any],
        uid: str | None = None,
        previous: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        try:
            return self._kept(kind, self.kube.patch_status(kind, namespace, name, status, uid, previous))
        except ApiException as error:
            if error.status == 404 or (error.status == 409 and uid is not None):
                # The resource this copy was of is gone (a deletion the watch has not brought, or missed
                # in a gap): the copy goes, so that it is not reconciled again and again.
                self.cache.remove(kind, namespace, name, uid)
            raise
