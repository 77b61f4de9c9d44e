"""What every device agent shares: its identity from the token, its MQTT connection, and presence.

Presence follows docs/devices.md: retained `online` with a fresh `boot_id` on every connect,
`offline` before a clean disconnect, and the same document with `lost` as the Last Will.
"""

from __future__ import annotations

import json
import logging
import random
import ssl
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import jwt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from core import topics
from core.endpoints import Failover, parse_endpoints
from core.tls import failure_reason
from devices.refusal import Refusal, StatusUnavailable, diagnose

log = logging.getLogger("orderbus.devices")

MessageHandler = Callable[[mqtt.MQTTMessage], None]
RECONNECT_MIN_DELAY = (1.0, 3.0)  # each link's first reconnect pause, uniform in this range; then doubled
RECONNECT_MAX_DELAY = 8.0  # ... up to this, plus the link's own offset, so the steps of two links never line up
REFUSED_DELAYS = (5.0, 300.0)  # after a refused CONNACK the bus gave no reason for: first pause, doubled up to this


def utc_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Identity:
    """Who the device is, read from its token. Not verified here: the broker verifies it at CONNECT."""

    device_id: str
    restaurant_id: int
    role: str
    station: str | None = None

    @classmethod
    def from_token(cls, token: str) -> Identity:
        try:
            claims = jwt.decode(token, options={"verify_signature": False, "verify_aud": False, "verify_exp": False})
        except jwt.PyJWTError as exc:
            raise ValueError(f"not a JWT: {exc}") from exc
        sub, rid, role = claims.get("sub"), claims.get("rid"), claims.get("role")
        if not isinstance(sub, str) or not isinstance(rid, int) or not isinstance(role, str):
            raise ValueError("the token has no device identity (sub, rid, role)")
        station = claims.get("station")
        return cls(sub, rid, role, station if isinstance(station, str) else None)

    def topic(self, leaf: str) -> str:
        """This device's own topic: `status`, `events`, `readings` or `commands`."""
        return topics.device(self.restaurant_id, self.device_id, leaf)

    @property
    def tickets_topic(self) -> str:
        return topics.tickets(self.restaurant_id, str(self.station))


class DeviceLink:
    """One device's MQTT connection: `with DeviceLink(...) as link:` connects, publishes presence, subscribes.

    `persistent=True` (printers, tablets) keeps the broker session across disconnects so QoS 1
    messages sent while the device was away are delivered when it returns. `manual_ack=True`
    lets the handler acknowledge a message only once it has acted on it (`link.ack(message)`).
    `on_ready` runs (on paho's thread) each time the broker has acknowledged the subscriptions of a
    new connection: from then on every event reaches the device live, so a catch-up started then misses nothing.
    `host` may name several brokers, `host[:port][,host[:port]…]` (a NATS cluster's nodes; `port` where one is
    left out): the link moves to the next when a connection fails or drops (core.endpoints.Failover), and a
    persistent session's queued tickets follow it there, the cluster keeping the session.
    `tls` (core.tls.client_context: `--cafile`, `--tls`): the link connects over TLS only, verifying the broker's
    certificate and host name; an attempt that does not verify is logged with why, and retried, never made in plain.
    A refused CONNACK is not retried by paho: the link asks why (devices/refusal.py: the token's own claims, then
    the bus's API at `api_url`), and when there is a reason it logs one line with it and what to do, sets
    `refusal` and `refused`, calls `on_refused` and stays down. Without one it tries again, never in a loop: at its
    usual reconnect pace when the API says the token is good (a passing refusal: a node's auth callout, the broker's
    denylist catching up with a new token), else after 5 s, 10 s, … up to 5 minutes. `expected_role`: the agent's
    role (a printer's token must be a printer's).
    """

    def __init__(
        self,
        token: str,
        host: str,
        port: int,
        *,
        subscriptions: list[str],
        on_message: MessageHandler,
        persistent: bool,
        manual_ack: bool = False,
        keepalive: int = 30,
        transport: Literal["tcp", "websockets"] = "tcp",
        on_ready: Callable[[], None] = lambda: None,
        tls: ssl.SSLContext | None = None,
        api_url: str | None = None,
        expected_role: str | None = None,
        on_refused: Callable[[Refusal], None] = lambda _refusal: None,
    ) -> None:
        self.identity = Identity.from_token(token)
        self._token = token
        self._api_url = api_url
        self._expected_role = expected_role
        self.on_refused = on_refused
        self.refusal: Refusal | None = None
        self.refused = threading.Event()  # set once the bus said why it refuses this device: the link stays down
        self.refused_attempts = 0  # CONNACKs refused so far (tests count them: a few, never a loop)
        self._stopping = threading.Event()
        self._refused_delay: float | None = None  # the last pause after a refused CONNACK without a reason
        self.boot_id = uuid.uuid4().hex
        self.connected = threading.Event()
        self._subscriptions = subscriptions
        self._on_message = on_message
        self.on_ready = on_ready
        self._subscribe_mid: int | None = None
        self.failover = Failover(parse_endpoints(host, port, "--host"), self.identity.device_id)
        self._keepalive = keepalive
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.identity.device_id,
            clean_session=not persistent,  # paho's default would start clean and drop queued tickets
            protocol=mqtt.MQTTv311,
            transport=transport,
            manual_ack=manual_ack,
        )
        if tls is not None:
            client.tls_set_context(tls)
        client.username_pw_set(self.identity.device_id, token)
        client.will_set(self.identity.topic("status"), self._presence(topics.LOST), qos=1, retain=True)
        # paho backs off without jitter (min, 2 min, 4 min ... max): a node's whole fleet, dropped at once, would
        # come back in lockstep and hit the broker and the auth callout together at each step. A random
        # first pause per link spreads every step of the back-off over a window instead.
        first = random.uniform(*RECONNECT_MIN_DELAY)
        self.reconnect_delays = (first, RECONNECT_MAX_DELAY + first - RECONNECT_MIN_DELAY[0])
        client.reconnect_delay_set(*self.reconnect_delays)  # type: ignore[arg-type]  # paho annotates int, takes float
        client.on_connect = self._connected
        client.on_disconnect = self._disconnected
        client.on_connect_fail = self._failed
        client.on_subscribe = self._subscribed
        client.on_message = lambda _c, _u, message: self._handle(message)
        self.failover.attach(client, keepalive)
        self._client = client

    def __enter__(self) -> DeviceLink:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._client.connect_async(*self.failover.current, keepalive=self._keepalive)
        self._client.loop_start()

    def stop(self, timeout: float = 5.0) -> None:
        """Say `offline` (and wait for its PUBACK), then disconnect cleanly: no Last Will."""
        self._stopping.set()
        if self._client.is_connected():
            info = self._client.publish(
                self.identity.topic("status"), self._presence(topics.OFFLINE), qos=1, retain=True
            )
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                log.warning("%s: offline status not acknowledged", self.identity.device_id)
        self._client.disconnect()
        self._client.loop_stop()

    def publish(self, leaf: str, body: dict[str, Any], qos: int = 1) -> mqtt.MQTTMessageInfo:
        """Publish a JSON document on one of this device's own topics (`events`, `readings`)."""
        return self._client.publish(self.identity.topic(leaf), json.dumps(body, separators=(",", ":")), qos=qos)

    def ack(self, message: mqtt.MQTTMessage) -> None:
        self._client.ack(message.mid, message.qos)

    def _presence(self, state: str) -> bytes:
        body = {"state": state, "boot_id": self.boot_id, "kind": self.identity.role, "ts": utc_iso()}
        return json.dumps(body, separators=(",", ":")).encode()

    def _connected(self, client: mqtt.Client, _u: object, _flags: object, reason: Any, _props: object) -> None:
        if reason.is_failure:
            self.refused_attempts += 1
            client.disconnect()  # paho would retry at once and for ever; _after_refusal decides instead
            threading.Thread(target=self._after_refusal, args=(str(reason),), name="refused", daemon=True).start()
            return
        self._refused_delay = None
        client.publish(self.identity.topic("status"), self._presence(topics.ONLINE), qos=1, retain=True)
        filters = [*self._subscriptions, self.identity.topic("commands")]
        _result, self._subscribe_mid = client.subscribe([(topic_filter, 1) for topic_filter in filters])
        self.connected.set()
        log.info("%s connected (boot %s)", self.identity.device_id, self.boot_id)

    def refusal_line(self) -> str:
        """The one line saying why the bus refuses this device and what to do ("" while it does not)."""
        return self.refusal.line(self._token) if self.refusal is not None else ""

    def _after_refusal(self, connack: str) -> None:
        """A refused CONNACK: say why and stay down; when nobody can say, try again later and less often."""
        self._client.loop_stop()  # paho's thread, ending after the disconnect() of _connected
        accepted = False  # the API says the token is good: a passing refusal (a node's auth callout, a fresh token)
        try:
            refusal = diagnose(self._token, self._expected_role, self._api_url)
            accepted = refusal is None and self._api_url is not None
            unknown = "the bus says the token is good" if accepted else "no --api-url to ask why"
        except StatusUnavailable as exc:
            refusal, unknown = None, f"the API cannot say why ({exc})"
        if refusal is not None:
            self.refusal = refusal
            log.error("%s", self.refusal_line())
            self.refused.set()
            self.on_refused(refusal)
            return
        # a passing refusal is tried again at the link's usual pace (its reconnect delays), anything else less and
        # less often; neither is a loop
        first, ceiling = self.reconnect_delays if accepted else REFUSED_DELAYS
        delay = first if self._refused_delay is None else min(self._refused_delay * 2, ceiling)
        self._refused_delay = delay
        log.error(
            "%s: the broker at %s:%s refused the connection (%s); %s; trying again in %.0f s",
            self.identity.device_id,
            *self.failover.current,
            connack,
            unknown,
            delay,
        )
        if self._stopping.wait(delay):
            return
        if len(self.failover.endpoints) > 1:  # a cluster: another node may take it
            self.failover.advance()
        self._client.connect_async(*self.failover.current, keepalive=self._keepalive)
        self._client.loop_start()

    def _subscribed(self, _c: mqtt.Client, _u: object, mid: int, codes: list[Any], _props: object) -> None:
        if mid != self._subscribe_mid:
            return
        refused = [code for code in codes if getattr(code, "is_failure", False)]
        if refused:
            log.error("%s: %d subscription(s) refused by the broker", self.identity.device_id, len(refused))
        self.on_ready()

    def _failed(self, client: mqtt.Client, _userdata: object) -> None:
        kind, why = failure_reason()  # paho calls this inside its `except OSError`
        level = logging.ERROR if kind == "tls" else logging.WARNING
        log.log(level, "%s: cannot connect to %s:%s: %s", self.identity.device_id, client.host, client.port, why)

    def _disconnected(self, _c: mqtt.Client, _u: object, _flags: object, reason: object, _props: object) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        if not was_connected and not getattr(reason, "is_failure", True):
            # our own disconnect() after a refused CONNACK is no news: _after_refusal says what matters
            log.debug("%s disconnected: %s", self.identity.device_id, reason)
            return
        log.warning("%s disconnected: %s", self.identity.device_id, reason)

    def _handle(self, message: mqtt.MQTTMessage) -> None:
        try:
            self._on_message(message)
        except Exception:  # a bad message must not stop the device's network loop
            log.exception("%s: handler failed on %s", self.identity.device_id, message.topic)
