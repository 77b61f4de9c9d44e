"""paho clients for the bus's own connections (relay, ingest): service tokens, refreshed on every reconnect."""

from __future__ import annotations

import logging
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

log = logging.getLogger("orderbus.bridge")


def service_client(client_id: str, token_factory: Callable[[], str], *, clean_session: bool = True) -> mqtt.Client:
    """A paho client that reconnects by itself with a fresh token each time."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean_session,
        protocol=mqtt.MQTTv311,
    )
    client.username_pw_set(client_id, token_factory())
    client.reconnect_delay_set(min_delay=1, max_delay=4)
    client.max_inflight_messages_set(100)
    client.max_queued_messages_set(0)

    def refresh(c: mqtt.Client, *_args: object) -> None:
        c.username_pw_set(client_id, token_factory())

    def on_connect(c: mqtt.Client, _u: object, _flags: object, reason: object, _props: object) -> None:
        log.info("%s connected: %s", client_id, reason)

    def on_disconnect(c: mqtt.Client, _u: object, _flags: object, reason: object, _props: object) -> None:
        log.warning("%s disconnected: %s", client_id, reason)
        refresh(c)

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_connect_fail = refresh
    return client
