"""kopf's part: the watches of the two custom resources, which fill the controller's caches and queue keys,
and the two reconciles.

The handlers registered here only record what a watch saw and queue the key of the resource it concerns
(runtime/controller.py); the workers run `RECONCILERS`. Nothing here calls the API server. The children's
watches are the runtime's own (runtime/listwatch.py says why).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import kopf
from prometheus_client import start_http_server

from kubetune.api import finetunejob as ftj
from kubetune.api import modelserve as ms
from kubetune.config import OperatorConfig
from kubetune.handlers import finetunejob as finetunejob_handler
from kubetune.handlers import modelserve as modelserve_handler
from kubetune.kube import Kube
from kubetune.runtime.controller import RESOURCES, RESOURCES_LISTED, WATCHED, Controller, Reconcile
from kubetune.runtime.outcome import Outcome

log = logging.getLogger("kubetune.operator")


def _reconcile_finetunejob(kube: Kube, body: dict[str, Any], config: OperatorConfig, full: bool) -> Outcome:
    return finetunejob_handler.reconcile(kube, body, config.trainer)


def _reconcile_modelserve(kube: Kube, body: dict[str, Any], config: OperatorConfig, full: bool) -> Outcome:
    return modelserve_handler.reconcile(kube, body, config.trainer, config.sidecar_image, full=full)


RECONCILERS: dict[str, Reconcile] = {ftj.KIND: _reconcile_finetunejob, ms.KIND: _reconcile_modelserve}


class NoDiffBase(kopf.DiffBaseStorage):
    """No last-handled state: kopf would deep-copy every event's whole object to diff it against the last
    one it handled, a tenth of the operator's CPU under load, for change handlers this operator does not
    have (it registers only event and index handlers, which never read a diff)."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def configure(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    """kopf's settings: watches only (no finalizers, no progress annotations: no handler uses them), with
    timeouts so that a dead connection is noticed and the watch resumes from its last resourceVersion."""
    # kopf would post an Event per handler run; the reconciles record their own.
    settings.posting.enabled = False
    # The API server ends each watch after `server_timeout` and kopf resumes it from its resourceVersion;
    # a stream silent for longer than that (bookmarks included) is a dead connection, dropped and dialled
    # again. `client_timeout` bounds a stream's whole life in any case.
    settings.watching.server_timeout = int(config.watch_seconds)  # the API server takes whole seconds
    settings.watching.inactivity_timeout = config.watch_seconds + 10
    settings.watching.client_timeout = config.watch_seconds + 20
    settings.watching.connect_timeout = config.api_connect_seconds
    settings.networking.connect_timeout = config.api_connect_seconds
    settings.networking.request_timeout = config.api_timeout_seconds
    # The handlers below only record and queue: they are async, and run in kopf's own loop.
    settings.execution.max_workers = 2
    # kopf keeps a task per object while its events come; a second of quiet ends it (memory).
    settings.queueing.idle_timeout = 1.0
    # The resources are known up front: no watching of CRDs and namespaces (nor the RBAC for it).
    settings.scanning.disabled = True
    settings.persistence.diffbase_storage = NoDiffBase()
    # One replica acts at a time through the Lease (runtime/leader.py), never through kopf's peering.
    settings.peering.standalone = True


def register(controller_factory: Callable[[], Controller], config: OperatorConfig) -> None:
    """Registers the handlers with kopf. Called once, before kopf starts."""
    state: dict[str, Controller] = {}

    def controller() -> Controller:
        if "c" not in state:
            state["c"] = controller_factory()
        return state["c"]

    @kopf.on.startup()
    def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure(settings, config)
        start_http_server(config.metrics_port)
        controller().start()
        log.info(
            "kubetune operator started: %s, %d workers, metrics on :%d, resync every %.0fs",
            ", ".join(config.namespaces) or "cluster-wide",
            config.workers,
            config.metrics_port,
            config.resync_seconds,
        )

    for kind, group, version, plural in WATCHED:
        if kind in RESOURCES:
            _register_watch(controller, kind, group, version, plural)


def _register_watch(
    controller: Callable[[], Controller], kind: str, group: str, version: str, plural: str
) -> None:
    resource = (group, version, plural) if group else (version, plural)

    # kopf calls index handlers for every event (the initial listing of every kind included) before any
    # other handler, and holds the other handlers until every kind was listed: the cache fills here.
    async def record(body: kopf.Body, **_: Any) -> None:
        controller().cache.upsert(kind, {key: body[key] for key in body})

    async def react(type: str | None, event: dict[str, Any], **_: Any) -> None:
        ctl = controller()
        if not ctl.caches_filled.is_set():
            ctl.listed_once(RESOURCES_LISTED)
        ctl.react(kind, type, event["object"])

    record.__name__ = record.__qualname__ = f"record_{plural}"
    react.__name__ = react.__qualname__ = f"react_{plural}"
    kopf.index(*resource, id=f"record-{plural}")(record)
    kopf.on.event(*resource, id=f"react-{plural}")(react)
