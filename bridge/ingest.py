"""Device ingest: device messages → service-layer commands (docs/devices.md).

One place parses and checks what every device message shares (topic, size, JSON object, a
registered device of that restaurant), then hands it to the handler for its topic and device
kind. Bad input is refused with an `error` reply on the device's commands topic, counted,
logged, and changes nothing.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol, cast

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client import Counter
from sqlalchemy import Engine

from core.domain import DomainError
from core.models import Device, utcnow
from core.services import devices
from core.unit_of_work import UnitOfWork

log = logging.getLogger("orderbus.ingest")

DEVICE_FILTERS = ("restaurant/+/devices/+/status", "restaurant/+/devices/+/events", "restaurant/+/devices/+/readings")
_DEVICE_TOPIC = re.compile(r"^restaurant/(\d+)/devices/([^/]+)/(status|events|readings)$")
MAX_PAYLOAD = 4096
LAST_SEEN_RESOLUTION = timedelta(seconds=5)  # fewer writes: last_seen is kept to within this

INGEST_PROCESSED = Counter("orderbus_ingest_processed", "device messages applied", ["kind"])
INGEST_REJECTED = Counter("orderbus_ingest_rejected", "device messages refused", ["reason"])


class Rejected(ValueError):
    """A device message the bus refuses; `reason` is the metric label and the reply's `reason`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


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
    match = _DEVICE_TOPIC.match(topic)
    if match is None:
        raise Rejected("bad_topic", f"not a device topic: {topic!r}")
    rid, device_id, leaf = int(match.group(1)), match.group(2), match.group(3)
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


def commands_topic(restaurant_id: int, device_id: str) -> str:
    return f"restaurant/{restaurant_id}/devices/{device_id}/commands"


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
            c.subscribe([(topic_filter, 1) for topic_filter in DEVICE_FILTERS])

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
            if message is None:
                return
            reply = self._apply(message)
            INGEST_PROCESSED.labels(kind=message.leaf).inc()
            if reply is not None:
                self._reply(message, reply)
        except Rejected as exc:
            self._refuse(topic, message, exc.reason, str(exc))
        except DomainError as exc:
            self._refuse(topic, message, "refused", str(exc))
        except Exception:
            INGEST_REJECTED.labels(reason="internal").inc()
            log.exception("ingest failed on %s", topic)

    def _apply(self, message: DeviceMessage) -> dict[str, Any] | None:
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
        match = _DEVICE_TOPIC.match(topic)
        if match is None:
            return
        reply: dict[str, Any] = {"type": "error", "reason": reason, "detail": detail, "topic": topic}
        if message is not None and message.request_id is not None:
            reply["request_id"] = message.request_id
        self._reply(DeviceMessage(int(match.group(1)), match.group(2), match.group(3)), reply)

    def _reply(self, message: DeviceMessage, reply: dict[str, Any]) -> None:
        body = json.dumps(reply, separators=(",", ":"))
        self._client.publish(commands_topic(message.restaurant_id, message.device_id), body, qos=1)
