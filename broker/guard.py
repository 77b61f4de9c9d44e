"""Deadlines amqtt does not enforce: CONNECT timeout, keepalive, packet size, token expiry, revocation.

Every connection's reader is wrapped in a `GuardedReader` that follows the MQTT framing of the
bytes amqtt reads, refuses oversized and malformed packets, and remembers when data last arrived.
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


class Framing:
    """Follows the packet boundaries of a client's byte stream, in whatever pieces amqtt reads it.

    amqtt parses field by field straight off the socket; on a malformed packet after CONNECT it logs
    "Message discarded" at debug level and parses on from the middle of that packet, and it keeps
    a connection that sent a PUBLISH with QoS 3. `feed` names the first violation instead:
    `size` (a remaining length over the limit, any packet), and after the CONNECT
    `bad_remaining_length` (more than 4 length bytes, or fields that run past the packet's end),
    `reserved_packet_type`, `second_connect`, `bad_qos`, `bad_topic` (a PUBLISH topic that is
    empty, not UTF-8, has a wildcard or NUL, or starts with `$`). The CONNECT's own errors are
    refused and counted by the broker as `bad_connect`.
    """

    def __init__(self, max_packet: int) -> None:
        self.max_packet = max_packet
        self.packets = 0  # fixed headers completed
        self.header = bytearray()  # the fixed header read so far; empty between packets
        self.body_left = 0
        self.topic: bytearray | None = None  # the start of a PUBLISH body until its topic is complete

    def admits(self, n: int) -> bool:
        """Whether a read of `n` bytes stays inside the current packet. amqtt reads a fixed header one
        byte at a time, so a longer read there, or one past the body's end, means that a field of the
        packet (a string length, a packet id) claims more bytes than its remaining length holds."""
        return n <= (self.body_left or 1)

    def feed(self, data: bytes) -> str | None:
        at = 0
        while at < len(data):
            if self.body_left:
                take = min(self.body_left, len(data) - at)
                if self.topic is not None:
                    self.topic += data[at : at + take]
                self.body_left -= take
                at += take
                if self.topic is not None and (reason := self._check_topic()):
                    return reason
                continue
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
        if self.packets == 1:
            return None
        if kind in (0, 15):
            return "reserved_packet_type"
        if kind == 1:
            return "second_connect"
        if kind == 3:
            if (flags >> 1) & 0x03 == 3:
                return "bad_qos"
            self.topic = bytearray()
            return self._check_topic()
        return None

    def _check_topic(self) -> str | None:
        """Once a PUBLISH's topic has arrived (or its body ended first), whether it is a valid topic name."""
        assert self.topic is not None
        size = int.from_bytes(self.topic[:2]) if len(self.topic) >= 2 else None
        if size is None or len(self.topic) < 2 + size:
            return "bad_topic" if self.body_left == 0 else None
        name, self.topic = bytes(self.topic[2 : 2 + size]), None
        try:
            topic = name.decode("utf-8")
        except UnicodeDecodeError:
            return "bad_topic"
        if not topic or topic.startswith("$") or any(c in topic for c in "+#\x00"):
            return "bad_topic"
        return None


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
