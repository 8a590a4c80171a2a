"""The Helm chart: lint, render with default and other values, validate against the API server, install.

The RBAC proof is the integration scenarios run again with the operator acting as the chart's
ServiceAccount: `KUBETUNE_OPERATOR_AS=chart` (see `make test-chart`).
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from tests.chart.install import CHART, NAMESPACE, RELEASE, helm, install_chart
from tests.cluster import localcluster


def template(cluster: localcluster.ClusterInfo, *values: str) -> list[dict[str, Any]]:
    result = helm(cluster, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *values)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        out.setdefault(doc["kind"], []).append(doc)
    return out


def test_lint(cluster: localcluster.ClusterInfo) -> None:
    result = helm(cluster, "lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr


def test_default_install_is_cluster_wide_and_restricted(cluster: localcluster.ClusterInfo) -> None:
    kinds = by_kind(template(cluster))
    assert sorted(kinds) == [
        "ClusterRole", "ClusterRoleBinding", "Deployment", "Role", "RoleBinding", "Service", "ServiceAccount",
    ]  # fmt: skip
    assert kinds["Role"][0]["metadata"]["name"] == f"{RELEASE}-leader-election"
    deployment = kinds["Deployment"][0]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert container["image"] == f"ghcr.io/kubetune/operator:{chart['appVersion']}"
    # Pod Security "restricted".
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KUBETUNE_TRAINER_IMAGE"].startswith("ghcr.io/kubetune/trainer:")
    assert env["KUBETUNE_LEADER_ELECTION"] == RELEASE
    rules = kinds["ClusterRole"][0]["rules"]
    verbs = {(group, resource): set(rule["verbs"]) for rule in rules for group in rule["apiGroups"]
             for resource in rule["resources"]}  # fmt: skip
    assert ("", "secrets") not in verbs, "the operator never reads Secrets: a missing one fails the pod"
    # Children carry blockOwnerDeletion: OwnerReferencesPermissionEnforcement wants update on finalizers.
    assert verbs[("kubetune.io", "finetunejobs/finalizers")] == {"update"}
    assert verbs[("kubetune.io", "modelserves/finalizers")] == {"update"}
    assert "delete" not in verbs[("batch", "jobs")], "Jobs go with their FineTuneJob (owner references)"
    assert not any("*" in v for v in verbs.values()) and ("", "*") not in verbs
    # Everything the operator watches it may list and watch: a kind it may not is a watch that never fills.
    from kubetune.runtime.controller import WATCHED

    granted: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    for _, group, _, plural in WATCHED:
        assert {"list", "watch"} <= granted[(group, plural)], plural


ADOPTION_ONLY = [
    ("apps", "deployments"), ("", "configmaps"), ("", "services"), ("", "serviceaccounts"),
    ("rbac.authorization.k8s.io", "roles"), ("rbac.authorization.k8s.io", "rolebindings"),
]  # fmt: skip


def test_without_orphan_adoption_the_operator_may_delete_none_of_its_childrens_kinds(
    cluster: localcluster.ClusterInfo,
) -> None:
    def verbs_and_env(*values: str) -> tuple[dict, dict]:
        kinds = by_kind(template(cluster, *values))
        rules = kinds["ClusterRole"][0]["rules"]
        verbs = {(group, resource): set(rule["verbs"]) for rule in rules for group in rule["apiGroups"]
                 for resource in rule["resources"]}  # fmt: skip
        env = {
            e["name"]: e.get("value")
            for e in kinds["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        return verbs, env

    adopting, env = verbs_and_env()
    assert env["KUBETUNE_ADOPT_ORPHANS"] == "true"
    assert all("delete" in adopting[kind] for kind in ADOPTION_ONLY)
    strict, env = verbs_and_env("--set", "adoptOrphans=false")
    assert env["KUBETUNE_ADOPT_ORPHANS"] == "false"
    assert not [kind for kind in ADOPTION_ONLY if "delete" in strict[kind]]
    # What the operator does delete keeps the verb: a pruned autoscaler, a FineTuneJob past its TTL.
    assert "delete" in strict[("autoscaling", "horizontalpodautoscalers")]
    assert "delete" in strict[("kubetune.io", "finetunejobs")]
    assert {k: v - {"delete"} for k, v in strict.items()} == {k: v - {"delete"} for k, v in adopting.items()}


def test_namespaced_install_with_leader_election_and_monitoring(cluster: localcluster.ClusterInfo) -> None:
    kinds = by_kind(
        template(
            cluster,
            "--set", "replicas=2",
            "--set", "watchNamespaces={team-a,team-b}",
            "--set", "metrics.serviceMonitor.enabled=true",
            "--set", "trainer.image=registry.example/trainer:1",
        )
    )  # fmt: skip
    assert "ClusterRole" not in kinds
    assert sorted(r["metadata"]["namespace"] for r in kinds["Role"]) == [NAMESPACE, "team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in kinds["RoleBinding"]) == [NAMESPACE, "team-a", "team-b"]
    [lease_role] = [r for r in kinds["Role"] if r["metadata"]["namespace"] == NAMESPACE]
    assert {v for rule in lease_role["rules"] for v in rule["verbs"]} == {"create", "get", "update"}
    assert lease_role["rules"][1]["resourceNames"] == [RELEASE]
    assert kinds["ServiceMonitor"][0]["spec"]["endpoints"][0]["port"] == "metrics"
    container = kinds["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]
    assert "--namespace=team-a" in container["args"] and "--namespace=team-b" in container["args"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KUBETUNE_LEADER_ELECTION"] and env["KUBETUNE_TRAINER_IMAGE"] == "registry.example/trainer:1"
    assert kinds["Deployment"][0]["spec"]["replicas"] == 2


@pytest.mark.parametrize(
    ("values", "words"),
    [
        (["--set", "replicas=-1"], "replicas"),
        (["--set", "watchNamespaces={Team_A}"], "watchNamespaces"),
        (["--set", "image.pullPolicy=Sometimes"], "pullPolicy"),
        (["--set", "nosuchvalue=1"], "nosuchvalue"),
    ],
)
def test_values_schema_refuses_bad_values(
    cluster: localcluster.ClusterInfo, values: list[str], words: str
) -> None:
    result = helm(cluster, "template", RELEASE, str(CHART), *values)
    assert result.returncode != 0
    assert words in result.stderr


def test_the_rendered_chart_is_valid_for_the_api_server(
    cluster: localcluster.ClusterInfo, crds: None
) -> None:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    localcluster.kubectl(cluster, "apply", "-f", "-", input=yaml.safe_dump(namespace))
    for values in ([], ["--set", "replicas=2", "--set", "watchNamespaces={default}"]):
        docs = template(cluster, *values)
        manifest = yaml.safe_dump_all(docs)
        result = subprocess.run(
            [cluster.kubectl, "--kubeconfig", cluster.kubeconfig, "apply", "--dry-run=server", "-f", "-"],
            input=manifest, capture_output=True, text=True,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr


def test_install_into_the_local_control_plane(cluster: localcluster.ClusterInfo, crds: None) -> None:
    install_chart(cluster)
    status = helm(cluster, "status", RELEASE, "-n", NAMESPACE, "-o", "json")
    assert '"status":"deployed"' in status.stdout.replace(" ", "")
    can = localcluster.kubectl(
        cluster, "auth", "can-i", "patch", "finetunejobs.kubetune.io", "--subresource=status",
        f"--as=system:serviceaccount:{NAMESPACE}:{RELEASE}", "-n", "default",
    )  # fmt: skip
    assert can.strip() == "yes"
    cannot = subprocess.run(
        [cluster.kubectl, "--kubeconfig", cluster.kubeconfig, "auth", "can-i", "get", "secrets",
         f"--as=system:serviceaccount:{NAMESPACE}:{RELEASE}", "-n", "default"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert cannot.stdout.strip() == "no"
