"""Fixtures shared by every tier.

Every test reads only files inside the repository (tests/repo_only.py): a read beside the checkout fails
the test, or the collection of its module.

`cluster` brings the local control plane up once per session (or reuses a running one) and stops it
at the end only if this session started it. `namespace` gives each test a fresh namespace and removes
it afterwards. Tests that take either fixture are marked `cluster` automatically.
"""

from __future__ import annotations

import os
import re
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from tests import repo_only
from tests.cluster import localcluster
from tests.kube import create_namespace, wait_until

REPO = Path(__file__).resolve().parents[1]
repo_only.install()


@pytest.fixture(autouse=True)
def _reads_only_the_repository() -> Iterator[None]:
    repo_only.take_reads()  # what collection read already failed that module
    yield
    reads = repo_only.take_reads()
    if reads:
        pytest.fail(f"read outside the repository: {', '.join(sorted(set(reads)))}", pytrace=False)


pytest_plugins = ["tests.operator_fixtures"]


@pytest.fixture(scope="session")
def cluster() -> Iterator[localcluster.ClusterInfo]:
    # A demo's real node runs the chart's operator: up() starts the cluster again without it.
    reused = localcluster.reusable()
    info = reused or localcluster.up()
    if reused is not None:
        # The tests count on free GPUs: what `make demo` left running (its ModelServe holds a GPU) goes.
        localcluster.kubectl(
            info, "delete", "namespace", "kubetune-demo", "--ignore-not-found", "--wait=true"
        )
    os.environ["KUBECONFIG"] = info.kubeconfig
    yield info
    if reused is None and os.environ.get("KUBETUNE_KEEP_CLUSTER") != "1":
        localcluster.down()


@pytest.fixture(scope="session")
def crds(cluster: localcluster.ClusterInfo, api: client.ApiClient) -> None:
    localcluster.kubectl(cluster, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    extensions = client.ApiextensionsV1Api(api)
    for crd in extensions.list_custom_resource_definition().items:
        if crd.spec.group != "kubetune.io":
            continue
        wait_until(
            lambda name=crd.metadata.name: any(
                c.type == "Established" and c.status == "True"
                for c in extensions.read_custom_resource_definition(name).status.conditions or []
            ),
            f"CRD {crd.metadata.name} to be Established",
            timeout=30,
        )
    # Discovery catches up a moment after Established.
    wait_until(
        lambda: "finetunejobs" in localcluster.kubectl(cluster, "api-resources", "--api-group=kubetune.io"),
        "the kubetune.io API in discovery",
        timeout=30,
    )


@pytest.fixture(scope="session")
def api(cluster: localcluster.ClusterInfo) -> client.ApiClient:
    return config.new_client_from_config(config_file=cluster.kubeconfig)


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture
def batch(api: client.ApiClient) -> client.BatchV1Api:
    return client.BatchV1Api(api)


@pytest.fixture
def namespace(request: pytest.FixtureRequest, api: client.ApiClient) -> Iterator[str]:
    core = client.CoreV1Api(api)
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    # The parametrizations of a test share their slug: 32 random bits keep two of a session apart (with
    # 20, one run met a namespace of the same name still being deleted).
    name = create_namespace(core, f"t-{slug}-{uuid.uuid4().hex[:8]}")
    yield name
    core.delete_namespace(name, propagation_policy="Background")


IMAGE_TIER = REPO / "tests" / "images"
NODE_TIER = REPO / "tests" / "node"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The image tier runs its operator as a container: with the other tiers' operator on the host in the same
    # session, both would reconcile its resources. It runs in a session of its own (make test-images).
    images = [item for item in items if IMAGE_TIER in item.path.parents]
    if images and len(images) < len(items):
        config.hook.pytest_deselected(items=images)
        items[:] = [item for item in items if item not in images]
        warnings.warn(
            "tests/images deselected: it runs in a pytest session of its own (make test-images)", stacklevel=1
        )
    # The real-node tier too: its operator is the chart's pod, on a cluster of its own (make test-node).
    node = [item for item in items if NODE_TIER in item.path.parents]
    if node and len(node) < len(items):
        config.hook.pytest_deselected(items=node)
        items[:] = [item for item in items if item not in node]
        warnings.warn(
            "tests/node deselected: it runs in a pytest session of its own (make test-node)", stacklevel=1
        )
    for item in items:
        if {"cluster", "namespace", "api"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.cluster)
