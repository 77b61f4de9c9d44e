"""Device ingest: device messages → service-layer commands. Bad input is refused, counted, and changes nothing."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable

import paho.mqtt.client as mqtt
from prometheus_client import Counter
from sqlalchemy import Engine

from api.domain import DomainError
from api.services import devices
from api.unit_of_work import UnitOfWork

log = logging.getLogger("orderbus.ingest")

STATUS_FILTER = "restaurant/+/devices/+/status"
_STATUS_TOPIC = re.compile(r"^restaurant/(\d+)/devices/([^/]+)/status$")
MAX_PAYLOAD = 4096

INGEST_PROCESSED = Counter("orderbus_ingest_processed", "device messages applied", ["kind"])
INGEST_REJECTED = Counter("orderbus_ingest_rejected", "device messages refused", ["reason"])


class Rejected(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def parse_status(topic: str, payload: bytes) -> tuple[int, str, str] | None:
    """(restaurant id, device id, state) of a status message; None for a cleared retained topic."""
    match = _STATUS_TOPIC.match(topic)
    if match is None:
        raise Rejected("bad_topic", f"not a status topic: {topic!r}")
    if not payload:
        return None
    if len(payload) > MAX_PAYLOAD:
        raise Rejected("too_large", f"{len(payload)} bytes")
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Rejected("not_json", str(exc)) from exc
    state = body.get("state") if isinstance(body, dict) else None
    if state not in devices.PRESENCE_STATES:
        raise Rejected("bad_state", f"state must be one of {sorted(devices.PRESENCE_STATES)}")
    return int(match.group(1)), match.group(2), state


class Ingest:
    """Subscribes with a persistent session, so device messages sent while it was away still arrive."""

    def __init__(
        self, engine: Engine, client: mqtt.Client, host: str, port: int, wake_relay: Callable[[], None] | None = None
    ) -> None:
        self._engine = engine
        self._client = client
        self._host, self._port = host, port
        self._wake_relay = wake_relay
        client.on_message = self._on_message
        previous_on_connect = client.on_connect

        def on_connect(c: mqtt.Client, userdata: object, flags: object, reason: object, props: object) -> None:
            if previous_on_connect is not None:
                previous_on_connect(c, userdata, flags, reason, props)
            c.subscribe(STATUS_FILTER, qos=1)

        client.on_connect = on_connect

    def start(self) -> None:
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        try:
            parsed = parse_status(message.topic, message.payload)
            if parsed is None:
                return
            rid, device_id, state = parsed
            with UnitOfWork(self._engine, self._wake_relay) as uow:
                devices.record_presence(uow, rid, device_id, state)
            INGEST_PROCESSED.labels(kind="status").inc()
        except Rejected as exc:
            INGEST_REJECTED.labels(reason=exc.reason).inc()
            log.warning("rejected %s: %s (%s)", message.topic, exc.reason, exc)
        except DomainError as exc:
            INGEST_REJECTED.labels(reason="unknown_device").inc()
            log.warning("rejected %s: %s", message.topic, exc)
        except Exception:
            INGEST_REJECTED.labels(reason="internal").inc()
            log.exception("ingest failed on %s", message.topic)
