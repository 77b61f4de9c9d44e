"""The broker's figures for `/metrics` and `$SYS`: traffic and what the broker holds right now.

Connections, retained messages and queues are state, not events: `BrokerCollector` reads them from
the broker's own tables when scraped, so they can never drift from the truth. The composition root
builds one collector per process that runs a broker, and hands it to the exposition; the counters
of refusals and sessions are in `broker.stats`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from amqtt.adapters import StreamWriterAdapter, WebSocketsWriter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from broker.plugins import CLAIMS, role_of
from broker.stats import Traffic

log = logging.getLogger("orderbus.metrics")

LISTENER = "orderbus.listener"  # session attribute: tcp, tls, ws or wss
DISCONNECT_REASON = "orderbus.disconnect_reason"  # session attribute: "client" once it sent DISCONNECT
PEER = "orderbus.peer"  # session attribute: the client's address, host:port
CONNECTED_AT = "orderbus.connected_at"  # session attribute: epoch seconds of the current connection

TRAFFIC_FIELDS = (
    ("orderbus_broker_packets_received", "MQTT packets received by the broker", "packets_received"),
    ("orderbus_broker_packets_sent", "MQTT packets sent by the broker", "packets_sent"),
    ("orderbus_broker_messages_received", "PUBLISH packets received from clients", "messages_received"),
    ("orderbus_broker_messages_sent", "PUBLISH packets sent to clients", "messages_sent"),
    ("orderbus_broker_bytes_received", "bytes of MQTT packets received (headers included)", "bytes_received"),
    ("orderbus_broker_bytes_sent", "bytes of MQTT packets sent (headers included)", "bytes_sent"),
)


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
    sessions = _snapshot(lambda: list(broker.sessions.items()))
    outbox = getattr(getattr(broker, "router", None), "outbox", {})  # what each session is owed
    connections: dict[tuple[str, str], int] = {}
    offline = stored = deepest_offline = deepest_inflight = deepest_backlog = 0
    for client_id, (session, handler) in sessions:
        outbound = outbox.get(client_id)
        queued = len(outbound.queue) if outbound is not None else 0  # waiting for the client (away or busy)
        stored += queued
        deepest_offline = max(deepest_offline, queued)
        if not session.transitions.is_connected():
            offline += not session.clean_session  # a clean session's leftovers are not a client away
            continue
        writer = getattr(handler, "writer", None)
        listener = session.attributes.get(LISTENER) or listener_of(writer)
        key = (role_of(session) if CLAIMS in session.attributes else "none", listener)
        connections[key] = connections.get(key, 0) + 1
        deepest_inflight = max(deepest_inflight, len(outbound.inflight) if outbound is not None else 0)
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


class BrokerCollector(Collector):
    """The broker of this process, read when scraped: its traffic, whether it runs, its connections
    and queues. `broker()` returns the running broker, or None while it is stopped."""

    def __init__(self, broker: Callable[[], Any]) -> None:
        self.broker = broker

    def collect(self) -> Iterator[Metric]:
        broker = self.broker()
        traffic = getattr(broker, "traffic", None) or Traffic()
        for name, help_text, field in TRAFFIC_FIELDS:
            yield CounterMetricFamily(name, help_text, value=getattr(traffic, field))
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
            "the deepest client queue: offline = messages waiting for a session (client away, or its "
            "in-flight window full), inflight = QoS 1/2 deliveries awaiting acknowledgement",
            labels=["queue"],
        )
        queue.add_metric(["offline"], figures.get("deepest_offline_queue", 0))
        queue.add_metric(["inflight"], figures.get("deepest_inflight", 0))
        yield queue
