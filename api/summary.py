"""The figures people look at, from metric families: the ops page (`/api/v1/ops/summary`) and
`orderbus status` show the same summary, of this process's metrics or of a scrape parsed as text.

Pure over the families: it imports nothing of orderbus, so the API and the CLI can both use it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from prometheus_client.core import Metric


def _samples(metrics: Iterable[Metric]) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for metric in metrics:
        for sample in metric.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return out


def summarize(metrics: Iterable[Metric]) -> dict[str, Any]:
    """The figures people look at, from metric families (this process's, or parsed from a scrape)."""
    samples = _samples(metrics)

    def total(name: str, **match: str) -> float:
        return sum(v for labels, v in samples.get(name, []) if all(labels.get(k) == m for k, m in match.items()))

    def by(name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for labels, value in samples.get(name, []):
            out[labels.get(label, "")] = out.get(labels.get(label, ""), 0) + value
        return dict(sorted(out.items()))

    devices: dict[str, dict[str, int]] = {}
    for labels, value in samples.get("orderbus_devices", []):
        devices.setdefault(labels.get("kind", "?"), {})[labels.get("presence", "?")] = int(value)
    relay_count = total("orderbus_relay_publish_seconds_count")
    relay_sum = total("orderbus_relay_publish_seconds_sum")
    return {
        "time": time.time(),
        "broker_up": bool(total("orderbus_broker_up")) if "orderbus_broker_up" in samples else None,
        "database_up": bool(total("orderbus_database_up")) if "orderbus_database_up" in samples else None,
        "connections": {
            "total": int(total("orderbus_broker_connections")),
            "by_role": {k: int(v) for k, v in by("orderbus_broker_connections", "role").items()},
            "by_listener": {k: int(v) for k, v in by("orderbus_broker_connections", "listener").items()},
        },
        "connects": int(total("orderbus_broker_connects_total")),
        "disconnects": int(total("orderbus_broker_disconnects_total")),
        "messages": {
            "received": int(total("orderbus_broker_messages_received_total")),
            "sent": int(total("orderbus_broker_messages_sent_total")),
            "bytes_received": int(total("orderbus_broker_bytes_received_total")),
            "bytes_sent": int(total("orderbus_broker_bytes_sent_total")),
        },
        "retained": int(total("orderbus_broker_retained_messages")),
        "deepest_queue": int(max((v for _, v in samples.get("orderbus_broker_client_queue_max", [])), default=0)),
        "auth_failures": {k: int(v) for k, v in by("orderbus_broker_auth_failures_total", "reason").items()},
        "acl_denials": {k: int(v) for k, v in by("orderbus_broker_acl_denials_total", "action").items()},
        "dropped": {k: int(v) for k, v in by("orderbus_broker_dropped_messages_total", "cause").items()},
        "outbox": {
            "pending": int(total("orderbus_outbox_pending")),
            "oldest_age_seconds": round(total("orderbus_outbox_oldest_age_seconds"), 3),
        },
        "relay": {
            "published": int(total("orderbus_relay_events_published_total")),
            "mean_publish_seconds": round(relay_sum / relay_count, 4) if relay_count else None,
        },
        "ingest": {
            "processed": int(total("orderbus_ingest_processed_total")),
            "rejected": {k: int(v) for k, v in by("orderbus_ingest_rejected_total", "reason").items()},
        },
        "tickets": {k: int(v) for k, v in by("orderbus_tickets_total", "outcome").items()},
        "devices": devices,
        "http_requests": int(total("orderbus_http_requests_total")),
    }
