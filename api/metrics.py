"""Every metric of an orderbus process, in one module (Prometheus, via prometheus-client).

Counters and histograms that code increments are defined here (or, for the ones that existed
before, imported from where they are defined: `broker.stats`, `bridge.ingest`). Figures that
are state rather than events (connections, retained messages, queues, the outbox, device
presence) are read when scraped by `StateCollector`, from the broker's own tables and the
database, so they can never drift from the truth.

`exposition()` renders the text format for `/metrics`; `summarize()` turns parsed metric
families (from this process or from a scrape) into the small dict that `/api/v1/ops/summary`,
the ops page and `orderbus status` show.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from amqtt.adapters import StreamWriterAdapter, WebSocketsWriter
from prometheus_client import REGISTRY, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select
from sqlmodel import col
from starlette.routing import Mount

from bridge.ingest import INGEST_PROCESSED, INGEST_REJECTED
from broker.plugins import CLAIMS, role_of
from broker.stats import ACL_DENIALS, AUTH_FAILURES, DISCONNECTS, DROPPED, REFUSED_CONNECTIONS
from core.metrics import TICKETS
from core.models import Device, OutboxEvent

log = logging.getLogger("orderbus.metrics")

# The catalogue: defined here, or imported from where they were defined first (broker.stats, bridge.ingest).
__all__ = [
    "ACL_DENIALS",
    "AUTH_FAILURES",
    "BROKER_CONNECTS",
    "BROKER_DISCONNECTS",
    "DISCONNECTS",
    "DROPPED",
    "HTTP_REQUESTS",
    "HTTP_REQUEST_SECONDS",
    "INGEST_PROCESSED",
    "INGEST_REJECTED",
    "REFUSED_CONNECTIONS",
    "RELAY_EVENTS_PUBLISHED",
    "RELAY_PUBLISH_SECONDS",
    "TICKETS",
    "TRAFFIC",
]

DROP_CAUSES = ("queue_full", "rate_limit", "size")
DEVICE_KINDS = ("printer", "tablet", "scale")
PRESENCE = ("online", "offline", "lost", "unknown")

# --- broker: connections and traffic ----------------------------------------------------------
BROKER_CONNECTS = Counter(
    "orderbus_broker_connects", "MQTT sessions accepted (CONNACK 0), by role and listener", ["role", "listener"]
)
BROKER_DISCONNECTS = Counter(
    "orderbus_broker_disconnects",
    "MQTT sessions ended, by role, listener and reason (client: DISCONNECT sent; lost: the connection "
    "dropped without one, so the Last Will was published)",
    ["role", "listener", "reason"],
)


class Traffic:
    """MQTT traffic through the embedded broker: plain integers, bumped once per packet on the broker's
    event loop (cheaper than a Counter's lock), exposed as counters by `TrafficCollector`."""

    packets_received = packets_sent = 0
    messages_received = messages_sent = 0  # PUBLISH packets
    bytes_received = bytes_sent = 0


TRAFFIC = Traffic()


class TrafficCollector(Collector):
    FIELDS = (
        ("orderbus_broker_packets_received", "MQTT packets received by the broker", "packets_received"),
        ("orderbus_broker_packets_sent", "MQTT packets sent by the broker", "packets_sent"),
        ("orderbus_broker_messages_received", "PUBLISH packets received from clients", "messages_received"),
        ("orderbus_broker_messages_sent", "PUBLISH packets sent to clients", "messages_sent"),
        ("orderbus_broker_bytes_received", "bytes of MQTT packets received (headers included)", "bytes_received"),
        ("orderbus_broker_bytes_sent", "bytes of MQTT packets sent (headers included)", "bytes_sent"),
    )

    def collect(self) -> Iterator[Metric]:
        for name, help_text, field in self.FIELDS:
            yield CounterMetricFamily(name, help_text, value=getattr(TRAFFIC, field))


REGISTRY.register(TrafficCollector())

# --- bridge ------------------------------------------------------------------------------------
RELAY_PUBLISH_SECONDS = Histogram(
    "orderbus_relay_publish_seconds",
    "outbox relay: from publishing a message to the broker's PUBACK",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
RELAY_EVENTS_PUBLISHED = Counter("orderbus_relay_events_published", "outbox events stamped published")

# --- HTTP --------------------------------------------------------------------------------------
HTTP_REQUEST_SECONDS = Histogram(
    "orderbus_http_request_duration_seconds",
    "HTTP request latency by method and route template (e.g. /api/v1/restaurants/{rid}/orders)",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
HTTP_REQUESTS = Counter(
    "orderbus_http_requests", "HTTP requests by method, route template and status", ["method", "route", "status"]
)

disable_created_metrics()  # no `*_created` series: they double the output and no dashboard uses them

# Label values that should read 0 rather than be absent (a rate() over a missing series is "no data").
for _cause in DROP_CAUSES:
    DROPPED.labels(cause=_cause)


# --- broker state, read at scrape time ---------------------------------------------------------

LISTENER = "orderbus.listener"
DISCONNECT_REASON = "orderbus.disconnect_reason"


def listener_of(writer: Any) -> str:
    """tcp, tls, ws or wss: the kind of listener a connection came through."""
    if isinstance(writer, WebSocketsWriter):
        kind, transport = "ws", getattr(writer._protocol, "transport", None)
    elif isinstance(writer, StreamWriterAdapter):
        kind, transport = "tcp", writer._writer.transport
    else:
        return "other"
    secure = transport is not None and transport.get_extra_info("ssl_object") is not None
    return {"tcp": "tls", "ws": "wss"}[kind] if secure else kind


def _write_backlog(writer: Any) -> int:
    """Bytes written to a client's socket that it has not taken yet."""
    if isinstance(writer, WebSocketsWriter):
        transport = getattr(writer._protocol, "transport", None)
    elif isinstance(writer, StreamWriterAdapter):
        transport = writer._writer.transport
    else:
        return 0
    try:
        return int(transport.get_write_buffer_size()) if transport is not None else 0
    except (AttributeError, RuntimeError):
        return 0


def _snapshot(take: Callable[[], Any], attempts: int = 5) -> Any:
    """A copy of a broker table made from another thread; retried if the broker changed it meanwhile."""
    for _ in range(attempts):
        try:
            return take()
        except RuntimeError:  # "dictionary changed size during iteration"
            continue
    return take()


def broker_figures(broker: Any) -> dict[str, Any]:
    """What the broker holds right now: connections by (role, listener), sessions, retained, queues."""
    sessions = _snapshot(lambda: list(broker.sessions.values()))
    connections: dict[tuple[str, str], int] = {}
    offline = stored = deepest_offline = deepest_inflight = deepest_backlog = 0
    for session, handler in sessions:
        queued = session.retained_messages.qsize()  # kept for a persistent session while it is away
        stored += queued
        deepest_offline = max(deepest_offline, queued)
        if not session.transitions.is_connected():
            offline += not session.clean_session  # a clean session's leftovers are not a client away
            continue
        writer = getattr(handler, "writer", None)
        listener = session.attributes.get(LISTENER) or listener_of(writer)
        key = (role_of(session) if CLAIMS in session.attributes else "none", listener)
        connections[key] = connections.get(key, 0) + 1
        deepest_inflight = max(deepest_inflight, session.inflight_out_count)
        deepest_backlog = max(deepest_backlog, _write_backlog(writer))
    retained_topics = _snapshot(lambda: list(broker.retained_messages))
    subscriptions = _snapshot(lambda: sum(len(subs) for subs in list(broker.subscriptions.values())))
    return {
        "connections": connections,
        "connected": sum(connections.values()),
        "offline_sessions": offline,
        "stored_messages": stored,
        "retained": sum(1 for topic in retained_topics if not topic.startswith("$")),
        "subscriptions": subscriptions,
        "deepest_offline_queue": deepest_offline,
        "deepest_inflight": deepest_inflight,
        "deepest_backlog_bytes": deepest_backlog,
    }


def outbox_figures(engine: Engine) -> tuple[int, float]:
    """(events not yet published, age in seconds of the oldest of them; 0 when none)."""
    with engine.connect() as connection:
        pending, oldest = connection.execute(
            select(func.count(), func.min(OutboxEvent.created_at)).where(col(OutboxEvent.published_at).is_(None))
        ).one()
    if not pending or oldest is None:
        return int(pending or 0), 0.0
    if oldest.tzinfo is None:  # SQLite hands back naive datetimes; they were written in UTC
        oldest = oldest.replace(tzinfo=UTC)
    return int(pending), max(0.0, (datetime.now(UTC) - oldest).total_seconds())


def device_figures(engine: Engine) -> dict[tuple[str, str], int]:
    """Registered, unrevoked devices by (kind, presence), from the Device table."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(col(Device.kind), col(Device.presence), func.count())
            .where(col(Device.revoked).is_(False))
            .group_by(col(Device.kind), col(Device.presence))
        ).all()
    return {(kind, presence): int(count) for kind, presence, count in rows}


class StateCollector(Collector):
    """Gauges read when scraped: the broker's state (when this process runs one), the outbox and devices."""

    def __init__(self, engine: Engine | None, broker: Callable[[], Any] | None = None) -> None:
        self.engine = engine
        self.broker = broker  # None: this process does not run a broker

    def collect(self) -> Iterator[Metric]:
        if self.broker is not None:
            yield from self._broker()
        if self.engine is not None:
            yield from self._database()

    def _broker(self) -> Iterator[Metric]:
        broker = self.broker() if self.broker else None
        up = GaugeMetricFamily("orderbus_broker_up", "1 while this process's embedded broker is running")
        up.add_metric([], 1 if broker is not None else 0)
        yield up
        connections = GaugeMetricFamily(
            "orderbus_broker_connections", "connected MQTT clients by role and listener", labels=["role", "listener"]
        )
        figures: dict[str, Any] = {}
        if broker is not None:
            try:
                figures = broker_figures(broker)
            except Exception:
                log.exception("could not read the broker's state for /metrics")
        for (role, listener), count in sorted(figures.get("connections", {}).items()):
            connections.add_metric([role, listener], count)
        yield connections
        simple = [
            ("orderbus_broker_offline_sessions", "persistent sessions whose client is away", "offline_sessions"),
            ("orderbus_broker_retained_messages", "retained messages held by the broker ($SYS excluded)", "retained"),
            ("orderbus_broker_subscriptions", "subscriptions held by the broker", "subscriptions"),
            (
                "orderbus_broker_backlog_bytes_max",
                "bytes waiting in the socket of the slowest client",
                "deepest_backlog_bytes",
            ),
        ]
        for name, help_text, key in simple:
            yield GaugeMetricFamily(name, help_text, value=figures.get(key, 0))
        queue = GaugeMetricFamily(
            "orderbus_broker_client_queue_max",
            "the deepest client queue: offline = messages kept for an absent persistent session, "
            "inflight = QoS 1/2 deliveries awaiting acknowledgement",
            labels=["queue"],
        )
        queue.add_metric(["offline"], figures.get("deepest_offline_queue", 0))
        queue.add_metric(["inflight"], figures.get("deepest_inflight", 0))
        yield queue

    def _database(self) -> Iterator[Metric]:
        assert self.engine is not None
        database_up = GaugeMetricFamily("orderbus_database_up", "1 when the last scrape could query the database")
        try:
            pending, age = outbox_figures(self.engine)
            devices = device_figures(self.engine)
        except Exception as exc:
            log.warning("could not query the database for /metrics: %s", type(exc).__name__)
            database_up.add_metric([], 0)
            yield database_up
            return
        database_up.add_metric([], 1)
        yield database_up
        yield GaugeMetricFamily("orderbus_outbox_pending", "committed events not yet published", value=pending)
        yield GaugeMetricFamily(
            "orderbus_outbox_oldest_age_seconds", "age of the oldest unpublished event (0 when none)", value=age
        )
        family = GaugeMetricFamily(
            "orderbus_devices",
            "registered, unrevoked devices by kind and last known presence (online, offline, lost, unknown)",
            labels=["kind", "presence"],
        )
        kinds = sorted(set(DEVICE_KINDS) | {kind for kind, _ in devices})
        for kind in kinds:
            for presence in sorted(set(PRESENCE) | {p for k, p in devices if k == kind}):
                family.add_metric([kind, presence], devices.get((kind, presence), 0))
        yield family


class _View:
    """The process-wide registry plus one StateCollector, as one thing `generate_latest` can render."""

    def __init__(self, state: StateCollector) -> None:
        self.state = state

    def collect(self) -> Iterable[Metric]:
        yield from REGISTRY.collect()
        yield from self.state.collect()


def families(state: StateCollector) -> list[Metric]:
    return list(_View(state).collect())


def exposition(state: StateCollector) -> bytes:
    return generate_latest(_View(state))


def serve_metrics(port: int, host: str, state: StateCollector) -> tuple[Any, Any]:
    """`/metrics` on its own port, for a process without the API (`orderbus broker`, `orderbus bridge`);
    returns (server, thread): `server.shutdown()` stops it."""
    from prometheus_client import start_http_server

    return start_http_server(port, addr=host, registry=_View(state))


# --- the summary shown by the ops page and `orderbus status` ----------------------------------


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


# --- HTTP latency by route template ------------------------------------------------------------


def route_template(scope: dict) -> str:
    """The template of the route that served a request, prefixes of included routers restored.

    Starlette leaves the matched route in `scope["route"]`; FastAPI's included routers keep their
    own, unprefixed template there (`/restaurants/{rid}/orders`), so the prefix is taken back from
    the request's path, and used only if the template's fixed segments line up with the path."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(template, str) or not template.startswith("/"):
        return "unmatched"
    if isinstance(route, Mount) or ":path}" in template:
        return template
    wanted = template.strip("/").split("/") if template.strip("/") else []
    actual = str(scope.get("path", "")).strip("/").split("/")
    extra = len(actual) - len(wanted)
    if extra <= 0:
        return template
    tail = actual[extra:]
    if any(w != a for w, a in zip(wanted, tail, strict=True) if not (w.startswith("{") and w.endswith("}"))):
        return template
    prefix = actual[:extra]
    if any("{" in part or not part for part in prefix):
        return template
    return "/" + "/".join(prefix) + template


class HttpMetricsMiddleware:
    """Pure ASGI middleware: latency and status of every HTTP request, labelled with the route's
    template (`/api/v1/restaurants/{rid}/orders`), never the raw path (unbounded label values);
    a request that matched no route is `unmatched`."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            template = route_template(scope)
            method = scope.get("method", "?")
            if method not in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"):
                method = "other"
            HTTP_REQUEST_SECONDS.labels(method=method, route=template).observe(time.perf_counter() - started)
            HTTP_REQUESTS.labels(method=method, route=template, status=str(status)).inc()
