"""The few Kubernetes calls the operator makes, on the official client.

Children are written with server-side apply under one field manager (`kubetune`), forced, so the operator
owns exactly the fields it renders and applying the same manifest twice changes nothing. Forcing would also
take over an object someone else made under the same name, so `apply` first checks who controls an object
that exists: only one controlled by the same owner uid is written (`NotOurs` otherwise), and `delete_owned`
deletes only what that uid controls.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client import rest
from kubernetes.client.rest import ApiException
from kubernetes.utils.keepalive import tcp_keepalive_socket_options

from kubetune import jsonio
from kubetune.api import GROUP, VERSION, label_names
from kubetune.api.defaults import FIELD_MANAGER
from kubetune.api.validation import Problem
from kubetune.runtime.metrics import API_REQUESTS

# Kinds never re-adopted when orphaned: a training Job is an attempt of one FineTuneJob, with its own history
# (its failures count against that resource's restarts), and a new resource of the same name starts afresh.
NEVER_ADOPTED = frozenset({"Job"})


class NotOurs(Exception):
    """An object the operator would write exists and is not controlled by the resource being reconciled."""

    def __init__(self, kind: str, name: str, holder: str):
        self.kind, self.name, self.holder = kind, name, holder
        super().__init__(
            f"{kind} {name} already exists and is not this resource's ({holder}): it is left alone; "
            f"delete or rename it, or rename this resource"
        )


class ChildRefused(Exception):
    """The API server refused a rendered child as invalid (422): a value from the spec it does not accept."""

    def __init__(self, kind: str, name: str, message: str):
        self.kind, self.name = kind, name
        super().__init__(f"the API server refused {kind} {name}: {message}")


def controller_uid(obj: dict[str, Any]) -> str | None:
    """The uid of the object's controller (the ownerReference with controller: true), if it has one."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("uid")
    return None


def uid_test(uid: str) -> dict[str, Any]:
    """The JSON patch operation that refuses the patch (422) unless the object is that very uid."""
    return {"op": "test", "path": "/metadata/uid", "value": uid}


def status_ops(status: dict[str, Any], uid: str, previous: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON patch of a status write in one request: the uid's test, then each field of `status` set
    whole (None: removed, when `previous` has it). With no status yet, the whole status is added, after a
    test that there is none (the API server's JSON patch passes a null test on a missing path)."""
    ops = [uid_test(uid)]
    if not previous:
        given = {key: value for key, value in status.items() if value is not None}
        return [
            *ops,
            {"op": "test", "path": "/status", "value": None},
            {"op": "add", "path": "/status", "value": given},
        ]
    for key, value in status.items():
        pointer = "/status/" + key.replace("~", "~0").replace("/", "~1")
        if value is not None:
            ops.append({"op": "add", "path": pointer, "value": value})
        elif key in previous:
            ops.append({"op": "remove", "path": pointer})
    return ops


def holder(obj: dict[str, Any], manifest: dict[str, Any] | None = None) -> str:
    """Who an object belongs to, in words: its controller, or the field managers that wrote it; or, when
    the operator does not adopt orphans, that it is the operator's own orphan (for `manifest`)."""
    meta = obj.get("metadata") or {}
    if manifest is not None and _our_orphan(obj, manifest):
        return (
            "no controller: this operator's own, orphaned by `kubectl delete --cascade=orphan` of an earlier "
            "resource of this name; the installation does not adopt orphans (the chart's adoptOrphans), so "
            "delete it to go on"
        )
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller"):
            gone = ", being deleted" if meta.get("deletionTimestamp") else ""
            return f"controlled by {ref.get('kind')} {ref.get('name')} uid {ref.get('uid')}{gone}"
    managers = sorted({m.get("manager", "?") for m in meta.get("managedFields") or []})
    return f"no controller; written by {', '.join(managers) or 'an unknown client'}"


def adoptable(existing: dict[str, Any], manifest: dict[str, Any], adopt_orphans: bool) -> bool:
    """Whether the operator may take `existing` for `manifest`'s owner: its own orphan, if it adopts them."""
    return adopt_orphans and _our_orphan(existing, manifest)


def _our_orphan(existing: dict[str, Any], manifest: dict[str, Any]) -> bool:
    """An object this operator made for a resource of the same name, orphaned (`--cascade=orphan`).

    Re-adopting it is safe: it is rendered the same way again. Anything else is someone else's.
    """
    if manifest["kind"] in NEVER_ADOPTED or controller_uid(existing) is not None:
        return False
    meta = existing.get("metadata") or {}
    managers = meta.get("managedFields") or []
    # Applied, or created (`ensure`) by this operator.
    applied_by_us = any(m.get("manager") == FIELD_MANAGER and not m.get("subresource") for m in managers)
    wanted = manifest["metadata"].get("labels") or {}
    labels = meta.get("labels") or {}
    owner_labels = [key for key in label_names.OWNERS if key in wanted]
    return applied_by_us and bool(owner_labels) and all(labels.get(k) == wanted[k] for k in owner_labels)


@dataclass(frozen=True)
class Kind:
    api_version: str
    plural: str

    def path(self, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if namespace is not None:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{name}"
        if subresource is not None:
            base += f"/{subresource}"
        return base


ADAPTER_REPORT = "AdapterReport"

KINDS = {
    "ConfigMap": Kind("v1", "configmaps"),
    # A ModelServe's report ConfigMap, read under its own kind so that the operator's cache, which keeps
    # those ConfigMaps alone (runtime/controller.py), answers it: a settled ModelServe asks the API nothing.
    ADAPTER_REPORT: Kind("v1", "configmaps"),
    "Secret": Kind("v1", "secrets"),
    "Service": Kind("v1", "services"),
    "ServiceAccount": Kind("v1", "serviceaccounts"),
    "Pod": Kind("v1", "pods"),
    "PersistentVolumeClaim": Kind("v1", "persistentvolumeclaims"),
    "Event": Kind("v1", "events"),
    "Role": Kind("rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": Kind("rbac.authorization.k8s.io/v1", "rolebindings"),
    "Job": Kind("batch/v1", "jobs"),
    "Deployment": Kind("apps/v1", "deployments"),
    "HorizontalPodAutoscaler": Kind("autoscaling/v2", "horizontalpodautoscalers"),
    "ScaledObject": Kind("keda.sh/v1alpha1", "scaledobjects"),
    "Lease": Kind("coordination.k8s.io/v1", "leases"),
    "FineTuneJob": Kind(f"{GROUP}/{VERSION}", "finetunejobs"),
    "ModelServe": Kind(f"{GROUP}/{VERSION}", "modelserves"),
}


# The path prefix of kubetune's own resources.
CUSTOM_RESOURCES = f"/apis/{GROUP}/"
# (connect, read) seconds: no call waits longer on a connection that answers nothing (a lost node or load
# balancer leaves one open and silent). A busy API server answers well within the read timeout.
DEFAULT_TIMEOUT = (5.0, 30.0)
# (connect, read) seconds, or one number for the whole call, connecting included.
Timeout = tuple[float, float] | float


def request_kind(method: str, path: str) -> tuple[str, str]:
    """(verb, resource) of a request, as the API server's audit names them: `list` for a GET of a
    collection; the resource with its subresource (`modelserves/status`)."""
    parts = path.strip("/").split("/")
    core = parts[0] == "api"
    rest = parts[2:] if core else parts[3:]  # after /api/v1 or /apis/group/version
    if rest[:1] == ["namespaces"] and len(rest) > 2:
        rest = rest[2:]
    resource = rest[0] if rest else ""
    named = len(rest) > 1
    if len(rest) > 2:
        resource = f"{resource}/{rest[2]}"
    verb = {"GET": "get" if named else "list", "POST": "create", "PATCH": "patch", "PUT": "update",
            "DELETE": "delete"}.get(method, method.lower())  # fmt: skip
    return verb, resource


class Kube:
    """A thin, synchronous wrapper: JSON in, JSON out, no client models. Every call has a timeout."""

    def __init__(
        self,
        api_client: client.ApiClient | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        adopt_orphans: bool = True,
    ):
        self.api = api_client or client.ApiClient()
        self.timeout = timeout
        self.adopt_orphans = adopt_orphans  # take back the operator's own orphans (see `_our_orphan`)

    @classmethod
    def from_environment(
        cls,
        kubeconfig: str | None = None,
        pool_size: int = 32,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        adopt_orphans: bool = True,
    ) -> Kube:
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        # One connection per worker thread: a smaller pool makes threads re-handshake TLS under load.
        configuration.connection_pool_maxsize = pool_size
        # An idle pooled connection whose peer vanished is found by keepalive probes, not by the next call.
        configuration.socket_options = tcp_keepalive_socket_options(idle=15, interval=5, count=3)
        # A stale pooled connection is dialled again, but a call that timed out is not sent twice: the
        # caller (the work queue's backoff, the Lease's deadline) decides what happens next.
        configuration.retries = urllib3.Retry(total=2, connect=2, read=0, status=0, redirect=0)
        return cls(client.ApiClient(configuration), timeout, adopt_orphans)

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
        timeout: Timeout | None = None,
        counted: bool = True,
    ) -> dict[str, Any]:
        if counted:  # the reconciles' requests; the watches count theirs apart (runtime/listwatch.py)
            API_REQUESTS.labels(*request_kind(method, path)).inc()
        response = _answered(self._send(method, path, body, query, content_type, timeout))
        data = response.read()
        return decoder(path)(data) if data else {}

    def watch(self, path: str, query: list[tuple[str, str]], timeout: Timeout) -> Any:
        """A watch's response, its body not read yet: the caller reads its events as they come (its `stream`)
        and releases it. `timeout`'s read part bounds each wait for the next bytes, not the whole watch."""
        query = [*query, ("watch", "true")]
        return _answered(self._send("GET", path, None, query, "application/json", timeout)).response

    def _send(
        self,
        method: str,
        path: str,
        body: Any,
        query: list[tuple[str, str]] | None,
        content_type: str,
        timeout: Timeout | None,
    ) -> rest.RESTResponse:
        """The request, straight to the client's connection pool: the URL with its query and the token come
        from the client (it refreshes a projected token), the body is encoded here. The client's own layers
        above the pool (encoding the body again, parsing the URL again) were a twentieth of the operator's
        CPU under load."""
        method_, url, headers, _, _ = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=None,
            auth_settings=["BearerToken"],
        )
        payload = None if body is None else jsonio.dumps(body, self.api.sanitize_for_serialization)
        try:
            response = self.api.rest_client.pool_manager.urlopen(
                method_,
                url,
                body=payload,
                headers=headers,
                timeout=_pool_timeout(timeout or self.timeout),
                preload_content=False,
            )
        except urllib3.exceptions.SSLError as error:  # as the client says it
            raise ApiException(status=0, reason=f"{type(error).__name__}\n{error}") from error
        return rest.RESTResponse(response)

    def get(
        self, kind: str, namespace: str | None, name: str, timeout: Timeout | None = None
    ) -> dict[str, Any] | None:
        try:
            return self._call("GET", KINDS[kind].path(namespace, name), timeout=timeout)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: str | None, labels: dict[str, str] | None = None) -> list[dict]:
        query = []
        if labels:
            query.append(("labelSelector", ",".join(f"{k}={v}" for k, v in sorted(labels.items()))))
        return self._call("GET", KINDS[kind].path(namespace), query=query).get("items", [])

    def list_page(
        self, kind: str, namespace: str | None, selector: str | None, limit: int, token: str | None = None
    ) -> dict[str, Any]:
        """One page of a listing, as the API server sends it: its `items`, and in its `metadata` the
        `resourceVersion` to watch from and the `continue` token of the next page (none on the last). A
        watch's listing: not counted among the reconciles' requests."""
        query = [("limit", str(limit))]
        if selector:
            query.append(("labelSelector", selector))
        if token:
            query.append(("continue", token))
        return self._call("GET", KINDS[kind].path(namespace), query=query, counted=False)

    def stands(self, manifest: dict[str, Any]) -> bool:
        """Whether the child is as this operator last wrote it. Only the cache knows (runtime/cache.py):
        without it, nothing is known to stand, and a resync's pass writes every child."""
        return False

    def apply(self, manifest: dict[str, Any], existing: dict[str, Any] | None = None) -> dict[str, Any]:
        """Server-side apply, forced: the operator's rendering is the truth for the fields it sets.

        A manifest with a controller ownerReference is applied only when the object does not exist or is
        controlled by that same uid (or is this operator's own orphan, see `_our_orphan`); otherwise
        `NotOurs` is raised and nothing is written. `existing` saves the read when the caller has it; when
        this call reads it, a missing object is created instead (refused if someone made it meanwhile), and
        the apply carries the resourceVersion it checked (refused if it changed hands meanwhile).
        A child the API server refuses as invalid raises `ChildRefused`.
        """
        meta = manifest["metadata"]
        kind = KINDS[manifest["kind"]]
        owner = controller_uid(manifest)
        body = manifest
        if owner is not None:
            read_here = existing is None
            if existing is None:
                existing = self.get(manifest["kind"], meta.get("namespace"), meta["name"])
                if existing is None:
                    # Created, not applied: an object someone makes meanwhile refuses the create (409),
                    # where a forced apply would take it over; `ensure` then checks it as here.
                    return self.ensure(manifest)
            if controller_uid(existing) != owner and not adoptable(existing, manifest, self.adopt_orphans):
                raise NotOurs(manifest["kind"], meta["name"], holder(existing, manifest))
            version = self._adopt_created_fields(manifest["kind"], existing)
            if read_here:
                # The object as checked, or a conflict (409): it changed hands between the read and now.
                body = {**manifest, "metadata": {**meta, "resourceVersion": version}}
        try:
            return self._call(
                "PATCH",
                kind.path(meta.get("namespace"), meta["name"]),
                body=body,
                query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
                content_type="application/apply-patch+yaml",
            )
        except ApiException as error:
            if error.status in (400, 422):  # invalid, or a patch the API server cannot merge
                raise ChildRefused(manifest["kind"], meta["name"], _api_message(error)) from error
            raise

    def ensure(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Creates the object, or, when it exists, applies over it as `apply` does (if it is this owner's).

        One request for an object that does not exist yet, against two for `apply` (which reads first to
        check the owner): the API server itself refuses to create over an object that exists.
        """
        meta = manifest["metadata"]
        try:
            return self._call(
                "POST",
                KINDS[manifest["kind"]].path(meta.get("namespace")),
                body=manifest,
                query=[("fieldManager", FIELD_MANAGER)],
            )
        except ApiException as error:
            if error.status == 409:  # exists: whose it is decides, as for any apply
                return self.apply(manifest)
            if error.status in (400, 422):
                raise ChildRefused(manifest["kind"], meta["name"], _api_message(error)) from error
            raise

    def _adopt_created_fields(self, kind: str, existing: dict[str, Any]) -> str:
        """An object `ensure` created is owned by the operator's create (an Update), not by its apply: the
        fields are handed to the apply, so that one the rendering drops later is removed, not left behind
        (what kubectl does when it moves an object to server-side apply). Returns the object's
        resourceVersion after it."""
        meta = existing["metadata"]
        managers = meta.get("managedFields") or []
        ours = {
            m.get("operation"): i
            for i, m in enumerate(managers)
            if m.get("manager") == FIELD_MANAGER and not m.get("subresource")
        }
        if "Apply" in ours or "Update" not in ours:
            return meta.get("resourceVersion", "")
        index = ours["Update"]
        patch = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]},
            {"op": "replace", "path": f"/metadata/managedFields/{index}/operation", "value": "Apply"},
        ]
        try:
            patched = self._call(
                "PATCH",
                KINDS[kind].path(meta.get("namespace"), meta["name"]),
                body=patch,
                content_type="application/json-patch+json",
            )
        except ApiException as error:
            if error.status not in (409, 422):  # changed meanwhile: the apply goes ahead as it is
                raise
            return meta.get("resourceVersion", "")
        return (patched.get("metadata") or {}).get("resourceVersion", "")

    def ensure_all(self, manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`ensure` for objects that do not depend on one another (here one after the other): every one is
        tried, and the first error is raised after the last (as `CachedKube.ensure_all`, which writes them
        at once)."""
        out, first_error = [], None
        for manifest in manifests:
            try:
                out.append(self.ensure(manifest))
            except Exception as error:
                first_error = first_error or error
        if first_error is not None:
            raise first_error
        return out

    def create(self, manifest: dict[str, Any], timeout: Timeout | None = None) -> dict[str, Any]:
        meta = manifest["metadata"]
        path = KINDS[manifest["kind"]].path(meta.get("namespace"))
        return self._call("POST", path, body=manifest, timeout=timeout)

    def replace(self, manifest: dict[str, Any], timeout: Timeout | None = None) -> dict[str, Any]:
        """A PUT of the whole object: with its resourceVersion, refused (409) if it changed meanwhile."""
        meta = manifest["metadata"]
        path = KINDS[manifest["kind"]].path(meta.get("namespace"), meta["name"])
        return self._call("PUT", path, body=manifest, timeout=timeout)

    def patch_merge(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A merge patch (an update under the same field manager), for fields another actor may own too."""
        return self._call(
            "PATCH",
            KINDS[kind].path(namespace, name),
            body=patch,
            query=[("fieldManager", FIELD_MANAGER)],
            content_type="application/merge-patch+json",
        )

    def patch_status(
        self,
        kind: str,
        namespace: str,
        name: str,
        status: dict[str, Any],
        uid: str | None = None,
        previous: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A patch of .status: only the fields given change (None removes one); the launcher's are kept.

        With `uid`, nothing is written onto another object of the same name (a stale copy of a deleted
        resource onto its successor). With `previous` too (the status as the caller read it), that is one
        request: a JSON patch that tests the uid and sets each field (`status_ops`). The status subresource
        ignores a uid given in a merge patch, so without `previous`, or when that patch is refused (422: the
        uid's test failed, or the status is not as `previous` has it), a JSON patch that only tests the uid
        goes first, and a mismatch is a 409; then the merge patch.
        """
        path = KINDS[kind].path(namespace, name, "status")
        if uid is not None and previous is not None:
            try:
                return self._call(
                    "PATCH",
                    path,
                    body=status_ops(status, uid, previous),
                    query=[("fieldManager", FIELD_MANAGER)],
                    content_type="application/json-patch+json",
                )
            except ApiException as error:
                if error.status != 422:
                    raise
        if uid is not None:
            try:
                self._call("PATCH", path, body=[uid_test(uid)], content_type="application/json-patch+json")
            except ApiException as error:
                if error.status == 422:  # the test failed: another object holds the name now
                    raise ApiException(
                        status=409, reason=f"Conflict: {name} is no longer uid {uid}"
                    ) from error
                raise
        return self._call(
            "PATCH",
            path,
            body={"status": status},
            query=[("fieldManager", FIELD_MANAGER)],
            content_type="application/merge-patch+json",
        )

    def pods_refused(self, controller: dict[str, Any]) -> str | None:
        """Why a controller (a Job, a ReplicaSet) cannot create its pods: its newest FailedCreate Event,
        such as a refusal by Pod Security admission. None when it has none."""
        meta = controller["metadata"]
        selector = f"involvedObject.uid={meta['uid']},reason=FailedCreate"
        events = self._call(
            "GET", KINDS["Event"].path(meta["namespace"]), query=[("fieldSelector", selector)]
        ).get("items", [])
        if not events:
            return None

        def when(event: dict[str, Any]) -> str:
            return (
                event.get("lastTimestamp") or event.get("eventTime") or event["metadata"]["creationTimestamp"]
            )

        return max(events, key=when).get("message") or "FailedCreate"

    def delete_owned(self, kind: str, namespace: str, name: str, owner_uid: str) -> bool:
        """Deletes the object only if `owner_uid` controls it (the uid precondition pins that very object).

        Returns whether it was deleted; an object that is missing or someone else's is left alone.
        """
        existing = self.get(kind, namespace, name)
        if existing is None or controller_uid(existing) != owner_uid:
            return False
        try:
            self._call(
                "DELETE",
                KINDS[kind].path(namespace, name),
                body={
                    "propagationPolicy": "Background",
                    "preconditions": {"uid": existing["metadata"]["uid"]},
                },
            )
        except ApiException as error:
            if error.status in (404, 409):  # gone already, or replaced by another object meanwhile
                return False
            raise
        return True

    def delete(
        self,
        kind: str,
        namespace: str,
        name: str,
        propagation: str = "Background",
        uid: str | None = None,
    ) -> bool:
        """Deletes the object; with `uid`, only that very object (another of the same name is left alone).
        Returns whether it was deleted."""
        body: dict[str, Any] = {"propagationPolicy": propagation}
        if uid is not None:
            body["preconditions"] = {"uid": uid}
        try:
            self._call("DELETE", KINDS[kind].path(namespace, name), body=body)
        except ApiException as error:
            if error.status == 404 or (error.status == 409 and uid is not None):
                return False
            raise
        return True


def decoder(path: str) -> Callable[[bytes | str], Any]:
    """How to read what the API server sends for `path`: a kubetune resource holds the user's spec, whose
    numbers jsonio.loads keeps as written; Kubernetes' own kinds are read faster (jsonio.loads_builtin)."""
    return jsonio.loads if path.startswith(CUSTOM_RESOURCES) else jsonio.loads_builtin


def _pool_timeout(timeout: Timeout) -> urllib3.Timeout:
    """(connect, read) seconds, or one number for the whole call, as urllib3 takes them."""
    if isinstance(timeout, tuple):
        return urllib3.Timeout(connect=timeout[0], read=timeout[1])
    return urllib3.Timeout(total=timeout)


def _answered(response: Any) -> Any:
    """The response, if the API server did what was asked; its refusal as an ApiException otherwise."""
    if not 200 <= response.status < 300:
        data = response.read()
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        raise ApiException.from_response(http_resp=response, body=text, data=None)
    return response


def _api_message(error: ApiException) -> str:
    """The API server's own message (it names the field), out of the Status body of an error."""
    try:
        return json.loads(error.body).get("message") or str(error.reason)
    except (TypeError, ValueError):
        return str(error.body or error.reason)


def child_problem(error: NotOurs | ChildRefused) -> Problem:
    """A child that could not be written, as the resource's problem (a condition and an Event)."""
    if isinstance(error, NotOurs):
        # Waiting: it resolves itself once the other object is gone (or its garbage collection finishes).
        return Problem("ChildConflict", str(error), terminal=False)
    return Problem("InvalidValue", str(error), terminal=True)
