"""The metrics docs cannot rot: every exported metric is in docs/metrics.md, and every metric
the Grafana dashboard queries is one of them."""

from __future__ import annotations

import json
import re
from pathlib import Path

from agentwatch.metrics import GatewayMetrics

ROOT = Path(__file__).resolve().parent.parent
DOCS = (ROOT / "docs" / "metrics.md").read_text()
DASHBOARD = ROOT / "deploy" / "grafana" / "agentwatch.json"
HISTOGRAM_SERIES = re.compile(r"_(bucket|count|sum)$")


def documented() -> set[str]:
    return set(re.findall(r"^\| `(agentwatch_[a-z_]+)` \|", DOCS, re.MULTILINE))


def exported() -> set[str]:
    names = set()
    for family in GatewayMetrics().registry.collect():
        names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    return names


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    expressions += [
        v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"
    ]
    return expressions


def test_every_exported_metric_is_documented() -> None:
    names = exported()
    assert "agentwatch_requests_total" in names and "agentwatch_gateway_overhead_seconds" in names
    # Built with the Redis limit store, not by GatewayMetrics; documented all the same.
    assert not names - documented(), sorted(names - documented())
    assert documented() - names == {"agentwatch_limits_store_errors_total"}


def test_every_dashboard_metric_is_documented() -> None:
    expressions = dashboard_expressions()
    assert len(expressions) >= 20
    used = {
        HISTOGRAM_SERIES.sub("", name)
        for expr in expressions
        for name in re.findall(r"agentwatch_[a-z_]+", expr)
    }
    assert {"agentwatch_requests_total", "agentwatch_time_to_first_token_seconds"} <= used
    assert not used - documented(), sorted(used - documented())


def test_dashboard_panels_have_unique_ids_and_a_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
