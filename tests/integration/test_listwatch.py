"""The runtime's list-watch of the operator's children (runtime/listwatch.py) against the real API server:
paged listing, every change after it, renewal from the last version, 410 Gone, and connections that break
as networks break them (tests/faultproxy.py)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from kubetune.kube import Kube
from kubetune.runtime import listwatch
from kubetune.runtime.listwatch import ListWatch
from kubetune.runtime.metrics import API_REQUESTS, WATCH_REQUESTS
from tests.cluster import localcluster
from tests.faultproxy import FaultProxy, proxied_kubeconfig, upstream
from tests.kube import wait_until

LABEL = "test.kubetune.io/list-watch"


class Seen:
    """What a ListWatch told: its listings' names, and each event as (type, name)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.listings: list[list[str]] = []
        self.events: list[tuple[str, str]] = []

    def listed(self, namespace: str | None, items: list[dict[str, Any]], version: str) -> None:
        assert version
        with self.lock:
            self.listings.append(sorted(i["metadata"]["name"] for i in items))

    def event(self, event_type: str, obj: dict[str, Any]) -> None:
        with self.lock:
            self.events.append((event_type, obj["metadata"]["name"]))

    def saw(self, event_type: str, name: str) -> bool:
        with self.lock:
            return (event_type, name) in self.events

    def knows(self, name: str) -> bool:
        """Whether the object came, as a change or in a listing after the first (a watch that failed twice
        in a row lists again)."""
        with self.lock:
            return self.saw("ADDED", name) or any(name in listing for listing in self.listings[1:])


class CountingKube(Kube):
    """The real client, counting its listing pages and its watches."""

    def __init__(self, api: client.ApiClient):
        super().__init__(api)
        self.pages = self.watches = 0

    def list_page(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.pages += 1
        return super().list_page(*args, **kwargs)

    def watch(self, *args: Any, **kwargs: Any) -> Any:
        self.watches += 1
        return super().watch(*args, **kwargs)


def samples(metric: Any, **labels: str) -> float:
    return sum(
        sample.value
        for family in metric.collect()
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels.items() >= labels.items()
    )


def reconciles_requests() -> float:
    return samples(API_REQUESTS)


def config_map(core: client.CoreV1Api, namespace: str, name: str) -> None:
    body = {"metadata": {"name": name, "labels": {LABEL: namespace}}, "data": {"a": "1"}}
    core.create_namespaced_config_map(namespace, body)


@contextlib.contextmanager
def running(watch: ListWatch) -> Iterator[threading.Event]:
    stop = threading.Event()
    watch.start(stop)
    try:
        yield stop
    finally:
        stop.set()  # the thread ends with its current watch, within 12 s: nothing waits for it


def watch_of(kube: Kube, namespace: str, seen: Seen, watch_seconds: int = 2) -> ListWatch:
    return ListWatch(
        kube,
        "ConfigMap",
        namespace,
        f"{LABEL}={namespace}",
        on_listed=seen.listed,
        on_event=seen.event,
        watch_seconds=watch_seconds,
        connect_seconds=2,
    )


def test_it_lists_in_pages_then_brings_every_change_across_the_watches_renewals(
    namespace: str, api: client.ApiClient, core: client.CoreV1Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listwatch, "PAGE", 2)
    for index in range(5):
        config_map(core, namespace, f"cm-{index}")
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "not-selected"}})
    kube, seen = CountingKube(api), Seen()
    counted = reconciles_requests()
    with running(watch_of(kube, namespace, seen)):
        wait_until(lambda: seen.listings, "the first listing")
        assert seen.listings == [[f"cm-{i}" for i in range(5)]] and kube.pages == 3

        config_map(core, namespace, "added")
        core.patch_namespaced_config_map("cm-1", namespace, {"data": {"a": "2"}})
        core.delete_namespaced_config_map("cm-2", namespace)
        for change in (("ADDED", "added"), ("MODIFIED", "cm-1"), ("DELETED", "cm-2")):
            wait_until(lambda change=change: seen.saw(*change), f"{change} through the watch")

        # The API server ends each watch after 2 s: the next one resumes from the last version seen, and
        # neither lists again nor replays what was seen.
        watches = kube.watches
        wait_until(lambda: kube.watches >= watches + 2, "two renewals of the watch")
        config_map(core, namespace, "after-renewals")
        wait_until(lambda: seen.saw("ADDED", "after-renewals"), "a change after the renewals")
        assert len(seen.listings) == 1 and kube.pages == 3
        assert sorted(seen.events).count(("ADDED", "added")) == 1
    # The watches count their requests apart: a quiet cluster's reconciles ask for nothing
    # (tests/integration/test_steady_state.py), while the watches renew every `watch_seconds`.
    assert reconciles_requests() == counted
    assert samples(WATCH_REQUESTS, kind="ConfigMap", verb="watch") >= kube.watches


def test_a_version_the_api_server_no_longer_has_lists_again(
    namespace: str, api: client.ApiClient, core: client.CoreV1Api
) -> None:
    """The API server answers a watch at a version compacted away with 410 Gone (its message is in
    tests/unit/test_listwatch.py): here the first watch is answered so, and the objects changed meanwhile
    come with the second listing."""

    class GoneOnce(CountingKube):
        def watch(self, *args: Any, **kwargs: Any) -> Any:
            if self.watches == 0:
                self.watches += 1
                config_map(core, namespace, "while-gone")
                raise ApiException(status=410, reason="Expired: too old resource version")
            return super().watch(*args, **kwargs)

    config_map(core, namespace, "before")
    kube, seen = GoneOnce(api), Seen()
    with running(watch_of(kube, namespace, seen)):
        wait_until(lambda: len(seen.listings) >= 2, "a second listing after the 410")
        config_map(core, namespace, "after")
        wait_until(lambda: seen.saw("ADDED", "after"), "the watch after the second listing")
    assert seen.listings[:2] == [["before"], ["before", "while-gone"]]


def test_through_a_dead_connection_and_a_reset_it_dials_again_and_misses_nothing(
    namespace: str, cluster: localcluster.ClusterInfo, core: client.CoreV1Api, tmp_path: Path
) -> None:
    proxy = FaultProxy(*upstream(cluster.kubeconfig))
    try:
        kube = Kube.from_environment(
            proxied_kubeconfig(cluster.kubeconfig, proxy, tmp_path / "kubeconfig"), timeout=(2, 5)
        )
        seen = Seen()
        failures = listwatch.WATCH_FAILURES.labels("ConfigMap")
        with running(watch_of(kube, namespace, seen)):
            wait_until(lambda: seen.listings, "the first listing")

            # A lost load balancer: the open watch goes silent, nothing is closed.
            failed = failures._value.get()
            proxy.dead()
            config_map(core, namespace, "while-dead")  # straight to the API server
            wait_until(
                lambda: proxy.dialled_while_dead >= 1, "the silent watch given up and dialled again", 60
            )
            assert not seen.saw("ADDED", "while-dead")
            proxy.restore()
            wait_until(lambda: seen.knows("while-dead"), "the change made while dead", 60)
            assert failures._value.get() > failed

            # A restarted API server or proxy resets every connection: the watch goes on.
            proxy.reset()
            config_map(core, namespace, "after-reset")
            wait_until(lambda: seen.knows("after-reset"), "the change after the reset", 60)
    finally:
        proxy.close()
