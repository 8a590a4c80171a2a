"""The operator's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter("kubetune_reconciles_total", "Reconciles, by kind and result.", ["kind", "result"])
RECONCILE_SECONDS = Histogram(
    "kubetune_reconcile_duration_seconds",
    "Time one reconcile takes.",
    ["kind"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
JOBS_BY_PHASE = Gauge("kubetune_finetunejobs", "FineTuneJobs by phase, as of the last resync.", ["phase"])
RESTARTS = Counter("kubetune_finetunejob_restarts_total", "New attempts started after a failed one.")
QUEUE_DEPTH = Gauge("kubetune_workqueue_depth", "Resources waiting for a reconcile worker.")
QUEUE_WAIT_SECONDS = Histogram(
    "kubetune_workqueue_wait_seconds",
    "Time from a resource's first event to the start of its reconcile, by kind.",
    ["kind"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
RETRIES = Counter(
    "kubetune_workqueue_retries_total", "Reconciles that failed and were queued again.", ["kind"]
)
CACHED_OBJECTS = Gauge("kubetune_cached_objects", "Objects held by the watch caches, by kind.", ["kind"])
API_REQUESTS = Counter(
    "kubetune_api_requests_total",
    "Requests the reconciles made to the API server, by verb and resource (the watches count theirs apart).",
    ["verb", "resource"],
)
EVENTS_PENDING = Gauge("kubetune_events_pending", "Events waiting to be recorded in the background.")
EVENTS_DROPPED = Counter(
    "kubetune_events_dropped_total", "Events not recorded because too many were waiting already."
)
WATCH_FAILURES = Counter(
    "kubetune_watch_failures_total", "Watches of the operator's children that failed, by kind.", ["kind"]
)
WATCH_REQUESTS = Counter(
    "kubetune_watch_requests_total",
    "Requests the watches of the operator's children made: listing pages and watches, by kind and verb.",
    ["kind", "verb"],
)
RECONCILE_CAUSES = Counter(
    "kubetune_reconcile_causes_total",
    "Reconciles by kind and what queued them: an event of a watched kind (that kind), resync, retry, again "
    "(a reconcile asked to look again later), or while held (a change while a reconcile of it ran).",
    ["kind", "cause"],
)
