"""paho clients for the bus's own connections (relay, ingest): service tokens, refreshed on every reconnect;
with several MQTT endpoints (a NATS cluster's nodes), the next one is tried when a connection fails or drops.
With a TLS context (settings.mqtt_tls_context, core/tls.py) they connect over TLS only: a broker whose certificate
does not verify is never connected to; each failed attempt is logged with its reason and counted
(orderbus_bridge_connect_failures)."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bridge.metrics import CONNECT_FAILURES
from bridge.paho_poll import use_poll
from core.endpoints import Endpoint, Failover
from core.tls import failure_reason

log = logging.getLogger("orderbus.bridge")
KEEPALIVE = 30  # what Relay and Ingest connect with


def service_client(
    client_id: str,
    token_factory: Callable[[], str],
    *,
    clean_session: bool = True,
    endpoints: list[Endpoint] | None = None,
    tls: ssl.SSLContext | None = None,
) -> mqtt.Client:
    """A paho client that reconnects by itself with a fresh token each time, rotating through `endpoints`
    (core.endpoints.Failover) when there are several; the caller connects it to `endpoints[0]`."""
    use_poll()  # this process may hold the embedded broker's thousands of connections (bridge/paho_poll.py)
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean_session,
        protocol=mqtt.MQTTv311,
    )
    if tls is not None:
        client.tls_set_context(tls)
    client.username_pw_set(client_id, token_factory())
    client.reconnect_delay_set(min_delay=1, max_delay=4)
    client.max_inflight_messages_set(100)
    client.max_queued_messages_set(0)

    def refresh(c: mqtt.Client, *_args: object) -> None:
        c.username_pw_set(client_id, token_factory())

    role = client_id.removeprefix("orderbus-")  # the metric's `client` label: relay, ingest

    def on_connect(c: mqtt.Client, _u: object, _flags: object, reason: mqtt.ReasonCode, _props: object) -> None:
        if reason.is_failure:
            CONNECT_FAILURES.labels(client=role, reason="refused").inc()
            log.error("%s: the broker at %s:%s refused the connection: %s", client_id, c.host, c.port, reason)
            return
        log.info("%s connected: %s", client_id, reason)

    def on_disconnect(c: mqtt.Client, _u: object, _flags: object, reason: object, _props: object) -> None:
        log.warning("%s disconnected: %s", client_id, reason)
        refresh(c)

    def on_connect_fail(c: mqtt.Client, userdata: object) -> None:
        kind, why = failure_reason()  # paho calls this inside its `except OSError`
        CONNECT_FAILURES.labels(client=role, reason=kind).inc()
        level = logging.ERROR if kind == "tls" else logging.WARNING
        log.log(level, "%s: cannot connect to the broker at %s:%s: %s", client_id, c.host, c.port, why)
        refresh(c, userdata)

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_connect_fail = on_connect_fail
    if endpoints:
        Failover(endpoints, client_id).attach(client, keepalive=KEEPALIVE)
    return client
