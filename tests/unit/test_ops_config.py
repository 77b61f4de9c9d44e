"""config/: the Prometheus scrape config, alert rules and Grafana dashboard parse, and every metric
they name is one that orderbus exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.pool import StaticPool
from sqlmodel import SQLModel, create_engine

import api.db_errors  # (the API's 503 counter)
import api.login_limit  # noqa: F401  (the API's login counter)
import bridge.metrics  # noqa: F401  (registers the bridge's counters, as a process running the bridge does)
import broker.nats.callout  # noqa: F401  (the auth-callout responder's counters, on the cluster path)
from api import metrics
from broker.metrics import BrokerCollector
from core.metrics import DatabaseCollector

CONFIG = Path(__file__).resolve().parents[2] / "config"
METRIC = re.compile(r"\b(orderbus_[a-z_]+)")
SUFFIXES = ("_total", "_bucket", "_sum", "_count")


@pytest.fixture(scope="module")
def exposed() -> set[str]:
    """Every family and sample name of a process that runs broker, API and bridge."""
    engine = create_engine("sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool)
    SQLModel.metadata.create_all(engine)
    text = metrics.exposition([DatabaseCollector(engine), BrokerCollector(lambda: None)]).decode()
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(family.name + suffix for suffix in SUFFIXES if family.type in ("counter", "histogram"))
    return names


def expressions(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [e for value in node.values() for e in expressions(value)]
    if isinstance(node, list):
        return [e for value in node for e in expressions(value)]
    return []


def test_the_prometheus_config_parses_and_loads_the_alert_rules():
    config = yaml.safe_load((CONFIG / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    job = next(job for job in config["scrape_configs"] if job["job_name"] == "orderbus")
    assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"]


def test_the_alert_rules_parse_and_cover_what_the_issue_asks(exposed):
    rules = yaml.safe_load((CONFIG / "alerts.yml").read_text())
    alerts = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    for needed in (
        "OrderbusOutboxLag",
        "OrderbusPrinterLost",
        "OrderbusTicketsUnacknowledged",
        "OrderbusAuthFailureBurst",
        "OrderbusNoActiveBridge",
        "OrderbusCalloutFailing",
        "OrderbusDatabaseUnavailable",
        "OrderbusLoginsLimited",
    ):
        assert needed in alerts
    # a single unconfirmed ticket is the kitchen's notification, not a page: a threshold and a delay
    unacknowledged = alerts["OrderbusTicketsUnacknowledged"]
    assert unacknowledged["for"] and unacknowledged["expr"].rstrip().endswith(">= 3"), unacknowledged
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"], name
        for metric in METRIC.findall(rule["expr"]):
            assert metric in exposed, (name, metric)


def test_the_grafana_dashboard_is_json_and_every_panel_queries_exposed_metrics(exposed):
    dashboard = json.loads((CONFIG / "grafana-dashboard.json").read_text())
    assert dashboard["uid"] == "orderbus-ops" and dashboard["panels"]
    queries = expressions(dashboard["panels"])
    assert len(queries) >= 20
    used = {metric for expr in queries for metric in METRIC.findall(expr)}
    assert used - exposed == set()
    # every import input it declares is used, and every variable it uses is declared (the picker `datasource`)
    text = (CONFIG / "grafana-dashboard.json").read_text()
    declared = {entry["name"] for entry in dashboard.get("__inputs", [])}
    variables = {entry["name"] for entry in dashboard["templating"]["list"]}
    referenced = set(re.findall(r"\$\{(\w+)", text))
    assert {name for name in declared if f"${{{name}}}" not in text} == set()
    assert referenced - variables - declared == set(), referenced
    # every figure the ops page shows has a panel
    for family in (
        "orderbus_broker_connections",
        "orderbus_broker_messages_received_total",
        "orderbus_broker_bytes_sent_total",
        "orderbus_broker_auth_failures_total",
        "orderbus_broker_acl_denials_total",
        "orderbus_broker_dropped_messages_total",
        "orderbus_broker_retained_messages",
        "orderbus_broker_client_queue_max",
        "orderbus_outbox_oldest_age_seconds",
        "orderbus_relay_publish_seconds_bucket",
        "orderbus_ingest_rejected_total",
        "orderbus_tickets_total",
        "orderbus_devices",
        "orderbus_http_request_duration_seconds_bucket",
    ):
        assert family in used, family
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
