"""Kubernetes Events about kubetune resources, for `kubectl describe` and `kubectl get events`."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.rest import ApiException

from kubetune.kube import Kube

log = logging.getLogger("kubetune.events")
COMPONENT = "kubetune-operator"


def post(kube: Kube, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
    """Records an Event on the resource; a failure to record is logged, never fatal to the reconcile."""
    meta = body["metadata"]
    when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {
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
    try:
        kube.create(event)
    except ApiException as error:
        log.warning("could not record event %s on %s/%s: %s", reason, meta["namespace"], meta["name"], error)
