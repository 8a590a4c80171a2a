"""The operator's API client's own bookkeeping (kubetune/kube.py)."""

from __future__ import annotations

import pytest

from kubetune.kube import request_kind


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
