"""kopf's settings as the operator sets them (handlers/watches.py)."""

from __future__ import annotations

import kopf

from kubetune.config import OperatorConfig
from kubetune.handlers.watches import configure, register


def test_every_watch_ends_and_a_silent_one_is_dropped() -> None:
    settings = kopf.OperatorSettings()
    configure(settings, OperatorConfig(watch_seconds=5, api_timeout_seconds=7, api_connect_seconds=2))
    # The API server refuses a timeoutSeconds that is not a whole number ("5.0"): every watch failed.
    assert settings.watching.server_timeout == 5 and isinstance(settings.watching.server_timeout, int)
    assert settings.watching.server_timeout < settings.watching.inactivity_timeout
    assert settings.watching.inactivity_timeout < settings.watching.client_timeout
    assert settings.networking.request_timeout == 7 and settings.watching.connect_timeout == 2


def test_the_childrens_watches_are_filtered_by_the_api_server_and_nothing_else_is() -> None:
    settings = kopf.OperatorSettings()
    configure(settings, OperatorConfig())
    selected = {
        resource: settings.watching.label_selectors[resource]
        for resource in (("v1", "pods"), ("batch", "jobs"), ("apps", "deployments"))
    }
    assert set(selected.values()) == {"app.kubernetes.io/managed-by=kubetune"}
    # Of the ConfigMaps, Services, ServiceAccounts, Roles, RoleBindings and autoscalers, a ModelServe's
    # children alone: never a FineTuneJob's, nor a user's.
    for resource in (
        ("v1", "configmaps"), ("v1", "services"), ("v1", "serviceaccounts"),
        ("rbac.authorization.k8s.io", "roles"), ("rbac.authorization.k8s.io", "rolebindings"),
        ("autoscaling", "horizontalpodautoscalers"),
    ):  # fmt: skip
        assert settings.watching.label_selectors[resource] == (
            "app.kubernetes.io/managed-by=kubetune,kubetune.io/modelserve"
        ), resource
    assert settings.peering.standalone


def test_kopf_keeps_no_last_handled_state_as_no_handler_reads_one() -> None:
    """kopf deep-copies every event's whole object into a diff base for change handlers; the operator has
    none (only event and index handlers), so the copy is not made."""
    registry = kopf.OperatorRegistry()
    default = kopf.get_default_registry()
    kopf.set_default_registry(registry)
    try:
        register(lambda: None, OperatorConfig())  # type: ignore[arg-type, return-value]
    finally:
        kopf.set_default_registry(default)
    assert registry._watching.get_all_handlers() and registry._indexing.get_all_handlers()
    assert not registry._changing.get_all_handlers() and not registry._spawning.get_all_handlers()

    settings = kopf.OperatorSettings()
    configure(settings, OperatorConfig())
    pod = kopf.Body(
        {"metadata": {"name": "p", "labels": {"a": "b"}}, "spec": {"containers": [{"name": "c"}]}}
    )
    assert settings.persistence.diffbase_storage.build(body=pod) == {}
