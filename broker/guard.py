"""Deadlines amqtt does not enforce: CONNECT timeout, keepalive, packet size, token expiry, revocation.

Every connection's reader is wrapped in a `GuardedReader` that refuses oversized reads and
remembers when data last arrived. One `ConnectionGuard` task sweeps all connections a few
times a second and aborts those past a deadline; aborting the socket makes amqtt see an
abnormal disconnect, so the client's Last Will fires (device `lost` presence relies on it).
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


class GuardedReader(ReaderAdapter):
    def __init__(self, inner: ReaderAdapter, max_read: int) -> None:
        self._inner = inner
        self._max_read = max_read
        self.last_activity = time.monotonic()
        self.connection: Connection | None = None

    async def read(self, n: int = -1) -> bytes:
        if n > self._max_read:
            DROPPED.labels(cause="size").inc()
            raise PacketTooLarge(f"packet of {n} bytes exceeds {self._max_read}")
        data = await self._inner.read(n)
        self.last_activity = time.monotonic()
        return data

    def feed_eof(self) -> None:
        self._inner.feed_eof()


def abort(writer: WriterAdapter) -> None:
    """Drop the connection now; amqtt's own close waits on a drain that a frozen client never allows."""
    transport = None
    if isinstance(writer, StreamWriterAdapter):
        transport = writer._writer.transport
    elif isinstance(writer, WebSocketsWriter):
        transport = writer._protocol.transport
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
        if claims["exp"] <= wall:
            return "token_expired"
        if self.refuses(claims):
            return "revoked"
        return None
