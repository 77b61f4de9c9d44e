"""A raw MQTT 3.1.1 client for the conformance tests: it sends exactly the packets a test names
(never a PUBACK it was not told to send, as a client library would) and hands back every packet
the broker sent with its flags, so a test can judge DUP, QoS, RETAIN and packet ids."""

from __future__ import annotations

import itertools
import socket
import struct
import time
from typing import Any

from broker.server import OrderbusBroker
from core import topics
from scripts import raw_mqtt as raw

CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, PINGRESP = 2, 3, 4, 5, 6, 7, 9, 11, 13
WAIT = 5.0  # how long a test waits for a packet the broker owes (a loaded machine is slow, never this slow)
QUIET = 0.5  # how long "nothing more arrives" is watched
STAFF_ROLE = "staff"  # may subscribe to everything of its restaurant (config/acl.toml)
RID = 7

_ids = itertools.count(1)
_opened: list[socket.socket] = []


def close_all() -> None:
    """Close every connection the clients opened (a test's end; the broker's shutdown would too, later)."""
    while _opened:
        _opened.pop().close()


class Closed(AssertionError):
    """The broker closed the connection where a packet was expected."""


class RawClient:
    """One client id; `connect` opens a new TCP connection each time (a reconnect keeps the id)."""

    def __init__(self, broker: Any, client_id: str, role: str = STAFF_ROLE, **claims: Any) -> None:
        self.broker, self.client_id = broker, client_id
        self.token = broker.token(client_id, role, **claims)
        self.sock: socket.socket | None = None
        self._buffer = bytearray()

    # --- connection ------------------------------------------------------------------------

    def connect(self, *, clean: bool = True, keepalive: int = 30, will: tuple[str, bytes, bool] | None = None) -> bool:
        """CONNECT, expect CONNACK 0; returns the Session Present flag."""
        self.open()
        self.send(raw.connect(self.client_id, self.token, clean=clean, keepalive=keepalive, will=will))
        first, body = self.frame()
        assert first >> 4 == CONNACK, f"expected CONNACK, got packet type {first >> 4}"
        present, code = raw.parse_connack(body)
        assert code == 0, f"CONNACK {code}"
        return present

    def open(self) -> None:
        self.sock = raw.open_socket(self.broker.port)
        _opened.append(self.sock)
        self._buffer.clear()

    def send(self, data: bytes) -> None:
        assert self.sock is not None
        self.sock.sendall(data)

    def disconnect(self) -> None:
        """DISCONNECT and close our side, as a client must [MQTT-3.14.4-1]; then wait until the broker
        has closed its side too: it has ended the connection by then."""
        assert self.sock is not None
        self.send(raw.DISCONNECT)
        self.sock.shutdown(socket.SHUT_WR)
        self.wait_closed()

    def drop(self) -> None:
        """The TCP connection ends without DISCONNECT: an abnormal disconnect."""
        assert self.sock is not None
        self.sock.close()
        self.sock = None

    def wait_closed(self, within: float = WAIT) -> None:
        assert self.sock is not None
        assert raw.closed_by_peer(self.sock, within), f"the broker kept the connection open {within}s"
        self.sock.close()
        self.sock = None

    # --- packets ---------------------------------------------------------------------------

    def frame(self, timeout: float = WAIT) -> tuple[int, bytes]:
        """The next packet (first byte, body); fails when none comes within `timeout` or the broker closes."""
        got = self.try_frame(timeout)
        if got is None:
            raise AssertionError(f"no packet from the broker within {timeout}s")
        return got

    def try_frame(self, timeout: float) -> tuple[int, bytes] | None:
        """The next packet, or None when nothing complete arrived within `timeout` (Closed if the broker closes)."""
        assert self.sock is not None
        deadline = time.monotonic() + timeout
        while True:
            packet = self._cut()
            if packet is not None:
                return packet
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return None
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise Closed("the broker closed the connection")
            self._buffer += chunk

    def _cut(self) -> tuple[int, bytes] | None:
        buffer = self._buffer
        length, multiplier, index = 0, 1, 1
        while True:
            if index >= len(buffer):
                return None
            byte = buffer[index]
            length += (byte & 0x7F) * multiplier
            index += 1
            if not byte & 0x80:
                break
            multiplier *= 128
        if len(buffer) < index + length:
            return None
        first, body = buffer[0], bytes(buffer[index : index + length])
        del buffer[: index + length]
        return first, body

    def publish(self, timeout: float = WAIT) -> raw.Publish:
        """The next packet, which must be a PUBLISH."""
        return raw.parse_publish(*self.frame(timeout))

    def publishes(self, count: int, timeout: float = WAIT) -> list[raw.Publish]:
        """The next `count` packets, which must be PUBLISHes; a failure names what did arrive."""
        got: list[raw.Publish] = []
        try:
            while len(got) < count:
                got.append(self.publish(timeout))
        except AssertionError as failure:
            raise AssertionError(f"expected {count} PUBLISHes, got {len(got)} {got}: {failure}") from None
        return got

    def receive(self, count: int, timeout: float = WAIT) -> list[raw.Publish]:
        """`count` PUBLISHes (each waited for up to `timeout`), then whatever else arrives until quiet:
        a test compares the whole list, so a missing and an extra message both fail it. QoS 1 ones are
        PUBACKed as they come."""
        got: list[raw.Publish] = []
        try:
            while len(got) < count:
                got.append(self.publish(timeout))
                if got[-1].qos == 1:
                    self.puback(got[-1])
        except AssertionError as failure:
            raise AssertionError(f"expected {count} PUBLISHes, got {len(got)} {got}: {failure}") from None
        return got + self.quiet()

    def quiet(self, within: float = QUIET) -> list[raw.Publish]:
        """Every PUBLISH that arrives until nothing has come for `within` seconds. Each QoS 1 one is
        PUBACKed as it comes, as a client library would: a broker may hold further messages back
        until then, and they would be missed."""
        got = []
        while (frame := self.try_frame(within)) is not None:
            got.append(raw.parse_publish(*frame))
            if got[-1].qos == 1:
                self.puback(got[-1])
        return got

    def subscribe(self, topic_filter: str, qos: int = 1, packet_id: int | None = None) -> int:
        """SUBSCRIBE one filter; the granted QoS. The SUBACK must carry the SUBSCRIBE's id [MQTT-3.8.4-2]."""
        packet_id = packet_id or next(_ids) % 65535 + 1
        self.send(raw.subscribe(topic_filter, packet_id=packet_id, qos=qos))
        first, body = self.frame()
        assert first >> 4 == SUBACK, f"expected SUBACK, got packet type {first >> 4}"
        assert struct.unpack("!H", body[:2])[0] == packet_id, "SUBACK with another packet id [MQTT-3.8.4-2]"
        return body[2]

    def unsubscribe(self, topic_filter: str, packet_id: int) -> None:
        self.send(raw.unsubscribe(topic_filter, packet_id))
        first, body = self.frame()
        assert first >> 4 == UNSUBACK, f"expected UNSUBACK, got packet type {first >> 4}"
        assert body == struct.pack("!H", packet_id), "UNSUBACK with another packet id [MQTT-3.10.4-4]"

    def expect(self, kind: int, packet_id: int, timeout: float = WAIT) -> None:
        """The next packet is an acknowledgement of `kind` for `packet_id` [MQTT-2.3.1-6]."""
        first, body = self.frame(timeout)
        assert first >> 4 == kind, f"expected packet type {kind}, got {first >> 4} {body!r}"
        assert body == struct.pack("!H", packet_id), f"packet type {kind} for id {body!r}, expected {packet_id}"

    def puback(self, *messages: raw.Publish) -> None:
        for message in messages:
            assert message.packet_id is not None
            self.send(raw.puback(message.packet_id))


class Bus(RawClient):
    """The bus's service token: it may publish (and retain) anything under the restaurants' root.

    Beside it a watcher (staff, subscribed to the whole restaurant at QoS 0) sees every message the
    bus publishes: `send_publish` returns once the watcher has its copy, so the broker has routed the
    message to every session (queued it for the offline ones) and stored it if retained."""

    def __init__(self, broker: Any) -> None:
        super().__init__(broker, f"bus-{next(_ids)}", "service", rid=None)
        self.connect()
        self.watch = RawClient(broker, f"watch-{next(_ids)}")
        self.watch.connect()
        assert self.watch.subscribe(topics.everything(RID), qos=0) == 0

    def send_publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        """PUBLISH (its acknowledgements checked: PUBACK, or PUBREC/PUBREL/PUBCOMP at QoS 2); returns once
        routed. The packet id used, or 0 at QoS 0."""
        packet_id = next(_ids) % 65535 + 1 if qos else 0
        self.send(raw.publish(topic, payload, qos=qos, retain=retain, packet_id=packet_id))
        if qos == 1:
            self.expect(PUBACK, packet_id)
        elif qos == 2:
            self.expect(PUBREC, packet_id)
            self.send(raw.pubrel(packet_id))
            self.expect(PUBCOMP, packet_id)
        while True:
            copy = self.watch.publish()
            if copy.packet_id is not None:
                self.watch.puback(copy)
            if (copy.topic, copy.payload) == (topic, payload):
                return packet_id

    def ping(self) -> None:
        self.send(raw.PINGREQ)
        first, body = self.frame()
        assert (first, body) == (PINGRESP << 4, b""), f"expected PINGRESP, got {first:#x} {body!r}"


def offline(broker: Any, client_id: str, timeout: float = WAIT) -> None:
    """Wait until the broker counts the client's session as disconnected: a message published from
    now on is queued for it (or dropped), never written to the connection that is going away."""
    server: OrderbusBroker = broker.broker
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        held = server._sessions.get(client_id)
        if held is None or held[0].transitions.state != "connected":
            return
        time.sleep(0.01)
    raise AssertionError(f"{client_id} still connected after {timeout}s")
