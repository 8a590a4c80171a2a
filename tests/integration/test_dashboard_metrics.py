"""The operator metrics the chart's Grafana dashboard reads are the ones the running operator exposes."""

from __future__ import annotations

from tests.unit.test_dashboard import expressions, metric_names, scraped


def test_the_dashboards_operator_metrics_are_in_a_scrape_of_kubetune_run(operator) -> None:
    from tests.unit.test_dashboard import launcher_scrape

    used = {n for e in expressions() for n in metric_names(e) if n.startswith("kubetune_")}
    from_launcher = scraped(launcher_scrape())
    from_operator = used - from_launcher
    assert from_operator, "the dashboard shows the operator's own metrics"
    assert from_operator <= scraped(operator.metrics())
