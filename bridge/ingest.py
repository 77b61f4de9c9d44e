"""Device ingest: device messages → service-layer commands (docs/devices.md).

One place parses and checks what every device message shares (topic, size, JSON object, a
registered device of that restaurant), then hands it to the handler for its topic and device
kind. Bad input is refused with an `error` reply on the device's commands topic, counted,
logged, and changes nothing; `reason_of` names the reason the device reads, for a malformed
message (`Rejected`) and for one the core refuses (a `DomainError`) alike.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol, cast

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy import Engine

from bridge.metrics import INGEST_PROCESSED, INGEST_REJECTED
from core import topics
from core.domain import DomainError, Invalid
from core.models import Device, utcnow
from core.services import devices
from core.unit_of_work import UnitOfWork

log = logging.getLogger("orderbus.ingest")

MAX_PAYLOAD = 4096
LAST_SEEN_RESOLUTION = timedelta(seconds=5)  # fewer writes: last_seen is kept to within this


class Rejected(ValueError):
    """A device message the bus refuses; `reason` is the metric label and the reply's `reason`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


WIRE_REASONS = {"unknown_target": "bad_field"}  # core reasons the device contract spells otherwise


def reason_of(exc: Rejected | DomainError) -> str:
    """The reason a device reads in its error reply: the rule's own name, or `refused` for a domain error
    that names none (an unknown order, an illegal transition)."""
    if isinstance(exc, Rejected):
        return exc.reason
    if isinstance(exc, Invalid):
        return WIRE_REASONS.get(exc.reason, exc.reason)
    return "refused"


@dataclass(frozen=True)
class DeviceMessage:
    restaurant_id: int
    device_id: str
    leaf: str  # status | events | readings
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def request_id(self) -> str | None:
        value = self.body.get("request_id")
        return value if isinstance(value, str) and len(value) <= 64 else None


class Handler(Protocol):
    """Applies one kind of device message through the service layer; may return a reply for the device."""

    def __call__(self, uow: UnitOfWork, device: Device, message: DeviceMessage) -> dict[str, Any] | None: ...


def parse(topic: str, payload: bytes | bytearray) -> DeviceMessage | None:
    """The message, or None for a cleared retained status topic; Rejected for anything malformed."""
    try:
        rid, device_id, leaf = topics.parse_device(topic, topics.FROM_DEVICES)
    except topics.TopicError as exc:
        raise Rejected("bad_topic", str(exc)) from exc
    if not payload and leaf == "status":
        return None
    if len(payload) > MAX_PAYLOAD:
        raise Rejected("too_large", f"{len(payload)} bytes; the limit is {MAX_PAYLOAD}")
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Rejected("not_json", f"payload is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise Rejected("bad_type", "payload must be a JSON object")
    return DeviceMessage(rid, device_id, leaf, body)


class Ingest:
    """Subscribes with a persistent session, so device messages sent while it was away still arrive.

    `handlers` maps (topic leaf, device kind) to a Handler; kind "*" matches every kind.
    """

    def __init__(
        self,
        engine: Engine,
        client: mqtt.Client,
        host: str,
        port: int,
        handlers: Mapping[tuple[str, str], Handler],
        wake_relay: Callable[[], None] | None = None,
    ) -> None:
        self._engine = engine
        self._client = client
        self._host, self._port = host, port
        self._handlers = handlers
        self._wake_relay = wake_relay
        client.on_message = lambda _c, _u, message: self.process(message.topic, message.payload)
        # paho types the slot as any callback version; the bus's clients are made with VERSION2 (bridge.mqtt)
        previous_on_connect = cast("mqtt.CallbackOnConnect_v2 | None", client.on_connect)

        def on_connect(
            c: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason: ReasonCode, props: Properties | None
        ) -> None:
            if previous_on_connect is not None:
                previous_on_connect(c, userdata, flags, reason, props)
            c.subscribe([(topic_filter, 1) for topic_filter in topics.DEVICE_FILTERS])

        client.on_connect = on_connect

    def start(self) -> None:
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def process(self, topic: str, payload: bytes | bytearray) -> None:
        """Apply one device message; never raises (a bad message must not stop the ingest)."""
        message: DeviceMessage | None = None
        try:
            message = parse(topic, payload)
            if message is None or (message.leaf == "status" and message.body.get("restored") is True):
                return  # none, or a presence the bus restored from the database itself (bridge.retained)
            reply = self._apply(message)
            INGEST_PROCESSED.labels(kind=message.leaf).inc()
            if reply is not None:
                self._reply(message, reply)
        except (Rejected, DomainError) as exc:
            self._refuse(topic, message, reason_of(exc), str(exc))
        except Exception:
            INGEST_REJECTED.labels(reason="internal").inc()
            log.exception("ingest failed on %s", topic)

    def _apply(self, message: DeviceMessage) -> dict[str, Any] | None:
        """One message, one transaction: the handler's changes and `last_seen`, committed here once."""
        with UnitOfWork(self._engine, self._wake_relay) as uow:
            try:
                device = devices.get_device(uow, message.restaurant_id, message.device_id)
            except DomainError as exc:
                raise Rejected("unknown_device", str(exc)) from exc
            handler = self._handlers.get((message.leaf, device.kind)) or self._handlers.get((message.leaf, "*"))
            if handler is None:
                raise Rejected("unexpected", f"a {device.kind} does not publish {message.leaf}")
            reply = handler(uow, device, message)
            now = utcnow()
            last_seen = device.last_seen
            if last_seen is None or now - last_seen.replace(tzinfo=now.tzinfo) >= LAST_SEEN_RESOLUTION:
                device.last_seen = now
                uow.session.add(device)
            uow.commit()
        return reply

    def _refuse(self, topic: str, message: DeviceMessage | None, reason: str, detail: str) -> None:
        INGEST_REJECTED.labels(reason=reason).inc()
        log.warning("rejected %s: %s (%s)", topic, reason, detail)
        try:
            rid, device_id, leaf = topics.parse_device(topic, topics.FROM_DEVICES)
        except topics.TopicError:
            return
        reply: dict[str, Any] = {"type": "error", "reason": reason, "detail": detail, "topic": topic}
        if message is not None and message.request_id is not None:
            reply["request_id"] = message.request_id
        self._reply(DeviceMessage(rid, device_id, leaf), reply)

    def _reply(self, message: DeviceMessage, reply: dict[str, Any]) -> None:
        body = json.dumps(reply, separators=(",", ":"))
        self._client.publish(topics.device(message.restaurant_id, message.device_id, "commands"), body, qos=1)
