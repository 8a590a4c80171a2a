"""The local control plane's pure parts: the fake GPU nodes and the KWOK stages that drive pods."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.cluster.localcluster import ADMISSION_PLUGINS, HERE, NodePool, binaries, read_versions

STAGES = list(yaml.safe_load_all((HERE / "kwok-stages.yaml").read_text()))


def stage(name: str) -> dict:
    return next(s for s in STAGES if s["metadata"]["name"] == name)


def expressions(name: str) -> dict[str, tuple[str, list[str]]]:
    return {
        e["key"]: (e["operator"], e.get("values", []))
        for e in stage(name)["spec"]["selector"]["matchExpressions"]
    }


def test_default_pool_is_two_nodes_of_eight_gpus() -> None:
    nodes = NodePool().manifests()
    assert [n["metadata"]["name"] for n in nodes] == ["gpu-node-0", "gpu-node-1"]
    for node in nodes:
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"
        assert node["status"]["capacity"] == node["status"]["allocatable"]
        assert node["metadata"]["annotations"] == {"kwok.x-k8s.io/node": "fake"}
        assert "taints" not in node.get("spec", {})


@pytest.mark.parametrize(
    ("env", "count", "gpus", "labels"),
    [
        ({}, 2, 8, {}),
        ({"KUBETUNE_GPU_NODES": "4", "KUBETUNE_GPUS_PER_NODE": "4"}, 4, 4, {}),
        ({"KUBETUNE_NODE_LABELS": "zone=a, pool=train"}, 2, 8, {"zone": "a", "pool": "train"}),
        (
            {"KUBETUNE_GPU_PRODUCT": "NVIDIA-A100-SXM4-80GB"},
            2,
            8,
            {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
        ),
    ],
)
def test_pool_is_configured_from_the_environment(monkeypatch, env, count, gpus, labels) -> None:
    for key in (
        "KUBETUNE_GPU_NODES",
        "KUBETUNE_GPUS_PER_NODE",
        "KUBETUNE_NODE_LABELS",
        "KUBETUNE_GPU_PRODUCT",
    ):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    nodes = NodePool.from_env().manifests()
    assert len(nodes) == count
    assert all(n["status"]["allocatable"]["nvidia.com/gpu"] == str(gpus) for n in nodes)
    assert all(labels.items() <= n["metadata"]["labels"].items() for n in nodes)


def test_stages_keep_the_node_lifecycle() -> None:
    # Custom stages replace KWOK's defaults: without these, nodes would never become Ready.
    kinds = {s["metadata"]["name"]: s["spec"]["resourceRef"]["kind"] for s in STAGES}
    assert kinds["node-initialize"] == "Node"
    assert kinds["node-heartbeat-with-lease"] == "Node"
    assert {"pod-ready", "pod-complete", "pod-exit-code", "pod-delete"} <= kinds.keys()


def test_failing_and_holding_pods_never_complete() -> None:
    complete = expressions("pod-complete")
    assert complete['.metadata.annotations["test.kubetune.io/exit-code"]'][0] == "DoesNotExist"
    assert complete['.metadata.annotations["test.kubetune.io/hold"]'][0] == "DoesNotExist"
    assert complete[".metadata.ownerReferences.[].kind"] == ("In", ["Job"])
    failing = expressions("pod-exit-code")
    assert failing['.metadata.annotations["test.kubetune.io/exit-code"]'][0] == "Exists"
    assert "exitCode: {{ $code }}" in stage("pod-exit-code")["spec"]["next"]["statusTemplate"]


def test_versions_are_pinned_in_one_place() -> None:
    versions = read_versions()
    assert versions["KUBERNETES_VERSION"].startswith("v1.36.")
    assert versions["ETCD_VERSION"].startswith("v3.6.")
    assert versions["KWOK_VERSION"].startswith("v0.8.")
    # Every binary lives under a cache directory named after its pinned version.
    paths = binaries()
    assert versions["KUBERNETES_VERSION"] in str(paths["kube-apiserver"])
    assert versions["ETCD_VERSION"] in str(paths["etcd"])
    assert all(not Path(p).is_relative_to(HERE.parent.parent) for p in paths.values())


# The options KWOK v0.8 gives defaults to, which it applies only when no configuration file is given.
KWOK_DEFAULTED_OPTIONS = {
    "podPlayStageParallelism", "nodePlayStageParallelism", "nodeLeaseParallelism",
    "podsOnNodeSyncParallelism", "enablePodsOnNodeSyncListPager", "enablePodsOnNodeSyncStreamWatch",
    "manageAllNodes", "enableDebuggingHandlers", "enableContentionProfiling", "enableProfilingHandler",
}  # fmt: skip


def test_kwok_plays_many_pods_at_once_and_keeps_its_other_defaults() -> None:
    config = yaml.safe_load((HERE / "kwok-config.yaml").read_text())
    assert config["kind"] == "KwokConfiguration"
    options = config["options"]
    # 4 workers for every fake node made KWOK, not the load, the limit on pod starts at 1000 jobs.
    assert options["podPlayStageParallelism"] >= 32
    # Left out, an option would be zero (KWOK refuses a node lease parallelism of 0), not its default.
    assert read_versions()["KWOK_VERSION"] == "v0.8.0", "check KWOK's defaulted options for this version"
    assert set(options) >= KWOK_DEFAULTED_OPTIONS
    assert options["nodeLeaseParallelism"] > 0 and options["podsOnNodeSyncParallelism"] > 0


def test_owner_references_are_enforced_as_on_openshift() -> None:
    # Children with blockOwnerDeletion then prove the chart grants update on the resources' finalizers.
    assert "OwnerReferencesPermissionEnforcement" in ADMISSION_PLUGINS


@pytest.mark.parametrize(
    ("real_node", "missing", "build_args"),
    [
        (False, [], None),  # everything cached: no build
        (False, ["coredns", "pause"], None),  # the demo's cluster needs no CoreDNS
        (False, ["kube-apiserver"], ["kubectl", "etcd", "kwok", "kubernetes"]),
        (True, ["coredns"], []),  # build.sh with no component builds them all
        (True, [], None),
    ],
)
def test_build_makes_the_real_nodes_binaries_only_when_a_node_is_wanted(
    monkeypatch, tmp_path: Path, real_node: bool, missing: list[str], build_args: list[str] | None
) -> None:
    from tests.cluster import localcluster

    paths = {name: tmp_path / name for name in binaries()}
    for name, path in paths.items():
        if name not in missing:
            path.touch()
    calls: list[list[str]] = []
    monkeypatch.setattr(localcluster, "binaries", lambda: paths)
    monkeypatch.setattr(localcluster.subprocess, "run", lambda argv, check: calls.append(argv[2:]))
    localcluster.build(real_node=real_node)
    assert calls == ([] if build_args is None else [build_args])


class Built(Exception):
    """Raised by a stand-in for build(): up() got as far as building."""


def test_a_cluster_asking_for_the_real_node_stops_the_cluster_that_holds_it(
    monkeypatch, tmp_path: Path
) -> None:
    """One real node per machine (its bridge, folders and containerd root are the machine's): `make test`'s
    node tier after a `make demo` that used the node stops the demo's cluster instead of failing on it."""
    from tests.cluster import localcluster, realnode

    ours, theirs = tmp_path / "node-cluster", tmp_path / "cluster"
    theirs.mkdir()
    info = localcluster.ClusterInfo(str(theirs), "", "https://127.0.0.1:1", {}, {}, {}, "", {})
    info.save()
    holder = tmp_path / "holder"
    holder.write_text(str(theirs))
    monkeypatch.setattr(localcluster, "STATE", ours)
    monkeypatch.setattr(realnode, "HOLDER", holder)

    def build(real_node: bool) -> None:
        raise Built

    monkeypatch.setattr(localcluster, "build", build)
    with pytest.raises(Built):
        localcluster.up(real_node=True)
    assert not theirs.exists() and not holder.exists()

    # Without a node wanted, another cluster's node is left alone.
    theirs.mkdir()
    info.save()
    holder.write_text(str(theirs))
    with pytest.raises(Built):
        localcluster.up(real_node=False)
    assert theirs.exists() and realnode.holder() == theirs


@pytest.mark.parametrize(
    ("has_node", "wanted", "reused"),
    [(False, False, True), (True, True, True), (True, False, False), (False, True, False)],
)
def test_a_running_cluster_is_reused_only_with_the_node_asked_for(
    monkeypatch, tmp_path: Path, has_node: bool, wanted: bool, reused: bool
) -> None:
    """The test sessions' and the node tier's fixtures stop only a cluster they started: `reusable` is the
    one check of whether `up` keeps the running cluster, for them and for `up` itself."""
    from tests.cluster import localcluster, realnode

    monkeypatch.setattr(localcluster, "STATE", tmp_path / "cluster")
    monkeypatch.setattr(realnode, "HOLDER", tmp_path / "holder")

    info = localcluster.ClusterInfo(
        "", "", "", {}, {}, {}, "", {}, real_node={"name": "n"} if has_node else None
    )
    monkeypatch.setattr(localcluster, "running", lambda: info)
    monkeypatch.setattr(localcluster, "with_node_images", lambda found: found)
    monkeypatch.setenv("KUBETUNE_REAL_NODE", "1" if wanted else "0")
    assert (localcluster.reusable() is info) is reused

    def build(real_node: bool) -> None:
        raise Built

    monkeypatch.setattr(localcluster, "build", build)
    monkeypatch.setattr(localcluster, "down", lambda *holder: None)
    if reused:
        assert localcluster.up() is info
    else:
        with pytest.raises(Built):
            localcluster.up()
