"""An in-memory stand-in for `kubetune.kube.Kube`, so that a reconcile's decisions can be tested in tables.

It is NOT a replacement for the integration tier against the real API server: it knows no schema, no
defaulting, no admission, no field managers but the operator's own applies, no watch, no conflicts between
writers and no garbage collector's delays. What it keeps is what the reconciles decide on:

- objects by kind, namespace and name, each with a uid, a resourceVersion that moves only when the object
  changes, a generation that moves when its spec changes, a creationTimestamp, and its ownerReferences;
- `apply` (and `ensure` over an existing object) refuses, with `NotOurs`, an object that exists under the
  child's name and is controlled by another uid, unless it is the operator's own orphan: the same
  `controller_uid` / `adoptable` / `holder` as `Kube.apply`. An apply sets the fields the manifest
  sets, removes those the operator applied before and renders no more, and leaves what others wrote
  (status, the sidecars' report keys); an apply that changes nothing changes nothing;
- `ChildRefused` for a child a test marked invalid (`refuse`), as the API server's 422;
- `create` of an existing object is a 409 (`ApiException`), `patch_merge` / `patch_status` of a missing one a
  404; `patch_status` merges into .status; `delete_owned` deletes only what that uid controls; a deletion
  takes the dependents with it (the garbage collector, at once), unless orphaned;
- every call of the client, in order (`calls`: verb, kind, name), so that a test can assert what was
  written and that nothing else was (`writes`), and which writes changed something (`changes`).

Setting up the cluster (`add`, `claim`, `config_map`) and playing the other controllers (`job_running`,
`job_failed`, `pod_phase`, `deployment_ready`...) change the objects directly and are not recorded.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from kubernetes.client.rest import ApiException

from kubetune.api.defaults import FIELD_MANAGER
from kubetune.handlers import events
from kubetune.kube import (
    ADAPTER_REPORT,
    KINDS,
    ChildRefused,
    NotOurs,
    adoptable,
    controller_uid,
    holder,
    status_ops,
)
from kubetune.status.attempts import DISRUPTION_CONDITION

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
READS = frozenset({"get", "list", "pods_refused"})
# Unique in the process, as an API server's uids are in a cluster: what the operator remembers by uid
# (validation.RulesHeld) must never carry over from one test's objects to another's.
_UIDS = itertools.count(1)
# What an apply never changes: the API server keeps it (field managers are not modelled beyond who made
# the object, which is what `_our_orphan` reads).
IDENTITY = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields")


class Call(NamedTuple):
    verb: str  # the client's method: get, list, apply, ensure, create, patch_merge, patch_status, ...
    kind: str
    name: str | None  # None for a list


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: a dict merges key by key, None removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge_patch(out.get(key), value)
    return out


def _json_patch(target: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902's test, add and remove, as the API server applies them (a test of null passes on a missing
    path); a failed test or a missing parent is its 422, and nothing is changed."""
    out = copy.deepcopy(target)
    for op in ops:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        node = out
        for part in parents:
            if not isinstance(node, dict) or part not in node:
                raise _api_error(422, f"Invalid: no {op['path']}")
            node = node[part]
        if op["op"] == "test" and node.get(last) != op["value"]:
            raise _api_error(422, f"Invalid: the test of {op['path']} failed")
        if op["op"] == "add":
            node[last] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            if last not in node:
                raise _api_error(422, f"Invalid: no {op['path']}")
            del node[last]
        elif op["op"] != "test":
            raise ValueError(f"the fake applies no JSON patch op {op['op']!r}")
    return out


def _applied_over(live: dict[str, Any], applied_before: Any, manifest: dict[str, Any]) -> dict[str, Any]:
    """Server-side apply of `manifest` by a manager that last applied `applied_before`: a field it applied
    before and no longer sets goes, a field it sets replaces the live one (a list as a whole), and a field
    it never set is left to whoever did."""
    out = copy.deepcopy(live)
    before = applied_before if isinstance(applied_before, dict) else {}
    for key in before.keys() - manifest.keys():
        out.pop(key, None)
    for key, value in manifest.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _applied_over(out[key], before.get(key), value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _known(kind: str) -> None:
    if kind not in KINDS:  # the real client has no path for it either
        raise KeyError(kind)


def _api_error(status: int, reason: str) -> ApiException:
    return ApiException(status=status, reason=reason)


def timestamp(seconds_ago: float = 0) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).strftime(TIME_FORMAT)


class FakeKube:
    """The methods of `kubetune.kube.Kube` the reconciles use, over a dict of objects."""

    def __init__(self, *, not_installed: frozenset[str] | set[str] = frozenset(), adopt_orphans: bool = True):
        # (kind, namespace, name) -> object
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.calls: list[Call] = []
        self._changing: list[Call] = []  # the calls that changed an object, in order
        self._revision = 0  # moves with every change of the store
        self._refused: dict[tuple[str, str], str] = {}
        # What the operator last applied to each object (ensure and apply): the fields it owns.
        self._applied: dict[tuple[str, str, str], dict[str, Any]] = {}
        # Kinds whose API is not served (a CRD not installed, such as KEDA's ScaledObject): a 404.
        self.not_installed = frozenset(not_installed)
        self.adopt_orphans = adopt_orphans  # as Kube's: take back the operator's own orphans
        self._versions = itertools.count(1)

    # --- what a test reads back -------------------------------------------------------------------

    def writes(self) -> list[Call]:
        """Every write request but an Event's (see `events`), in order, whether it changed anything or not."""
        return [c for c in self.calls if c.verb not in READS and c.kind != "Event"]

    def changes(self) -> list[Call]:
        """The write requests that changed an object (an apply of what is there already changes nothing)."""
        return [c for c in self._changing if c.kind != "Event"]

    def events(self) -> list[tuple[str, str]]:
        """(type, reason) of every Event the operator posted, in order."""
        return [
            (e["type"], e["reason"])
            for e in self.list_quietly("Event")
            if e.get("reportingComponent") == events.COMPONENT
        ]

    def forget_calls(self) -> None:
        """Starts a new record (the Events stay in the cluster)."""
        self.calls.clear()
        self._changing.clear()

    def list_quietly(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Objects of a kind, in the order they were made, without recording a call."""
        found = [o for (k, ns, _), o in self.objects.items() if k == kind and namespace in (None, ns)]
        return copy.deepcopy(found)

    def get_quietly(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        held = self.objects.get((kind, namespace, name))
        return copy.deepcopy(held) if held is not None else None

    # --- the client ---------------------------------------------------------------------------------

    @contextmanager
    def _recorded(self, verb: str, kind: str, name: str | None) -> Iterator[None]:
        call = Call(verb, kind, name)
        self.calls.append(call)
        before = self._revision
        try:
            yield
        finally:
            if self._revision != before:
                self._changing.append(call)

    def _check_kind(self, kind: str) -> None:
        _known(kind)
        if kind in self.not_installed:
            raise _api_error(404, f"the server could not find the requested resource ({kind})")

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        with self._recorded("get", kind, name):
            _known(kind)  # any 404 is "not there" to Kube.get, a kind the API server does not serve too
            # A report ConfigMap read under its own kind (the operator's cache answers it) is a ConfigMap.
            stored = "ConfigMap" if kind == ADAPTER_REPORT else kind
            return self.get_quietly(stored, namespace or "", name)

    def list(self, kind: str, namespace: str | None, labels: dict[str, str] | None = None) -> list[dict]:
        with self._recorded("list", kind, None):
            self._check_kind(kind)
            wanted = labels or {}
            return [
                o
                for o in self.list_quietly(kind, namespace)
                if all((o["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())
            ]

    def stands(self, manifest: dict[str, Any]) -> bool:
        """As the real client without the operator's cache: nothing is known to stand."""
        return False

    def apply(self, manifest: dict[str, Any], existing: dict[str, Any] | None = None) -> dict[str, Any]:
        with self._recorded("apply", manifest["kind"], manifest["metadata"]["name"]):
            return self._apply(manifest)

    def ensure(self, manifest: dict[str, Any]) -> dict[str, Any]:
        kind, meta = manifest["kind"], manifest["metadata"]
        with self._recorded("ensure", kind, meta["name"]):
            self._check_kind(kind)
            if (kind, meta.get("namespace") or "", meta["name"]) in self.objects:
                return self._apply(manifest)  # as Kube.ensure on a 409: whose it is decides
            self._check_refused(manifest)
            self._applied[(kind, meta.get("namespace") or "", meta["name"])] = copy.deepcopy(manifest)
            return self._store_new(manifest, operation="Update")

    def ensure_all(self, manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """As `CachedKube.ensure_all` (the reconciles' client): every one is tried, in order here, and the
        first error is raised once all were."""
        results: list[dict[str, Any]] = []
        first_error: Exception | None = None
        for manifest in manifests:
            try:
                results.append(self.ensure(manifest))
            except Exception as error:
                first_error = first_error or error
        if first_error is not None:
            raise first_error
        return results

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        kind, meta = manifest["kind"], manifest["metadata"]
        with self._recorded("create", kind, meta["name"]):
            self._check_kind(kind)
            if (kind, meta.get("namespace") or "", meta["name"]) in self.objects:
                raise _api_error(409, "AlreadyExists")
            if (kind, meta["name"]) in self._refused:
                raise _api_error(422, self._refused[(kind, meta["name"])])
            return self._store_new(manifest, operation="Update")

    def patch_merge(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        with self._recorded("patch_merge", kind, name):
            self._check_kind(kind)
            key = (kind, namespace, name)
            if key not in self.objects:
                raise _api_error(404, "NotFound")
            return self._replace(key, _merge_patch(self.objects[key], patch))

    def patch_status(
        self,
        kind: str,
        namespace: str,
        name: str,
        status: dict[str, Any],
        uid: str | None = None,
        previous: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        with self._recorded("patch_status", kind, name):
            self._check_kind(kind)
            key = (kind, namespace, name)
            if key not in self.objects:
                raise _api_error(404, "NotFound")
            if uid is not None and self.objects[key]["metadata"].get("uid") != uid:
                raise _api_error(409, "Conflict")  # the uid in the patch is a precondition
            # The status subresource: only .status changes. Kube's requests, in its order: the JSON patch
            # of status_ops, then, where the API server refuses it, the merge patch.
            updated = copy.deepcopy(self.objects[key])
            if uid is not None and previous is not None:
                try:
                    updated["status"] = _json_patch(updated, status_ops(status, uid, previous)).get("status")
                    return self._replace(key, updated)
                except ApiException as error:
                    if error.status != 422:
                        raise
            updated["status"] = _merge_patch(updated.get("status") or {}, status)
            return self._replace(key, updated)

    def pods_refused(self, controller: dict[str, Any]) -> str | None:
        meta = controller["metadata"]
        with self._recorded("pods_refused", controller.get("kind") or "Job", meta["name"]):
            refusals = [
                e
                for e in self.list_quietly("Event", meta["namespace"])
                if e.get("reason") == "FailedCreate" and e["involvedObject"].get("uid") == meta["uid"]
            ]
            if not refusals:
                return None
            return max(refusals, key=lambda e: e["lastTimestamp"]).get("message") or "FailedCreate"

    def delete_owned(self, kind: str, namespace: str, name: str, owner_uid: str) -> bool:
        with self._recorded("delete_owned", kind, name):
            _known(kind)  # found by Kube.get: a kind not served is nothing to delete
            existing = self.objects.get((kind, namespace, name))
            if existing is None or controller_uid(existing) != owner_uid:
                return False
            self._delete((kind, namespace, name), "Background")
            return True

    def delete(
        self,
        kind: str,
        namespace: str,
        name: str,
        propagation: str = "Background",
        uid: str | None = None,
    ) -> bool:
        with self._recorded("delete", kind, name):
            _known(kind)  # a 404 is nothing to delete
            existing = self.objects.get((kind, namespace, name))
            if existing is None or (uid is not None and existing["metadata"].get("uid") != uid):
                return False  # gone, or another object of that name: the precondition refuses it
            self._delete((kind, namespace, name), propagation)
            return True

    def _apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        kind, meta = manifest["kind"], manifest["metadata"]
        self._check_kind(kind)
        key = (kind, meta.get("namespace") or "", meta["name"])
        existing = self.objects.get(key)
        owner = controller_uid(manifest)
        if (
            owner is not None
            and existing is not None
            and controller_uid(existing) != owner
            and not adoptable(existing, manifest, self.adopt_orphans)
        ):
            raise NotOurs(kind, meta["name"], holder(existing, manifest))
        self._check_refused(manifest)
        if existing is None:
            self._applied[key] = copy.deepcopy(manifest)
            return self._store_new(manifest, operation="Apply")
        # Forced server-side apply: the operator's fields become the manifest's (one it applied before and
        # renders no more is removed); what others wrote (status, a sidecar's data keys) stays.
        updated = _applied_over(existing, self._applied.get(key, {}), manifest)
        updated["metadata"].update(
            {k: existing["metadata"][k] for k in IDENTITY if k in existing["metadata"]}
        )
        self._applied[key] = copy.deepcopy(manifest)
        return self._replace(key, updated)

    # --- the store ----------------------------------------------------------------------------------

    def _check_refused(self, manifest: dict[str, Any]) -> None:
        message = self._refused.get((manifest["kind"], manifest["metadata"]["name"]))
        if message is not None:
            raise ChildRefused(manifest["kind"], manifest["metadata"]["name"], message)

    def _store_new(
        self, manifest: dict[str, Any], operation: str = "Update", manager: str = FIELD_MANAGER
    ) -> dict[str, Any]:
        obj = copy.deepcopy(manifest)
        meta = obj["metadata"]
        meta.setdefault("namespace", "")
        meta["uid"] = f"uid-{next(_UIDS)}"
        meta["resourceVersion"] = str(next(self._versions))
        meta["generation"] = 1
        meta["creationTimestamp"] = timestamp()
        meta["managedFields"] = [{"manager": manager, "operation": operation}]
        self.objects[(obj["kind"], meta["namespace"], meta["name"])] = obj
        self._revision += 1
        return copy.deepcopy(obj)

    def _replace(self, key: tuple[str, str, str], updated: dict[str, Any]) -> dict[str, Any]:
        held = self.objects[key]
        if updated != held:
            meta = updated["metadata"]
            meta["resourceVersion"] = str(next(self._versions))
            if updated.get("spec") != held.get("spec"):
                meta["generation"] = held["metadata"].get("generation", 1) + 1
            self.objects[key] = copy.deepcopy(updated)
            self._revision += 1
        return copy.deepcopy(self.objects[key])

    def _delete(self, key: tuple[str, str, str], propagation: str) -> None:
        gone = self.objects.pop(key)
        self._applied.pop(key, None)
        self._revision += 1
        uid = gone["metadata"]["uid"]
        for other_key, other in list(self.objects.items()):
            refs = other["metadata"].get("ownerReferences") or []
            if not any(r.get("uid") == uid for r in refs) or other_key not in self.objects:
                continue
            if propagation == "Orphan":
                other["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
            else:
                self._delete(other_key, propagation)

    # --- a test sets the cluster up -------------------------------------------------------------------

    def add(
        self, obj: dict[str, Any], namespace: str = "team-a", manager: str = "kubectl", **status: Any
    ) -> dict[str, Any]:
        """Any object, made by someone else (`manager`); `status` fields are set on it."""
        obj = copy.deepcopy(obj)
        obj["metadata"].setdefault("namespace", namespace)
        if status:
            obj["status"] = {**(obj.get("status") or {}), **status}
        return self._store_new(obj, operation="Update", manager=manager)

    def claim(self, name: str = "shared", namespace: str = "team-a") -> dict[str, Any]:
        return self.add(
            {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name}},
            namespace,
            phase="Bound",
        )

    def config_map(self, name: str, data: dict[str, str], namespace: str = "team-a") -> dict[str, Any]:
        return self.add(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}, namespace
        )

    def refuse(self, kind: str, name: str, message: str) -> None:
        """The API server refuses this child as invalid (a 422 naming the field)."""
        self._refused[(kind, name)] = message

    def edit(self, obj: dict[str, Any], **spec: Any) -> dict[str, Any]:
        """A user's edit: top-level spec fields replaced (None removes one); the generation moves."""
        key = self._key(obj)
        updated = copy.deepcopy(self.objects[key])
        for field, value in spec.items():
            if value is None:
                updated["spec"].pop(field, None)
            else:
                updated["spec"][field] = copy.deepcopy(value)
        return self._replace(key, updated)

    def set_status(self, obj: dict[str, Any], **fields: Any) -> dict[str, Any]:
        """Merges `fields` into the object's status, as its controller (or a test playing it) would."""
        key = self._key(obj)
        updated = copy.deepcopy(self.objects[key])
        updated["status"] = _merge_patch(updated.get("status") or {}, fields)
        return self._replace(key, updated)

    def backdate(self, obj: dict[str, Any], seconds: float) -> dict[str, Any]:
        """Makes the object `seconds` older (a Job whose pods should have appeared by now)."""
        held = self.objects[self._key(obj)]
        held["metadata"]["creationTimestamp"] = timestamp(seconds)
        return copy.deepcopy(held)

    def _key(self, obj: dict[str, Any]) -> tuple[str, str, str]:
        meta = obj["metadata"]
        return obj["kind"], meta.get("namespace") or "", meta["name"]

    # --- a test plays the Job controller ---------------------------------------------------------------

    def job(self, namespace: str, name: str) -> dict[str, Any]:
        job = self.get_quietly("Job", namespace, name)
        assert job is not None, f"no Job {namespace}/{name}"
        return job

    def job_pods(self, job: dict[str, Any], phase: str = "Pending", **status: Any) -> list[dict[str, Any]]:
        """The Job's pods (one per completion index), as the Job controller makes them, in `phase`."""
        job = self.get_quietly("Job", job["metadata"]["namespace"], job["metadata"]["name"]) or job
        meta, spec = job["metadata"], job["spec"]
        labels = (spec["template"].get("metadata") or {}).get("labels") or {}
        pods = []
        for index in range(spec.get("parallelism") or 1):
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"{meta['name']}-{index}-x{meta['uid'][-4:]}",
                    "namespace": meta["namespace"],
                    "labels": dict(labels),
                    "ownerReferences": [
                        {
                            "apiVersion": "batch/v1",
                            "kind": "Job",
                            "name": meta["name"],
                            "uid": meta["uid"],
                            "controller": True,
                        }
                    ],
                },
            }
            pods.append(self.add(pod, manager="kube-controller-manager", phase=phase, **status))
        self.set_status(job, active=len(pods))
        return pods

    def job_started(self, job: dict[str, Any], *, seconds_ago: float = 30, active: int = 0) -> dict[str, Any]:
        """The Job controller synced the Job `seconds_ago` and counts `active` pods of it."""
        return self.set_status(job, startTime=timestamp(seconds_ago), active=active)

    def job_running(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        """The Job's pods are scheduled and run."""
        return self.job_pods(job, "Running", startTime=timestamp())

    def job_pods_gone(self, job: dict[str, Any]) -> None:
        """The Job controller deleted the Job's pods (it was suspended)."""
        for pod in self.pods_of(job):
            del self.objects[self._key(pod)]
            self._revision += 1
        self.set_status(job, active=0)

    def pod_phase(self, pod: dict[str, Any], phase: str, **status: Any) -> dict[str, Any]:
        return self.set_status(pod, phase=phase, **status)

    def pods_of(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        uid = job["metadata"]["uid"]
        return [p for p in self.list_quietly("Pod") if controller_uid(p) == uid]

    def _end_job(self, job: dict[str, Any], type_: str, stopped: bool, reason: str, message: str) -> dict:
        target = "FailureTarget" if type_ == "Failed" else "SuccessCriteriaMet"
        conditions = [{"type": target, "status": "True", "reason": reason, "message": message}]
        if stopped:
            conditions.append({"type": type_, "status": "True", "reason": reason, "message": message})
            phase = "Failed" if type_ == "Failed" else "Succeeded"
            for pod in self.pods_of(job):
                self.pod_phase(pod, phase)
        status: dict[str, Any] = {"conditions": conditions}
        if stopped:
            status["active"] = 0
            if type_ == "Complete":
                status["completionTime"] = timestamp()
        return self.set_status(job, **status)

    def job_failed(
        self,
        job: dict[str, Any],
        *,
        stopped: bool = True,
        reason: str = "BackoffLimitExceeded",
        message: str = "Job has reached the specified backoff limit",
    ) -> dict[str, Any]:
        """The Job failed: decided (FailureTarget), and once `stopped`, every pod has ended (Failed)."""
        return self._end_job(job, "Failed", stopped, reason, message)

    def job_disrupted(self, job: dict[str, Any], *, stopped: bool = True) -> dict[str, Any]:
        """A pod was evicted or preempted: the podFailurePolicy failed the Job naming DisruptionTarget."""
        message = f"Pod team-a/x has condition {DISRUPTION_CONDITION} matching FailJob rule at index 0"
        return self._end_job(job, "Failed", stopped, "PodFailurePolicy", message)

    def job_succeeded(self, job: dict[str, Any], *, stopped: bool = True) -> dict[str, Any]:
        return self._end_job(
            job, "Complete", stopped, "CompletionsReached", "Reached expected number of succeeded pods"
        )

    def failed_create(self, job: dict[str, Any], message: str) -> dict[str, Any]:
        """The Job controller could not create a pod (admission refused it): its FailedCreate Event, and
        its status written in the same sync (started, no pod counted)."""
        self.job_started(job)
        meta = job["metadata"]
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.failedcreate"},
            "involvedObject": {"kind": "Job", "name": meta["name"], "uid": meta["uid"]},
            "type": "Warning",
            "reason": "FailedCreate",
            "message": message,
            "lastTimestamp": timestamp(),
        }
        return self.add(event, meta["namespace"], manager="kube-controller-manager")

    # --- a test plays the Deployment controller ---------------------------------------------------------

    def deployment_ready(self, deployment: dict[str, Any], ready: int | None = None) -> list[dict[str, Any]]:
        """The Deployment rolled out: `ready` (default: all its replicas) pods run and pass readiness."""
        held = self.objects[self._key(deployment)]
        meta, spec = held["metadata"], held["spec"]
        replicas = spec.get("replicas", 1) if spec.get("replicas") is not None else 1
        ready = replicas if ready is None else ready
        labels = (spec["template"].get("metadata") or {}).get("labels") or {}
        # The pods belong to the ReplicaSet the Deployment made for its template, as the real controller's.
        template_hash = hashlib.sha256(json.dumps(spec["template"], sort_keys=True).encode()).hexdigest()[:10]
        replica_set = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": f"{meta['name']}-{template_hash}",
        }
        pods = []
        for index in range(replicas):
            is_ready = index < ready
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"{meta['name']}-{template_hash}-{index}",
                    "namespace": meta["namespace"],
                    "labels": {**labels, "pod-template-hash": template_hash},
                    "ownerReferences": [{**replica_set, "uid": f"rs-{template_hash}", "controller": True}],
                },
            }
            pods.append(
                self.add(
                    pod,
                    manager="kube-controller-manager",
                    phase="Running",
                    conditions=[{"type": "Ready", "status": "True" if is_ready else "False"}],
                )
            )
        self.set_status(
            held,
            observedGeneration=meta["generation"],
            replicas=replicas,
            updatedReplicas=replicas,
            readyReplicas=ready,
            availableReplicas=ready,
            conditions=[{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}],
        )
        return pods
