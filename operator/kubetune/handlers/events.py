"""Kubernetes Events about kubetune resources, for `kubectl describe` and `kubectl get events`."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from kubetune import rfc3339
from kubetune.kube import Kube
from kubetune.status import conditions

log = logging.getLogger("kubetune.events")
COMPONENT = "kubetune-operator"


def post(kube: Kube, body: dict[str, Any], event: conditions.Event) -> None:
    """Records an Event on the resource. The runtime's client records it off the reconcile's thread and
    logs a failure (runtime/cache.py: CachedKube.create): an Event is never fatal to the reconcile."""
    type_, reason, message = event.type, event.reason, event.message
    meta = body["metadata"]
    when = rfc3339.now()
    record = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": body.get("apiVersion"),
            "kind": body.get("kind"),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": when,
        "lastTimestamp": when,
        "count": 1,
    }
    log.info("%s %s/%s %s: %s", type_, meta["namespace"], meta["name"], reason, message)
    kube.create(record)
