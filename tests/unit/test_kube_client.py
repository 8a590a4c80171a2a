"""The operator's API client's own bookkeeping (kubetune/kube.py)."""

from __future__ import annotations

import datetime
import json

import pytest

from kubetune.kube import request_kind, status_ops


@pytest.mark.parametrize(
    ("method", "path", "counted"),
    [
        ("GET", "/api/v1/namespaces/ns/configmaps/qwen-adapter-report", ("get", "configmaps")),
        ("GET", "/api/v1/namespaces/ns/pods", ("list", "pods")),
        (
            "PATCH",
            "/apis/kubetune.io/v1alpha1/namespaces/ns/modelserves/qwen/status",
            ("patch", "modelserves/status"),
        ),
        ("POST", "/apis/batch/v1/namespaces/ns/jobs", ("create", "jobs")),
        ("GET", "/api/v1/persistentvolumes", ("list", "persistentvolumes")),
        ("DELETE", "/apis/batch/v1/namespaces/ns/jobs/a", ("delete", "jobs")),
    ],
)
def test_each_request_is_counted_by_verb_and_resource(
    method: str, path: str, counted: tuple[str, str]
) -> None:
    """kubetune_api_requests_total: what the reconciles ask of the API server."""
    assert request_kind(method, path) == counted


UID = {"op": "test", "path": "/metadata/uid", "value": "u1"}


@pytest.mark.parametrize(
    ("status", "previous", "ops"),
    [
        # No status yet: added whole (without its None fields), after a test that there is none.
        (
            {"phase": "Pending", "reason": None},
            {},
            [
                UID,
                {"op": "test", "path": "/status", "value": None},
                {"op": "add", "path": "/status", "value": {"phase": "Pending"}},
            ],
        ),
        # Each field set whole; a None removes a field the status has, and is left out when it has none.
        (
            {"phase": "Running", "reason": None, "message": None, "output": {"path": "/o"}},
            {"phase": "Pending", "reason": "Created", "progress": {"step": 1}},
            [
                UID,
                {"op": "add", "path": "/status/phase", "value": "Running"},
                {"op": "remove", "path": "/status/reason"},
                {"op": "add", "path": "/status/output", "value": {"path": "/o"}},
            ],
        ),
        # A JSON pointer escapes "~" and "/".
        ({"a/b~c": 1}, {"x": 1}, [UID, {"op": "add", "path": "/status/a~1b~0c", "value": 1}]),
    ],
)
def test_a_status_write_is_one_json_patch(status: dict, previous: dict, ops: list) -> None:
    assert status_ops(status, "u1", previous) == ops


class Sent:
    """The REST client's side of a request: what it would put on the wire (it JSON-encodes the body)."""

    status = 200

    def __init__(self) -> None:
        self.bodies: list[str] = []

    def __call__(self, method: str, url: str, body: object = None, **_: object) -> Sent:
        self.bodies.append(json.dumps(body))  # as kubernetes.client.rest does: a TypeError for a date
        return self

    def read(self) -> bytes:
        return b"{}"


def test_a_body_goes_out_as_it_is_and_one_with_a_date_as_the_client_would_write_it() -> None:
    from kubernetes import client

    from kubetune.kube import Kube

    api = client.ApiClient()
    api.call_api = Sent()  # type: ignore[method-assign]
    kube = Kube(api)
    manifest = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "ns"}}
    kube.create(manifest)
    kube.create({**manifest, "data": {"when": datetime.date(2026, 12, 5)}})
    assert [json.loads(b) for b in api.call_api.bodies] == [  # type: ignore[attr-defined]
        manifest,
        {**manifest, "data": {"when": "2026-12-05"}},
    ]
