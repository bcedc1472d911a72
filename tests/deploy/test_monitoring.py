"""The operators' monitoring (deploy/grafana/servicedesk.json, deploy/prometheus/alerts.yaml)
parses, and names only metrics some service exports.

What is exported is read from the process's Prometheus registry after every service of the list
was built (each registers its metrics as its modules load), the way a scrape of each /metrics
would list them: a counter ``x`` exports ``x_total``, a histogram ``x_bucket``, ``x_sum`` and
``x_count``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from services import build_service, desk_settings, service_names

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
METRIC = re.compile(r"\b(desk_[a-z0-9_]+)\b")
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}


def exported() -> set[str]:
    settings = desk_settings(
        database_url="postgresql://desk@postgres/servicedesk", kafka_bootstrap_servers="kafka:9092"
    )
    for name in service_names():
        build_service(name, settings)
    names = set()
    for family in REGISTRY.collect():
        for suffix in SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


def expressions_of_dashboard(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]


def test_the_dashboard_and_the_alerts_name_only_exported_metrics() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/servicedesk.json").read_text())
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yaml").read_text())
    assert dashboard["panels"] and dashboard["title"] == "servicedesk"
    alerts = [r for group in rules["groups"] for r in group["rules"]]
    assert {"DeadLettersGrowing", "ConsumerLagging", "RelayDown", "SlaBreachedTicketsOpen",
            "CsatBelowTarget"} <= {a["alert"] for a in alerts}  # fmt: skip
    assert all({"alert", "expr", "labels", "annotations"} <= set(a) for a in alerts)
    expressions = [*expressions_of_dashboard(dashboard), *(a["expr"] for a in alerts)]
    named = {m for e in expressions for m in METRIC.findall(e)}
    known = exported()
    assert named, "the expressions name metrics"
    assert sorted(named - known) == [], "named but exported by no service"
    # The check is not vacuous: the kernel's, sla's, notify's and the console's are all used.
    for metric in (
        "desk_messages_dead_lettered_total",
        "desk_consumer_lag_messages",
        "desk_relay_leader",
        "desk_sla_csat_ratio",
        "desk_console_request_seconds_bucket",
    ):
        assert metric in named and metric in known


def test_a_metric_no_service_exports_is_caught() -> None:
    assert "desk_tickets_teleported_total" not in exported()
    assert METRIC.findall("rate(desk_tickets_teleported_total[5m])") == [
        "desk_tickets_teleported_total"
    ]
