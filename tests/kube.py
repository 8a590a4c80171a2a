"""Helpers for tests that talk to the local control plane."""

from __future__ import annotations

import time

import pytest


def wait_until(check, what: str, timeout: float = 60.0, interval: float = 0.25):
    """Polls `check` until it returns something truthy; fails the test with `what` otherwise."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last seen: {last!r})")


def wait_for_running_pods(
    core, namespace: str, label_selector: str, what: str, timeout: float = 60.0
) -> list:
    """The pods matching `label_selector` that are Running, once there is at least one."""
    return wait_until(
        lambda: [
            p
            for p in core.list_namespaced_pod(namespace, label_selector=label_selector).items
            if p.status.phase == "Running"
        ],
        what,
        timeout=timeout,
    )


def create_namespace(core, name: str) -> str:
    """A test namespace (labelled so that a clean-up finds it), ready for pods."""
    from kubernetes import client

    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels={"test.kubetune.io/namespace": "true"})
        )
    )
    # Pods are refused until the controller-manager has made the namespace's default ServiceAccount.
    wait_until(
        lambda: core.list_namespaced_service_account(name, field_selector="metadata.name=default").items,
        f"the default ServiceAccount in {name}",
        timeout=30,
    )
    return name


def events_about(core, namespace: str, name: str, kind: str | None = None) -> list:
    """The Events recorded about the object `name` (of `kind`, when given)."""
    events = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
    return [e for e in events if kind is None or e.involved_object.kind == kind]


def wait_for_event(
    core, namespace: str, name: str, reason: str, kind: str | None = None, timeout: float = 30.0
):
    """Waits for an Event with `reason` about `name`, and returns all such Events.

    The operator records an Event after the status write it describes, so a test that has just seen the
    status must wait for the Event rather than list once.
    """
    return wait_until(
        lambda: [e for e in events_about(core, namespace, name, kind) if e.reason == reason],
        f"the {reason} Event about {name}",
        timeout=timeout,
    )


def widget_crd(group: str, properties: dict) -> dict:
    """A namespaced kind of a test's own, `Widget` in `group`, with a status subresource: no operator
    writes it, so what a test sends and what it leaves are the test's alone."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": properties}},
                }
            ],
        },
    }


def wait_established(extensions, name: str) -> None:
    """Until the CustomResourceDefinition `name` is Established."""

    def established() -> bool:
        status = extensions.read_custom_resource_definition(name).status
        return any(c.type == "Established" and c.status == "True" for c in status.conditions or [])

    wait_until(established, f"CRD {name} to be Established", timeout=30)
