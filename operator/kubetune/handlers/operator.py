"""The operator process: kopf settings, the watches that trigger a reconcile, metrics, the resync loop.

Every trigger (a FineTuneJob changed, one of its Jobs or pods changed, the periodic resync) runs the same
reconcile of the FineTuneJob. The only process state is a lock per resource, so that two triggers for the
same FineTuneJob do not reconcile it at the same time; decisions come from the cluster alone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import kopf
from kubernetes.client.rest import ApiException
from prometheus_client import start_http_server

from kubetune.api import GROUP, VERSION
from kubetune.api import finetunejob as ftj
from kubetune.api import modelserve as ms
from kubetune.api.defaults import LABEL_PREFIX, MANAGED_BY
from kubetune.config import OperatorConfig
from kubetune.handlers import finetunejob as finetunejob_handler
from kubetune.handlers import modelserve as modelserve_handler
from kubetune.handlers.metrics import JOBS_BY_PHASE, RECONCILE_SECONDS, RECONCILES
from kubetune.kube import Kube
from kubetune.render.finetunejob import FTJ_LABEL, PREPROCESS_LABEL
from kubetune.render.modelserve import MSERVE_LABEL

log = logging.getLogger("kubetune.operator")
TERMINAL = (ftj.Phase.SUCCEEDED.value, ftj.Phase.FAILED.value)
ADAPTERS_POLL_SECONDS = 5.0


class Reconciler:
    """Runs reconciles, one at a time per resource, and counts them."""

    def __init__(self, kube: Kube, config: OperatorConfig):
        self.kube = kube
        self.config = config
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def _lock(self, namespace: str, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

    def finetunejob(self, namespace: str, name: str, *, apply_static: bool) -> None:
        """Reconciles the FineTuneJob as it is now (re-read: the trigger's copy may be stale)."""
        with self._lock(namespace, name):
            body = self.kube.get("FineTuneJob", namespace, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                return
            body.setdefault("apiVersion", f"{GROUP}/{VERSION}")
            body.setdefault("kind", ftj.KIND)
            outcome = self._run(
                "FineTuneJob",
                lambda: finetunejob_handler.reconcile(
                    self.kube, body, self.config.trainer, apply_static=apply_static
                ),
            )
        # Its adapter is ready (or never will be): the ModelServes serving it decide again.
        if outcome is not None and outcome.changed and outcome.status.get("phase") in TERMINAL:
            self.modelserves_using(namespace, name)

    def modelserve(self, namespace: str, name: str) -> None:
        with self._lock(namespace, f"modelserve/{name}"):
            body = self.kube.get("ModelServe", namespace, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                return
            body.setdefault("apiVersion", f"{GROUP}/{VERSION}")
            body.setdefault("kind", ms.KIND)
            self._run(
                "ModelServe",
                lambda: modelserve_handler.reconcile(
                    self.kube, body, self.config.trainer, self.config.sidecar_image
                ),
            )

    def modelserves_using(self, namespace: str, finetunejob: str) -> None:
        """A FineTuneJob changed: the ModelServes serving its adapter decide again."""
        for body in self.kube.list("ModelServe", namespace):
            adapters = (body.get("spec") or {}).get("adapters") or []
            if any(a.get("fineTuneJob") == finetunejob for a in adapters):
                self.modelserve(namespace, body["metadata"]["name"])

    def resync_modelserves(self, only: Callable[[dict[str, Any]], bool] = lambda _body: True) -> None:
        """Reconciles every ModelServe (`only`: those it says yes to); one failing does not stop the rest."""
        for namespace in self.config.namespaces or [None]:
            for body in self.kube.list("ModelServe", namespace):
                if not only(body):
                    continue
                meta = body["metadata"]
                try:
                    self.modelserve(meta["namespace"], meta["name"])
                except Exception:
                    log.exception("resync of %s/%s failed", meta["namespace"], meta["name"])

    def _run(self, kind: str, reconcile: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            outcome = reconcile()
        except ApiException as error:
            if namespace_terminating(error):
                # Its namespace is being deleted, and the resource with it: nothing is left to do.
                RECONCILES.labels(kind, "unchanged").inc()
                log.info("a %s in a namespace being deleted: not reconciled", kind)
                return None
            RECONCILES.labels(kind, "error").inc()
            log.warning("reconcile of a %s failed: %s %s", kind, error.status, error.reason)
            raise
        except Exception:
            RECONCILES.labels(kind, "error").inc()
            raise
        finally:
            RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - started)
        changed = outcome.changed if hasattr(outcome, "changed") else outcome is not None
        RECONCILES.labels(kind, "changed" if changed else "unchanged").inc()
        return outcome

    def resync(self) -> None:
        """Reconciles every FineTuneJob: the safety net under the watches, and what makes TTLs fire."""
        phases: dict[str, int] = dict.fromkeys([p.value for p in ftj.Phase], 0)
        for namespace in self.config.namespaces or [None]:
            for body in self.kube.list("FineTuneJob", namespace):
                meta = body["metadata"]
                status = body.get("status") or {}
                phases[status.get("phase") or ftj.Phase.PENDING.value] += 1
                if (
                    status.get("phase") in TERMINAL
                    and (body.get("spec") or {}).get("ttlSecondsAfterFinished") is None
                ):
                    continue  # finished for good: nothing left to do
                try:
                    # The static children exist once Created: the Job and its pods are what can drift.
                    self.finetunejob(meta["namespace"], meta["name"], apply_static=False)
                except Exception:
                    log.exception("resync of %s/%s failed", meta["namespace"], meta["name"])
        for phase, count in phases.items():
            JOBS_BY_PHASE.labels(phase).set(count)
        self.resync_modelserves()


def namespace_terminating(error: ApiException) -> bool:
    """A write refused because the namespace is being deleted (its resources go with it)."""
    return error.status == 403 and "NamespaceTerminating" in str(error.body or "")


def status_only(event_type: str | None, body: Any) -> bool:
    """A change the operator already acted on: its own status write, or the launcher's progress report.

    The spec's generation is what the status was computed for, so there is nothing new to decide; the
    children's own events and the resync cover everything else. (A re-list has no type: never skipped.)
    """
    if event_type != "MODIFIED":
        return False
    status = body.get("status") or {}
    return status.get("observedGeneration") == body.get("metadata", {}).get("generation")


def adapters_pending(status: Any) -> bool:
    """A ModelServe with an adapter that its replicas have not loaded (or failed to, and may yet)."""
    return any(
        not a.get("ready") and a.get("reason") in ("Loading", "AdapterLoadFailed")
        for a in (status or {}).get("adapters") or []
    )


def register(reconciler_factory: Callable[[], Reconciler], config: OperatorConfig) -> None:
    """Registers the handlers with kopf. Called once, before kopf starts."""
    state: dict[str, Reconciler] = {}

    def reconciler() -> Reconciler:
        if "r" not in state:
            state["r"] = reconciler_factory()
        return state["r"]

    @kopf.on.startup()
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.finalizer = f"{LABEL_PREFIX}/finalizer"
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=LABEL_PREFIX)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=LABEL_PREFIX, key="last-handled-configuration"
        )
        # kopf would post an Event per handler run on every pod and Job; the reconcile records its own.
        settings.posting.enabled = False
        # Watch streams end and restart every few minutes: each restart re-lists, a cheap resync.
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.watching.connect_timeout = 10
        settings.networking.request_timeout = 60
        # Only the operator's own pods, Jobs and Deployments are watched, filtered by the API server.
        managed = f"app.kubernetes.io/managed-by={MANAGED_BY}"
        for resource in (("v1", "pods"), ("batch", "jobs"), ("apps", "deployments")):
            settings.watching.label_selectors[resource] = managed
        settings.execution.max_workers = 16
        # The resources are known up front: no watching of CRDs and namespaces (nor the RBAC for it).
        settings.scanning.disabled = True
        settings.peering.priority = config.priority
        if config.peering:
            settings.peering.name = config.peering
            settings.peering.mandatory = True
        else:
            settings.peering.standalone = True
        start_http_server(config.metrics_port)
        threading.Thread(target=_resync_loop, name="resync", daemon=True).start()
        threading.Thread(target=_adapters_loop, name="adapters", daemon=True).start()
        log.info(
            "kubetune operator started: %s, metrics on :%d, resync every %.0fs",
            ", ".join(config.namespaces) or "cluster-wide",
            config.metrics_port,
            config.resync_seconds,
        )

    def _resync_loop() -> None:
        while True:
            time.sleep(config.resync_seconds)
            try:
                reconciler().resync()
            except Exception:
                log.exception("resync failed")

    # The sidecars report what vLLM loaded into a ConfigMap that the operator does not watch (watching
    # ConfigMaps would mean the right to read every ConfigMap): while an adapter is not served yet, its
    # ModelServe is looked at again every few seconds.
    def _adapters_loop() -> None:
        while True:
            time.sleep(ADAPTERS_POLL_SECONDS)
            try:
                reconciler().resync_modelserves(only=lambda body: adapters_pending(body.get("status")))
            except Exception:
                log.exception("adapter poll failed")

    @kopf.on.event(GROUP, VERSION, ftj.PLURAL)
    def finetunejob_changed(name: str, namespace: str, type: str | None, body: kopf.Body, **_: Any) -> None:
        if type == "DELETED" or status_only(type, body):
            return
        reconciler().finetunejob(namespace, name, apply_static=True)

    @kopf.on.event("batch", "v1", "jobs", labels={FTJ_LABEL: kopf.PRESENT})
    def training_job_changed(labels: dict[str, str], namespace: str, **_: Any) -> None:
        reconciler().finetunejob(namespace, labels[FTJ_LABEL], apply_static=False)

    @kopf.on.event("v1", "pods", labels={FTJ_LABEL: kopf.PRESENT})
    def trainer_pod_changed(labels: dict[str, str], namespace: str, **_: Any) -> None:
        reconciler().finetunejob(namespace, labels[FTJ_LABEL], apply_static=False)

    # The preprocessing Job and its pod carry their own label (they are no attempt of the training).
    @kopf.on.event("batch", "v1", "jobs", labels={PREPROCESS_LABEL: kopf.PRESENT})
    def preprocess_job_changed(labels: dict[str, str], namespace: str, **_: Any) -> None:
        reconciler().finetunejob(namespace, labels[PREPROCESS_LABEL], apply_static=False)

    @kopf.on.event("v1", "pods", labels={PREPROCESS_LABEL: kopf.PRESENT})
    def preprocess_pod_changed(labels: dict[str, str], namespace: str, **_: Any) -> None:
        reconciler().finetunejob(namespace, labels[PREPROCESS_LABEL], apply_static=False)

    @kopf.on.event(GROUP, VERSION, ms.PLURAL)
    def modelserve_changed(name: str, namespace: str, type: str | None, body: kopf.Body, **_: Any) -> None:
        if type != "DELETED" and not status_only(type, body):
            reconciler().modelserve(namespace, name)

    @kopf.on.event("apps", "v1", "deployments", labels={MSERVE_LABEL: kopf.PRESENT})
    def vllm_deployment_changed(labels: dict[str, str], namespace: str, **_: Any) -> None:
        reconciler().modelserve(namespace, labels[MSERVE_LABEL])

    @kopf.on.event("v1", "pods", labels={MSERVE_LABEL: kopf.PRESENT})
    def vllm_pod_changed(labels: dict[str, str], namespace: str, **_: Any) -> None:
        reconciler().modelserve(namespace, labels[MSERVE_LABEL])
