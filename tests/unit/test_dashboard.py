"""The Grafana dashboard in the chart: every PromQL expression parses, every metric in it is exported.

The names are checked against what the processes really expose: the launcher's metrics server, scraped over
HTTP; the operator's registry, in the exposition format a scrape returns (tests/integration scrapes the
running `kubetune run` too); vLLM's, from its v0.32.0 source, kept in tests/data with where it came from
(tests/serve scrapes the running vLLM too).
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest

promql_parser = pytest.importorskip("promql_parser")

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "charts" / "kubetune" / "dashboards" / "kubetune.json"
VLLM_METRICS = REPO / "tests" / "data" / "vllm-0.32.0-metrics.json"

# Grafana's own variables stand for a duration in a range selector; the test gives them one.
GRAFANA_DURATIONS = re.compile(r"\$__(rate_interval|interval|range)")
LABEL_VALUES = re.compile(r"^label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\)$")


def exposed(kinds: dict[str, str]) -> set[str]:
    """The series names prometheus_client exposes for metrics of these names and kinds."""
    suffixes = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_sum", "_count", "_created"]}
    names = set()
    for name, kind in kinds.items():
        base = name.removesuffix("_total") if kind == "counter" else name
        names.update(base + s for s in suffixes.get(kind, [""]))
    return names


def scraped(text: str) -> set[str]:
    """The series names of a /metrics page: its samples, and the families without samples yet."""
    kinds = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.M))
    samples = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and line[0] != "#"}
    return samples | exposed(kinds)


def expressions() -> list[str]:
    """Every PromQL expression of the dashboard: the panels' targets and the variables' queries."""
    dashboard = json.loads(DASHBOARD.read_text())
    found = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = LABEL_VALUES.match(variable["query"]["query"])
            assert match, f"variable {variable['name']}: label_values(EXPRESSION, label) expected"
            found.append(match.group(1))
    return found


def metric_names(expression: str) -> set[str]:
    tree = promql_parser.parse(GRAFANA_DURATIONS.sub("5m", expression))
    names: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            for matcher in node.matchers.matchers:
                if matcher.name == "__name__":  # {__name__=~"a|b"}: plain alternatives only
                    names.update(matcher.value.split("|"))

    promql_parser.walk(tree, pre_visit=visit)
    return names


def launcher_scrape() -> str:
    """The launcher's metrics server, as Prometheus scrapes it from node rank 0 of a FineTuneJob."""
    from kubetune.launcher.metrics import TrainingMetrics
    from tests.cluster.localcluster import free_port

    port = free_port()
    metrics = TrainingMetrics.serve(port)
    metrics.observe({"current_steps": 3, "total_steps": 9, "loss": 1.5, "eval_loss": 1.6, "lr": 1e-4,
                     "epoch": 0.3, "throughput": 10.0, "remaining_time": "0:01:00"})  # fmt: skip
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def operator_exposition() -> str:
    from prometheus_client import REGISTRY, generate_latest

    import kubetune.runtime.metrics  # noqa: F401 - registers the operator's metrics

    return generate_latest(REGISTRY).decode()


def test_every_expression_parses() -> None:
    found = expressions()
    assert len(found) >= 20
    for expression in found:
        promql_parser.parse(GRAFANA_DURATIONS.sub("5m", expression))  # raises ValueError on a bad one


def test_a_broken_expression_would_be_caught() -> None:
    with pytest.raises(ValueError):
        promql_parser.parse("sum(rate(kubetune_training_step[5m])")


def test_every_metric_is_one_the_operator_the_launcher_or_vllm_exports() -> None:
    vllm = exposed(json.loads(VLLM_METRICS.read_text())["metrics"])
    launcher = {n for n in scraped(launcher_scrape()) if n.startswith("kubetune_")}
    operator = {n for n in scraped(operator_exposition()) if n.startswith("kubetune_")}
    used = set().union(*(metric_names(e) for e in expressions()))
    assert used - (vllm | launcher | operator) == set()
    # Each source is really shown: the dashboard covers the operator, the training and the serving.
    assert used & operator and used & launcher and used & vllm
    assert {"kubetune_training_loss", "kubetune_training_eval_loss", "kubetune_training_eta_seconds"} <= used
    assert {"vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:lora_requests_info"} <= used
    assert "vllm:time_to_first_token_seconds_bucket" in used


def test_the_dashboard_is_one_grafana_imports() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "kubetune-overview" and dashboard["title"] == "kubetune"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in dashboard["panels"]:
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
