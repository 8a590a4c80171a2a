"""The adapters a ModelServe pod should serve, as soon as the operator writes them: a watch of the pod's one
adapters ConfigMap through the API, with the sidecar's own token.

The ConfigMap is also mounted into the sidecar, but the kubelet refreshes a mounted ConfigMap only on its
own schedule (its sync period plus its cache's TTL: about a minute, measured 69 s on a real kubelet), and an
adapter added to a ModelServe would wait for it. The watch sees the operator's write within milliseconds
and wakes the sync loop. The mounted file stays the source while the watch has not read the ConfigMap yet
(the pod's start) or cannot reach the API server: the pod serves what it was given either way.

The sidecar's Role allows get, list and watch of this one ConfigMap (resourceNames): the API server checks a
list or watch against resourceNames when it names its object with `fieldSelector=metadata.name=...`, so the
token reads no other ConfigMap. One watch per pod, a long-lived connection: at steady state no request
beyond the watch's renewal every WATCH_SECONDS from its last resourceVersion (a LIST of the one object at
start, after a failure, or when the API server no longer has that version: 410 Gone).
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

log = logging.getLogger("kubetune.adapter-sync")

# The watch ends server-side after this long and is renewed from its last version; a connection silent
# for 10 s longer is dead (a dropped NAT entry sends no reset) and is dialled again.
WATCH_SECONDS = 60
CONNECT_TIMEOUT = 5.0
LIST_TIMEOUT = 10.0
RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0)  # after a failure, then the last one until the API server answers


def parse_adapters(text: str) -> dict[str, str]:
    """{name: path} from the adapters document, the ConfigMap's value or the mounted file's text; ValueError
    when it is not a JSON object (a half-written file, say)."""
    document = json.loads(text)  # json.JSONDecodeError is a ValueError
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    return {str(k): str(v) for k, v in document.items()}


def desired_from(data: dict[str, str] | None, key: str) -> dict[str, str] | None:
    """{name: path} from the ConfigMap's data; None when it has no valid document under `key` (the mounted
    file decides then)."""
    try:
        return parse_adapters((data or {})[key])
    except (KeyError, TypeError, ValueError):
        return None


class AdapterWatch:
    """Keeps `desired` equal to the ConfigMap's adapters while `live`; sets `wake` when they change."""

    def __init__(self, api: Any, configmap: str, namespace: str, key: str, wake: threading.Event):
        self.api, self.configmap, self.namespace, self.key, self.wake = api, configmap, namespace, key, wake
        self.desired: dict[str, str] | None = None
        self.live = False  # the last list or watch event came from the API server, no failure since
        self.version: str | None = None

    def current(self) -> dict[str, str] | None:
        """The adapters from the API, or None when the mounted file must decide."""
        return self.desired if self.live else None

    def _take(self, configmap: Any | None) -> None:
        desired = None if configmap is None else desired_from(configmap.data, self.key)
        if configmap is not None and desired is None:
            log.warning("ConfigMap %s has no valid %s: the mounted file decides", self.configmap, self.key)
        if desired != self.desired:
            self.desired = desired
            self.wake.set()

    def _field_selector(self) -> str:
        return f"metadata.name={self.configmap}"

    def list(self) -> None:
        listed = self.api.list_namespaced_config_map(
            self.namespace, field_selector=self._field_selector(), _request_timeout=LIST_TIMEOUT
        )
        self._take(listed.items[0] if listed.items else None)
        self.version = listed.metadata.resource_version
        self.live = True
        self.wake.set()

    def watch_once(self) -> None:
        """One watch, from `version` until the server ends it (WATCH_SECONDS) or it goes silent."""
        from kubernetes import watch

        watcher = watch.Watch()
        stream = watcher.stream(
            self.api.list_namespaced_config_map,
            self.namespace,
            field_selector=self._field_selector(),
            resource_version=self.version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS,
            _request_timeout=(CONNECT_TIMEOUT, WATCH_SECONDS + 10),
        )
        # An ERROR event arrives as an ApiException (410: the version is gone); the client keeps the last
        # version seen, bookmarks' included.
        for event in stream:
            self.version = watcher.resource_version
            if event["type"] in ("ADDED", "MODIFIED"):
                self._take(event["object"])
            elif event["type"] == "DELETED":
                self._take(None)
        self.version = watcher.resource_version

    def run(self, stop: threading.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                if self.version is None:
                    self.list()
                self.watch_once()
                failures = 0
            except Exception as error:  # the API server down, slow, refusing: the file decides meanwhile
                if getattr(error, "status", None) == 410:  # too old a version: list again, at once
                    self.version = None
                    continue
                if self.live:
                    log.warning(
                        "watching ConfigMap %s failed, the mounted file decides: %s", self.configmap, error
                    )
                    self.wake.set()
                self.live, self.version = False, None
                stop.wait(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
                failures += 1

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name="adapter-watch", daemon=True)
        thread.start()
        return thread
