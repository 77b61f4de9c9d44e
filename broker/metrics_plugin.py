"""amqtt plugin: traffic counters, connection events, and the `$SYS/broker/...` topics.

Packets after the CONNECT are counted by the broker's own connections (`broker.connection`,
`broker.transport`) as plain integer increments. amqtt still reads the CONNECT and fires its
`on_mqtt_packet_received/sent` events for it; the plugin answers those two events itself inside
the broker's `fire_event`, synchronously, instead of a task per plugin callback. Connects and
disconnects (rare) use the ordinary plugin events.

`$SYS/broker/...` is published by this plugin every `sys_interval` seconds (10 by default), at
QoS 0 and retained, so an MQTT tool that subscribes gets the current values at once. Who may
read them is the topic ACL's business (`config/acl.toml`: the `ops` role only); deliveries and
retained messages pass the same per-subscriber check as every other message. The list of
topics is in docs/ops.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from amqtt import __version__ as amqtt_version
from amqtt.events import MQTTEvents
from amqtt.mqtt.packet import DISCONNECT, PUBLISH
from amqtt.plugins.base import BasePlugin
from amqtt.session import Session

from broker import stats
from broker.metrics import DISCONNECT_REASON, LISTENER, broker_figures, listener_of
from broker.plugins import CLAIMS, role_of
from broker.stats import Traffic
from core.topics import ROLES, SUPER_ADMIN

log = logging.getLogger("orderbus.broker")
SYS_ROOT = "$SYS/broker/"


def _packet_bytes(length: int) -> int:
    """Size on the wire from the remaining length (amqtt's `bytes_length` would encode the packet again)."""
    return 2 + length + (length >= 128) + (length >= 16_384) + (length >= 2_097_152)


def _count_received(traffic: Traffic, packet: Any, session: Session | None) -> None:
    header = getattr(packet, "fixed_header", None)
    if header is None:
        return
    traffic.packets_received += 1
    traffic.bytes_received += _packet_bytes(header.remaining_length or 0)
    if header.packet_type == PUBLISH:
        traffic.messages_received += 1
    elif header.packet_type == DISCONNECT and session is not None:
        session.attributes[DISCONNECT_REASON] = "client"


def _count_sent(traffic: Traffic, packet: Any) -> None:
    header = getattr(packet, "fixed_header", None)
    if header is None:
        return
    traffic.packets_sent += 1
    traffic.bytes_sent += _packet_bytes(header.remaining_length or 0)
    if header.packet_type == PUBLISH:
        traffic.messages_sent += 1


def count_packets(manager: Any, traffic: Traffic) -> None:
    """Answer the per-packet events inside `fire_event`, without scheduling a task per packet."""
    fire = manager.fire_event
    received, sent = MQTTEvents.PACKET_RECEIVED, MQTTEvents.PACKET_SENT

    async def fire_event(event_name: Any, *, wait: bool = False, **kwargs: Any) -> None:
        if event_name == received:
            _count_received(traffic, kwargs.get("packet"), kwargs.get("session"))
        elif event_name == sent:
            _count_sent(traffic, kwargs.get("packet"))
        else:
            await fire(event_name, wait=wait, **kwargs)

    manager.fire_event = fire_event


def _claims(session: Session) -> dict[str, Any]:
    return session.attributes.get(CLAIMS) or {}


class MetricsPlugin(BasePlugin):
    @dataclass
    class Config:
        sys_interval: float = 10.0  # seconds between $SYS publications; 0 turns them off

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self.interval = float(self.config.sys_interval)
        self.started = time.time()
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None

    @property
    def broker(self) -> Any:
        return self.context._broker_instance  # amqtt's BrokerContext keeps the broker here

    def set_interval(self, seconds: float) -> None:
        """Change how often $SYS is published (takes effect at once)."""
        self.interval = float(seconds)
        if self._wake is not None:
            self._wake.set()

    # --- broker lifecycle --------------------------------------------------------------------

    async def on_broker_pre_start(self) -> None:
        try:
            count_packets(self.broker.plugins_manager, self.broker.traffic)
        except AttributeError:  # a future amqtt without this seam: no traffic counts, everything else works
            log.warning("cannot count MQTT packets with this amqtt version; traffic metrics stay at 0")

    async def on_broker_post_start(self) -> None:
        self.started = time.time()
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._publish_loop(), name="orderbus-sys-topics")

    async def on_broker_pre_shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # --- connections -------------------------------------------------------------------------

    async def on_broker_client_connected(self, client_id: str, client_session: Session) -> None:
        entry = self.broker.sessions.get(client_id)
        listener = listener_of(entry[1].writer) if entry and entry[1] is not None else "other"
        client_session.attributes[LISTENER] = listener
        client_session.attributes.pop(DISCONNECT_REASON, None)
        stats.BROKER_CONNECTS.labels(role=role_of(client_session), listener=listener).inc()

    async def on_broker_client_disconnected(self, client_id: str, client_session: Session) -> None:
        attributes = client_session.attributes
        reason = attributes.pop(DISCONNECT_REASON, None) or "lost"
        listener = attributes.get(LISTENER, "other")
        role = role_of(client_session)
        stats.BROKER_DISCONNECTS.labels(role=role, listener=listener, reason=reason).inc()
        claims = _claims(client_session)
        log.info(
            "disconnect client_id=%s role=%s rid=%s reason=%s",
            client_id,
            role,
            claims.get("rid"),
            reason,
            extra={
                "event": "disconnect",
                "client_id": client_id,
                "role": role,
                "restaurant": claims.get("rid"),
                "reason": reason,
                "listener": listener,
            },
        )

    # --- $SYS --------------------------------------------------------------------------------

    async def _publish_loop(self) -> None:
        assert self._wake is not None
        await self._retain(SYS_ROOT + "version", f"orderbus (amqtt {amqtt_version})")
        while True:
            if self.interval > 0:
                try:
                    for topic, value in self.sys_values().items():
                        await self._retain(SYS_ROOT + topic, value)
                except Exception:
                    log.exception("could not publish $SYS topics")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval if self.interval > 0 else None)

    async def _retain(self, topic: str, value: object) -> None:
        data = str(value).encode()
        await self.broker.retain_message(None, topic, data, 0)
        await self.broker.internal_message_broadcast(topic, data, 0)  # QoS 0: never queued for absent sessions

    def sys_values(self) -> dict[str, object]:
        figures, traffic = broker_figures(self.broker), self.broker.traffic

        def value(counter: Any) -> int:
            return int(
                sum(s.value for metric in counter.collect() for s in metric.samples if s.name.endswith("_total"))
            )

        def by_label(counter: Any, label: str) -> dict[str, int]:
            out: dict[str, int] = {}
            for metric in counter.collect():
                for s in metric.samples:
                    if s.name.endswith("_total"):
                        out[s.labels[label]] = out.get(s.labels[label], 0) + int(s.value)
            return out

        values: dict[str, object] = {
            "uptime": f"{int(time.time() - self.started)} seconds",
            "clients/connected": figures["connected"],
            "clients/disconnected": figures["offline_sessions"],
            "clients/total": figures["connected"] + figures["offline_sessions"],
            "messages/received": traffic.packets_received,
            "messages/sent": traffic.packets_sent,
            "publish/messages/received": traffic.messages_received,
            "publish/messages/sent": traffic.messages_sent,
            "publish/messages/dropped": value(stats.DROPPED),
            "bytes/received": traffic.bytes_received,
            "bytes/sent": traffic.bytes_sent,
            "retained messages/count": figures["retained"],
            "subscriptions/count": figures["subscriptions"],
            "store/messages/count": figures["stored_messages"],
            "orderbus/queue/deepest": max(figures["deepest_offline_queue"], figures["deepest_inflight"]),
            "orderbus/auth/failures": value(stats.AUTH_FAILURES),
            "orderbus/acl/denials": value(stats.ACL_DENIALS),
        }
        roles: dict[str, int] = {}
        for (role, _listener), count in figures["connections"].items():
            roles[role] = roles.get(role, 0) + count
        for role in sorted(set(roles) | (ROLES - {SUPER_ADMIN})):
            values[f"orderbus/clients/{role}"] = roles.get(role, 0)
        for cause, count in sorted(by_label(stats.DROPPED, "cause").items()):
            values[f"orderbus/dropped/{cause}"] = count
        return values
