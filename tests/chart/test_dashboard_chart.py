"""The chart's Grafana dashboard and PodMonitors: off by default, discoverable, valid for the API server."""

from __future__ import annotations

import json

from tests.chart.install import CHART
from tests.chart.test_chart import by_kind, template
from tests.cluster import localcluster


def test_off_by_default(cluster: localcluster.ClusterInfo) -> None:
    kinds = by_kind(template(cluster))
    assert "PodMonitor" not in kinds and "ConfigMap" not in kinds


def test_the_dashboard_configmap_is_labelled_for_the_grafana_sidecar(
    cluster: localcluster.ClusterInfo,
) -> None:
    kinds = by_kind(
        template(
            cluster,
            "--set", "grafanaDashboard.enabled=true",
            "--set", "grafanaDashboard.namespace=monitoring",
            "--set", "grafanaDashboard.annotations.grafana_folder=kubetune",
        )
    )  # fmt: skip
    [config_map] = kinds["ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "kubetune"}
    shipped = json.loads(config_map["data"]["kubetune.json"])
    assert shipped == json.loads((CHART / "dashboards" / "kubetune.json").read_text())


def test_the_podmonitors_scrape_rank_0_trainers_and_vllm_pods(cluster: localcluster.ClusterInfo) -> None:
    kinds = by_kind(
        template(
            cluster,
            "--set", "metrics.trainerPodMonitor.enabled=true",
            "--set", "metrics.modelServePodMonitor.enabled=true",
            "--set", "watchNamespaces={team-a}",
        )
    )  # fmt: skip
    trainers, servers = sorted(kinds["PodMonitor"], key=lambda m: m["metadata"]["name"], reverse=True)
    assert trainers["spec"]["selector"]["matchLabels"] == {"batch.kubernetes.io/job-completion-index": "0"}
    assert trainers["spec"]["podTargetLabels"] == ["kubetune.io/finetunejob", "kubetune.io/attempt"]
    assert trainers["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert trainers["spec"]["namespaceSelector"] == {"matchNames": ["team-a"]}
    assert servers["spec"]["podTargetLabels"] == ["kubetune.io/modelserve"]
    assert servers["spec"]["podMetricsEndpoints"][0]["port"] == "http"
