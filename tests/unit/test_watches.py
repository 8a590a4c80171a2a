"""kopf's settings as the operator sets them (handlers/watches.py)."""

from __future__ import annotations

import kopf

from kubetune.config import OperatorConfig
from kubetune.handlers.watches import configure, register
from kubetune.runtime.controller import Controller


def registered() -> kopf.OperatorRegistry:
    """What `register` registers with kopf, in a registry of the test's own."""
    registry = kopf.OperatorRegistry()
    default = kopf.get_default_registry()
    kopf.set_default_registry(registry)
    try:
        register(lambda: None, OperatorConfig())  # type: ignore[arg-type, return-value]
    finally:
        kopf.set_default_registry(default)
    return registry


def test_every_watch_ends_and_a_silent_one_is_dropped() -> None:
    settings = kopf.OperatorSettings()
    configure(settings, OperatorConfig(watch_seconds=5, api_timeout_seconds=7, api_connect_seconds=2))
    # The API server refuses a timeoutSeconds that is not a whole number ("5.0"): every watch failed.
    assert settings.watching.server_timeout == 5 and isinstance(settings.watching.server_timeout, int)
    assert settings.watching.server_timeout < settings.watching.inactivity_timeout
    assert settings.watching.inactivity_timeout < settings.watching.client_timeout
    assert settings.networking.request_timeout == 7 and settings.watching.connect_timeout == 2


def test_kopf_watches_the_custom_resources_and_the_runtime_the_children_filtered_by_the_api_server() -> None:
    registry = registered()
    watched_by_kopf = {h.selector.any_name for h in registry._watching.get_all_handlers()}
    assert watched_by_kopf == {"finetunejobs", "modelserves"}

    controller = Controller(kube=None, config=OperatorConfig(), reconcilers={})  # type: ignore[arg-type]
    selectors = {w.kind: w.selector for w in controller.list_watches()}
    assert {selectors[k] for k in ("Pod", "Job", "Deployment")} == {"app.kubernetes.io/managed-by=kubetune"}
    # Of the ConfigMaps, Services, ServiceAccounts, Roles, RoleBindings and autoscalers, a ModelServe's
    # children alone: never a FineTuneJob's, nor a user's.
    for kind in (
        "ConfigMap", "Service", "ServiceAccount", "Role", "RoleBinding", "HorizontalPodAutoscaler"
    ):  # fmt: skip
        assert selectors[kind] == "app.kubernetes.io/managed-by=kubetune,kubetune.io/modelserve", kind
    # A user's claims are read for whether they exist: all of them.
    assert selectors["PersistentVolumeClaim"] is None
    assert {w.namespace for w in controller.list_watches()} == {None}

    settings = kopf.OperatorSettings()
    configure(settings, OperatorConfig())
    assert settings.peering.standalone


def test_each_watched_namespace_has_its_own_list_watch_of_each_child_kind() -> None:
    config = OperatorConfig(namespaces=("team-a", "team-b"), watch_seconds=7, api_connect_seconds=2)
    watches = Controller(kube=None, config=config, reconcilers={}).list_watches()  # type: ignore[arg-type]
    assert len(watches) == 2 * len({w.kind for w in watches}) == 2 * 10
    assert {w.namespace for w in watches} == {"team-a", "team-b"}
    assert {(w.watch_seconds, w.connect_seconds) for w in watches} == {(7, 2)}


def test_kopf_keeps_no_last_handled_state_as_no_handler_reads_one() -> None:
    """kopf deep-copies every event's whole object into a diff base for change handlers; the operator has
    none (only event and index handlers), so the copy is not made."""
    registry = registered()
    assert registry._watching.get_all_handlers() and registry._indexing.get_all_handlers()
    assert not registry._changing.get_all_handlers() and not registry._spawning.get_all_handlers()

    settings = kopf.OperatorSettings()
    configure(settings, OperatorConfig())
    pod = kopf.Body(
        {"metadata": {"name": "p", "labels": {"a": "b"}}, "spec": {"containers": [{"name": "c"}]}}
    )
    assert settings.persistence.diffbase_storage.build(body=pod) == {}
