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
    """The connection pool's side of a request: the bytes it would put on the wire, and an empty answer."""

    status, reason, data = 200, "OK", b"{}"

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def __call__(self, method: str, url: str, body: bytes | None = None, **_: object) -> Sent:
        self.bodies.append(body or b"")
        return self


def test_a_body_goes_out_as_json_a_date_as_rfc_3339_and_a_big_integer_as_written() -> None:
    from kubernetes import client

    from kubetune.kube import Kube

    api = client.ApiClient()
    api.rest_client.pool_manager.urlopen = Sent()  # type: ignore[method-assign]
    kube = Kube(api)
    manifest = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "ns"}}
    kube.create(manifest)
    kube.create({**manifest, "data": {"when": datetime.date(2026, 12, 5)}})
    kube.create({**manifest, "data": {"seed": 2**70}})  # beyond orjson: the standard library writes it
    assert [json.loads(b) for b in api.rest_client.pool_manager.urlopen.bodies] == [  # type: ignore[attr-defined]
        manifest,
        {**manifest, "data": {"when": "2026-12-05"}},
        {**manifest, "data": {"seed": 2**70}},
    ]


def test_a_kubetune_resource_is_read_with_every_number_as_written() -> None:
    from kubetune.kube import KINDS, decoder

    body = b'{"spec": {"config": {"seed": 1180591620717411303424}}}'
    assert decoder(KINDS["FineTuneJob"].path("ns", "a"))(body)["spec"]["config"]["seed"] == 2**70
    pod = b'{"metadata": {"name": "p", "generation": 9223372036854775807}}'
    assert decoder(KINDS["Pod"].path("ns", "p"))(pod)["metadata"]["generation"] == 2**63 - 1
