"""List, then watch, one kind of the operator's children: each event decoded once and handed to the
controller, and nothing else done with it.

kopf watches the two custom resources (handlers/watches.py). The children are most of the operator's watch
events: a FineTuneJob that starts brings about three of its own, three of its Job's and three of its pod's.
kopf handled each event with a task per object, a memory of it, three loggers, a cause and a handler
invocation, and that machinery was about a fifth of the operator's CPU at a thousand jobs starting, more
than the decoding of the events.

What a `ListWatch` does is client-go's reflector's:
- a LIST in pages of PAGE objects, then a WATCH from the listing's resourceVersion, with bookmarks, renewed
  from the last version seen each time the API server ends it (`watch_seconds`);
- a listing replaces what the cache held of the kind (`on_listed`), so an object deleted while no watch ran
  goes from the cache too;
- 410 Gone (the version was compacted away, or a page's continue token expired) lists again at once;
- any other failure (the API server down, refusing, or a connection gone silent) watches again from the
  last version after a capped backoff, and lists again when that fails too;
- a stream that sends nothing for `watch_seconds + 10` s, bookmarks included, is a dead connection (a lost
  load balancer or NAT entry sends no reset): its read times out and the watch is dialled again, and no
  watch lives longer than `watch_seconds + 20` s whatever comes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kubernetes.client.rest import ApiException

from kubetune.kube import KINDS, Kube, decoder
from kubetune.runtime.metrics import WATCH_FAILURES, WATCH_REQUESTS

log = logging.getLogger("kubetune.operator")

# Objects per page of a listing: a page of pods is a few MiB at most, and 5000 pods list in ten requests.
PAGE = 500
# Seconds before watching again after the n-th failure in a row, then the last one until one succeeds.
BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)


class Expired(Exception):
    """The API server no longer has the resourceVersion asked for (410 Gone): list again."""


def lines(response: Any) -> Iterator[bytes]:
    """The non-empty lines of a streamed response (a watch sends one JSON event per line), as they come."""
    pending = b""
    for chunk in response.stream(amt=None, decode_content=True):
        pending += chunk
        if b"\n" not in pending:
            continue
        *complete, pending = pending.split(b"\n")
        yield from (line for line in complete if line.strip())
    if pending.strip():
        yield pending


@dataclass
class ListWatch:
    """Keeps the controller told of every object of `kind` in `namespace` (None: cluster-wide) that
    `selector` matches. `on_listed(namespace, items, version)` with each whole listing, `on_event(type,
    object)` with each change after it (ADDED, MODIFIED, DELETED)."""

    kube: Kube
    kind: str
    namespace: str | None
    selector: str | None
    on_listed: Callable[[str | None, list[dict[str, Any]], str], None]
    on_event: Callable[[str, dict[str, Any]], None]
    watch_seconds: int = 30
    connect_seconds: float = 5.0
    clock: Callable[[], float] = time.monotonic

    @property
    def name(self) -> str:
        return f"{self.kind} in {self.namespace}" if self.namespace else f"{self.kind}, cluster-wide"

    def run(self, stop: threading.Event) -> None:
        """Lists and watches until `stop` is set (it ends at the current watch's next event or end)."""
        version: str | None = None
        failures = 0
        while not stop.is_set():
            try:
                if version is None:
                    version = self.list()
                version = self.watch(version, stop)
                failures = 0
            except Expired:
                log.info("watch of %s: resourceVersion %s is gone; listing again", self.name, version)
                version = None
            except Exception as error:
                delay = BACKOFF[min(failures, len(BACKOFF) - 1)]
                if failures:  # a second failure in a row: the version may be what fails, list again
                    version = None
                failures += 1
                WATCH_FAILURES.labels(self.kind).inc()
                log.warning("watch of %s failed (again in %.1fs): %s", self.name, delay, _said(error))
                stop.wait(delay)

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name=f"watch {self.name}", daemon=True)
        thread.start()
        return thread

    def _hand_on(self, event_type: str, obj: dict[str, Any]) -> None:
        """One event to the controller: one it fails on is logged and skipped, never a stop of the watch
        (the next event of that object, or the resync, brings it again)."""
        try:
            self.on_event(event_type, obj)
        except Exception:
            log.exception("%s event of %s %s not handled", event_type, self.kind, _name(obj))

    def list(self) -> str:
        """The whole listing, page by page, to `on_listed`; returns the version to watch from."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            WATCH_REQUESTS.labels(self.kind, "list").inc()
            try:
                page = self.kube.list_page(self.kind, self.namespace, self.selector, PAGE, token)
            except ApiException as error:
                if error.status == 410:  # the continue token expired between two pages
                    raise Expired() from error
                raise
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                version = str(meta["resourceVersion"])
                self.on_listed(self.namespace, items, version)
                return version

    def watch(self, version: str, stop: threading.Event) -> str:
        """One watch from `version` until the API server ends it; returns the last version seen."""
        query = [("resourceVersion", version), ("allowWatchBookmarks", "true")]
        query.append(("timeoutSeconds", str(self.watch_seconds)))
        if self.selector:
            query.append(("labelSelector", self.selector))
        path = KINDS[self.kind].path(self.namespace)
        read = decoder(path)
        WATCH_REQUESTS.labels(self.kind, "watch").inc()
        try:
            response = self.kube.watch(path, query, timeout=(self.connect_seconds, self.watch_seconds + 10))
        except ApiException as error:
            if error.status == 410:
                raise Expired() from error
            raise
        deadline = self.clock() + self.watch_seconds + 20
        ended = False  # by the API server: the connection can serve another request
        try:
            for line in lines(response):
                event = read(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Expired()
                    raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                version = str(obj["metadata"]["resourceVersion"])
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self._hand_on(kind, obj)
                if stop.is_set() or self.clock() > deadline:
                    break
            else:
                ended = True
        finally:
            if ended:
                response.release_conn()
            else:  # a stream left half-read cannot go back to the pool
                response.close()
        return version


def _name(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta.get('name')}"


def _said(error: Exception) -> str:
    if isinstance(error, ApiException):
        return f"{error.status} {error.reason}"
    return f"{type(error).__name__}: {error}"
