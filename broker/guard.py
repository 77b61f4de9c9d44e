"""Deadlines amqtt does not enforce: CONNECT timeout, keepalive, packet size, token expiry, revocation.

Every connection's reader is wrapped in a `GuardedReader` that follows the MQTT framing of the
bytes amqtt reads (`Framing`: one `Rule` per packet type, the MQTT 3.1.1 checks a byte stream
allows), refuses oversized and malformed packets, and remembers when data last arrived.
One `ConnectionGuard` task sweeps all connections a few times a second and aborts those past a
deadline; aborting the socket makes amqtt see an abnormal disconnect, so the client's Last Will
fires (device `lost` presence relies on it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from amqtt.adapters import ReaderAdapter, StreamWriterAdapter, WebSocketsWriter, WriterAdapter
from amqtt.errors import AMQTTError
from amqtt.session import Session

from broker.limits import Limits
from broker.plugins import CLAIMS
from broker.stats import DISCONNECTS, DROPPED

log = logging.getLogger("orderbus.broker")
Refuses = Callable[[dict[str, Any]], bool]


class PacketTooLarge(AMQTTError):
    """A packet announced more bytes than the broker accepts; the connection is closed."""


class ProtocolViolation(AMQTTError):
    """A packet after CONNECT breaks MQTT 3.1.1 framing; the connection is closed (`reason` says how)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# the fields of a packet body that the framing check reads (the rest, a PUBLISH's payload, it only counts)
PACKET_ID, TOPIC, FILTER, REQUESTED_QOS = "packet_id", "topic", "filter", "requested_qos"


@dataclass(frozen=True)
class Rule:
    """What one packet type must look like when a client sends it after its CONNECT (MQTT 3.1.1 §2, §3)."""

    refuse: str | None = None  # never valid from a client here: the reason it is refused with
    flags: int | None = 0  # the only fixed-header flags allowed [MQTT-2.2.2-2]; None: PUBLISH's own
    length: int | None = None  # the remaining length, where the standard fixes it
    head: tuple[str, ...] = ()  # fields at the start of the body
    each: tuple[str, ...] = ()  # fields repeated to the body's end, at least once
    none: str = "bad_remaining_length"  # the reason when the body holds no `each`


_SERVER_TO_CLIENT = Rule(refuse="unexpected_packet")  # CONNACK, SUBACK, UNSUBACK, PINGRESP
_ACK = Rule(length=2)  # PUBACK, PUBREC, PUBCOMP: a packet id alone; an unknown one is the dispatcher's to ignore
RULES: tuple[Rule, ...] = (
    Rule(refuse="reserved_packet_type"),  # 0
    Rule(refuse="second_connect"),  # CONNECT [MQTT-3.1.0-2]
    _SERVER_TO_CLIENT,  # CONNACK
    Rule(flags=None, head=(TOPIC,)),  # PUBLISH at QoS 0; see _PUBLISH_WITH_ID
    _ACK,  # PUBACK
    _ACK,  # PUBREC
    Rule(flags=0b0010, length=2),  # PUBREL [MQTT-3.6.1-1]
    _ACK,  # PUBCOMP
    Rule(flags=0b0010, head=(PACKET_ID,), each=(FILTER, REQUESTED_QOS), none="no_topic_filter"),  # SUBSCRIBE
    _SERVER_TO_CLIENT,  # SUBACK
    Rule(flags=0b0010, head=(PACKET_ID,), each=(FILTER,), none="no_topic_filter"),  # UNSUBSCRIBE
    _SERVER_TO_CLIENT,  # UNSUBACK
    Rule(length=0),  # PINGREQ
    _SERVER_TO_CLIENT,  # PINGRESP
    Rule(length=0),  # DISCONNECT [MQTT-3.14.1-1]
    Rule(refuse="reserved_packet_type"),  # 15
)
_PUBLISH_WITH_ID = Rule(flags=None, head=(TOPIC, PACKET_ID))  # QoS 1 and 2


def _packet_id(data: bytes) -> str | None:
    """[MQTT-2.3.1-1]: SUBSCRIBE, UNSUBSCRIBE and PUBLISH at QoS 1 or 2 carry a non-zero packet id."""
    return "bad_packet_id" if data == b"\x00\x00" else None


def _text(data: bytes) -> str | None:
    """An MQTT string's text, or None when it is not well-formed UTF-8 or holds U+0000 [MQTT-1.5.3-1, -2]."""
    try:
        text = data.decode("utf-8")  # strict: also refuses surrogates (U+D800..U+DFFF) and overlong forms
    except UnicodeDecodeError:
        return None
    return None if "\x00" in text else text


def _topic(data: bytes) -> str | None:
    """A PUBLISH topic name: not empty, no wildcard [MQTT-3.3.2-2], and not `$`: clients do not publish there."""
    topic = _text(data)
    return "bad_topic" if not topic or topic.startswith("$") or "+" in topic or "#" in topic else None


def _filter(data: bytes) -> str | None:
    """A SUBSCRIBE or UNSUBSCRIBE topic filter as an MQTT string. Whether it is a *valid* filter (wildcard
    placement, not empty) the broker answers with SUBACK 0x80, where the ACL also speaks."""
    return "bad_topic_filter" if _text(data) is None else None


def _requested_qos(data: bytes) -> str | None:
    """[MQTT-3.8.3-4]: the upper 6 bits are reserved (0) and the QoS is 0, 1 or 2; anything else closes."""
    return "bad_qos" if data[0] > 2 else None


_CHECKS = {PACKET_ID: _packet_id, TOPIC: _topic, FILTER: _filter, REQUESTED_QOS: _requested_qos}
_SIZES = {PACKET_ID: 2, REQUESTED_QOS: 1}  # the rest are MQTT strings: a 2-byte length, then the bytes


# PUBACK, PUBREC, PUBREL (flags 0b0010), PUBCOMP with remaining length 2: all their rules in `RULES` ask
_ACK_HEADERS = frozenset({0x40, 0x50, 0x62, 0x70})


class Framing:
    """Follows the packet boundaries of a client's byte stream, in whatever pieces it arrives, and names
    the first packet that breaks MQTT 3.1.1.

    amqtt parses field by field straight off the socket; on a malformed packet after CONNECT it logs
    "Message discarded" at debug level and parses on from the middle of that packet, and it keeps
    a connection that sent a PUBLISH with QoS 3. `feed` returns the reason to close instead, as soon as
    the offending byte arrives, and at the latest with the packet's last byte, so before a reader loop
    can act on the packet:

    - `size`: a remaining length over the limit, any packet;
    - after the CONNECT, by the packet type's `Rule` in `RULES`: `reserved_packet_type` (0, 15),
      `second_connect`, `unexpected_packet` (CONNACK, SUBACK, UNSUBACK, PINGRESP: server-to-client
      only), `bad_flags` (fixed-header flags other than the table's [MQTT-2.2.2-2]),
      `bad_remaining_length` (more than 4 length bytes, a length the standard fixes otherwise, or a
      field that runs past the packet's end), `bad_qos` (a PUBLISH QoS 3, a SUBSCRIBE's requested
      QoS byte above 2), `bad_packet_id` (0), `bad_topic` (a PUBLISH topic that is empty, not UTF-8,
      has a wildcard or NUL, or starts with `$`), `bad_topic_filter` (a filter that is not UTF-8 or
      has a NUL), `no_topic_filter` (a SUBSCRIBE or UNSUBSCRIBE without one).

    The CONNECT's own errors are refused and counted by the broker as `bad_connect`. Whether a packet
    is expected *now* (a PUBACK for a packet id in flight) is the session's business, not the framing's.
    """

    def __init__(self, max_packet: int) -> None:
        self.max_packet = max_packet
        self.packets = 0  # fixed headers completed
        self.header = bytearray()  # the fixed header read so far; empty between packets
        self.body_left = 0
        self.rule: Rule | None = None  # the current packet's, while its fields are still being read
        self.fields: tuple[str, ...] = ()  # the rule's head, or its `each` group, being read
        self.field = 0  # the index in `fields` of the next field to complete
        self.groups = 0  # how many `each` groups the current packet held
        self.body = bytearray()  # body bytes not yet cut into fields

    def admits(self, n: int) -> bool:
        """Whether a read of `n` bytes stays inside the current packet. amqtt reads a fixed header one
        byte at a time, so a longer read there, or one past the body's end, means that a field of the
        packet (a string length, a packet id) claims more bytes than its remaining length holds."""
        return n <= (self.body_left or 1)

    def feed(self, data: bytes) -> str | None:
        whole = self.packets and not self.header and not self.body_left
        if whole and len(data) == 4 and data[0] in _ACK_HEADERS and data[1] == 2:  # a valid acknowledgement
            self.packets += 1  # the common packet at QoS 1, checked without the rule table
            return None
        at, end = 0, len(data)
        while at < end:
            if self.body_left:
                take = min(self.body_left, end - at)
                if self.rule is not None:
                    self.body += data[at : at + take]
                self.body_left -= take
                at += take
                if self.rule is not None and (reason := self._read_fields()):
                    return reason
                continue
            if not self.header and at + 1 < end and data[at + 1] < 0x80:  # most packets: a 2-byte fixed header
                self.header += data[at : at + 2]
                at += 2
            else:
                self.header.append(data[at])
                at += 1
                if len(self.header) == 1:
                    continue
                if self.header[-1] & 0x80:
                    if len(self.header) == 5 and self.packets:  # a 4th length byte that says "more follows"
                        return "bad_remaining_length"
                    continue
            if reason := self._packet_starts():
                return reason
        return None

    def _packet_starts(self) -> str | None:
        kind, flags = self.header[0] >> 4, self.header[0] & 0x0F
        length = sum((byte & 0x7F) << (7 * index) for index, byte in enumerate(self.header[1:]))
        self.header.clear()
        if length > self.max_packet:
            return "size"
        self.packets += 1
        self.body_left = length
        if self.packets == 1:  # amqtt parses the CONNECT and refuses any other first packet
            return "bad_flags" if kind == 1 and flags else None
        rule = RULES[kind]
        if kind == 3:
            qos = (flags >> 1) & 0x03
            if qos == 3:
                return "bad_qos"  # [MQTT-3.3.1-4]
            rule = _PUBLISH_WITH_ID if qos else rule
        if rule.refuse:
            return rule.refuse
        if rule.flags is not None and flags != rule.flags:
            return "bad_flags"
        if rule.length is not None and length != rule.length:
            return "bad_remaining_length"
        if rule.head or rule.each:
            self.rule, self.fields, self.field, self.groups = rule, rule.head, 0, 0
            return self._read_fields() if not length else None
        return None

    def _read_fields(self) -> str | None:
        """Cut the body read so far into the rule's fields and check each one that is complete."""
        rule, body, at = self.rule, self.body, 0
        assert rule is not None
        while True:
            if self.field == len(self.fields):
                if not rule.each:
                    break  # the head is all there is to check (a PUBLISH's payload is not looked at)
                if at == len(body) and not self.body_left:
                    if not self.groups:
                        return self._done(rule.none)
                    break
                self.fields, self.field, self.groups = rule.each, 0, self.groups + 1
            name = self.fields[self.field]
            size = _SIZES.get(name) or (2 + int.from_bytes(body[at : at + 2]) if len(body) >= at + 2 else 2)
            if len(body) < at + size:
                del body[:at]
                return self._done("bad_remaining_length") if not self.body_left else None
            value = bytes(body[at : at + size] if name in _SIZES else body[at + 2 : at + size])
            at += size
            self.field += 1
            if reason := _CHECKS[name](value):
                return self._done(reason)
        return self._done(None)

    def _done(self, reason: str | None) -> str | None:
        """Stop reading fields of the current packet (its remaining bytes are only counted)."""
        self.rule, self.fields, self.field = None, (), 0
        self.body.clear()
        return reason


class GuardedReader(ReaderAdapter):
    def __init__(self, inner: ReaderAdapter, max_read: int) -> None:
        self._inner = inner
        self._max_read = max_read
        self._framing = Framing(max_read)
        self._refused: AMQTTError | None = None
        self.last_activity = time.monotonic()
        self.connection: Connection | None = None

    async def read(self, n: int = -1) -> bytes:
        if self._refused is not None:
            raise self._refused
        if n > self._max_read:
            raise self._refuse("size", f"a read of {n} bytes exceeds {self._max_read}")
        if not self._framing.admits(n):
            raise self._refuse("bad_remaining_length", f"a read of {n} bytes runs past the packet's end")
        data = await self._inner.read(n)
        self.last_activity = time.monotonic()
        reason = self._framing.feed(data)
        if reason is not None:
            raise self._refuse(reason, f"packet refused: {reason}")
        return data

    def _refuse(self, reason: str, detail: str) -> AMQTTError:
        """Count and log why this connection ends; amqtt closes it when the read raises."""
        session = self.connection.session if self.connection else None
        client_id = session.client_id if session else None
        if reason == "size":
            DROPPED.labels(cause="size").inc()
            log.warning("disconnect client_id=%r reason=packet_too_large (%s)", client_id, detail)
            self._refused = PacketTooLarge(detail)
        elif session is None:  # the CONNECT itself: the broker refuses, counts and logs it as bad_connect
            self._refused = ProtocolViolation(reason)
        else:
            DISCONNECTS.labels(reason=reason).inc()
            log.warning("disconnect client_id=%r reason=%s", client_id, reason)
            self._refused = ProtocolViolation(reason)
        return self._refused

    def feed_eof(self) -> None:
        self._inner.feed_eof()


def _transport(writer: WriterAdapter) -> asyncio.WriteTransport | None:
    if isinstance(writer, StreamWriterAdapter):
        return writer._writer.transport
    if isinstance(writer, WebSocketsWriter):
        return writer._protocol.transport
    return None


def stalled(writer: WriterAdapter | None) -> bool:
    """Whether the client has stopped taking data: its socket's write buffer sits at the high-water mark."""
    transport = _transport(writer) if writer is not None else None
    if not isinstance(transport, asyncio.WriteTransport):
        return False
    return transport.get_write_buffer_size() >= transport.get_write_buffer_limits()[1]


def abort(writer: WriterAdapter) -> None:
    """Drop the connection now; amqtt's own close waits on a drain that a frozen client never allows."""
    transport = _transport(writer)
    if transport is not None:
        transport.abort()


@dataclass(eq=False)
class Connection:
    reader: GuardedReader
    writer: WriterAdapter
    opened: float = field(default_factory=time.monotonic)
    session: Session | None = None
    idle_limit: float | None = None  # seconds of silence allowed once connected (None: keepalive 0)

    def overdue(self, now: float, limits: Limits) -> str | None:
        if self.session is None:
            return "connect_timeout" if now - self.opened > limits.connect_timeout_seconds else None
        if self.idle_limit is not None and now - self.reader.last_activity > self.idle_limit:
            return "keepalive_timeout"
        return None


class ConnectionGuard:
    """Sweeps every live connection; `refuses(claims)` says whether a token has been revoked."""

    def __init__(self, limits: Limits, refuses: Refuses | None = None) -> None:
        self.limits = limits
        self.refuses = refuses or (lambda _claims: False)
        self.connections: set[Connection] = set()
        self._task: asyncio.Task[None] | None = None

    def track(self, reader: ReaderAdapter, writer: WriterAdapter) -> Connection:
        connection = Connection(GuardedReader(reader, self.limits.max_packet_bytes), writer)
        connection.reader.connection = connection
        self.connections.add(connection)
        return connection

    def connected(self, connection: Connection | None, session: Session, keepalive: int) -> None:
        if connection is None:
            return
        connection.session = session
        connection.idle_limit = keepalive * self.limits.keepalive_factor if keepalive > 0 else None

    def forget(self, connection: Connection) -> None:
        self.connections.discard(connection)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="orderbus-connection-guard")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.limits.guard_interval_seconds)
            try:
                self.sweep()
            except Exception:
                log.exception("connection guard sweep failed")

    def sweep(self) -> None:
        now, wall = time.monotonic(), time.time()
        for connection in list(self.connections):
            reason = connection.overdue(now, self.limits) or self._token_reason(connection, wall)
            if reason is not None:
                client_id = connection.session.client_id if connection.session else None
                log.warning("disconnect client_id=%r reason=%s", client_id, reason)
                DISCONNECTS.labels(reason=reason).inc()
                self.forget(connection)
                abort(connection.writer)

    def _token_reason(self, connection: Connection, wall: float) -> str | None:
        if connection.session is None:
            return None
        claims = connection.session.attributes.get(CLAIMS)
        if claims is None:
            return None
        if float(claims["exp"]) <= wall:  # PyJWT also accepts a numeric string, which `<=` a float would raise on
            return "token_expired"
        if self.refuses(claims):
            return "revoked"
        return None
