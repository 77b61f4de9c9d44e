"""The bytes of one connection: reading (TCP/TLS stream or WebSocket messages) and coalesced writing.

A `Link` buffers what the broker writes to one client during a loop turn; the `Flusher` writes each
buffered link once at the end of the turn, so a burst of deliveries costs one socket write per
client, not one per packet (and no task, no drain per packet). A client that stops reading shows in
`Link.backlog()`, which delivery checks against the backlog limit.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any

from amqtt.adapters import ReaderAdapter
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from broker import codec
from broker.delivery import Message
from broker.stats import INTERNAL_ERRORS, Traffic

log = logging.getLogger("orderbus.broker")
CHUNK = 65536
_WS16 = struct.Struct("!BBH")
_WS64 = struct.Struct("!BBQ")


# --- reading -----------------------------------------------------------------------------------


class StreamSource(ReaderAdapter):
    """A TCP/TLS stream: exact reads for amqtt's CONNECT parser, then whole chunks for the broker."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    async def read(self, n: int = -1) -> bytes:
        try:
            return await self._reader.readexactly(n)
        except asyncio.IncompleteReadError as exc:
            return exc.partial

    async def chunk(self) -> bytes:
        return await self._reader.read(CHUNK)

    def feed_eof(self) -> None:
        self._reader.feed_eof()


class WebSocketSource(ReaderAdapter):
    """MQTT over WebSocket: the messages' bytes as one stream (a packet may span or share messages)."""

    def __init__(self, websocket: Any) -> None:
        self._websocket = websocket
        self._buffer = bytearray()

    async def _next(self) -> bytes:
        try:
            message = await self._websocket.recv()
        except ConnectionClosed:
            return b""
        return message.encode() if isinstance(message, str) else bytes(message)

    async def read(self, n: int = -1) -> bytes:
        while len(self._buffer) < n:
            message = await self._next()
            if not message:
                break
            self._buffer += message
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    async def chunk(self) -> bytes:
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            return data
        return await self._next()

    def feed_eof(self) -> None:
        pass


Source = StreamSource | WebSocketSource


# --- writing -----------------------------------------------------------------------------------


class Flusher:
    """Connections written to during this loop turn; each is flushed once, in one write, at its end."""

    __slots__ = ("_dirty", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._dirty: list[Link] = []
        self._loop = loop  # the running loop when first needed

    def mark(self, link: Link) -> None:
        if not self._dirty:
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self.flush)
        self._dirty.append(link)

    def flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for link in dirty:
            try:
                link.flush()
            except Exception:  # one connection's failure must not keep the others' bytes back
                INTERNAL_ERRORS.labels(where="flush").inc()
                log.exception("flush failed")


def websocket_frame(data: bytes) -> bytes:
    """One unmasked, final, binary WebSocket frame (RFC 6455 §5.2), as a server sends it. Written straight
    to the transport: websockets' `send` (an async context manager, a frame object, a drain) cost more
    than the write itself per delivery. Its protocol still reads, answers pings and closes."""
    size = len(data)
    if size < 126:
        return bytes((0x82, size)) + data
    if size < 65536:
        return _WS16.pack(0x82, 126, size) + data
    return _WS64.pack(0x82, 127, size) + data


class Link:
    """The write side of one connection: packets are buffered and written once per loop turn."""

    __slots__ = ("_flusher", "_parts", "_traffic", "_transport", "_websocket", "closed")

    def __init__(self, transport: Any, flusher: Flusher, traffic: Traffic, websocket: Any = None) -> None:
        self._transport = transport
        self._websocket = websocket
        self._flusher = flusher
        self._traffic = traffic
        self._parts: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        traffic = self._traffic
        traffic.packets_sent += 1
        traffic.bytes_sent += len(data)
        if not self._parts:
            self._flusher.mark(self)
        self._parts.append(data)

    def publish(self, header: int, message: Message, packet_id: int) -> None:
        if self.closed:
            return
        parts = self._parts
        if not parts:
            self._flusher.mark(self)
        if header == 0x30:
            data = message.plain()
            parts.append(data)
            size = len(data)
        elif header & 0x06:
            head = message.head(1)
            parts += (codec.BYTE[header], head, codec.pack_packet_id(packet_id), message.data)
            size = 3 + len(head) + len(message.data)
        else:
            head = message.head(0)
            parts += (codec.BYTE[header], head, message.data)
            size = 1 + len(head) + len(message.data)
        traffic = self._traffic
        traffic.packets_sent += 1
        traffic.messages_sent += 1
        traffic.bytes_sent += size

    def backlog(self) -> int:
        """Bytes written that the client has not taken yet."""
        try:
            return int(self._transport.get_write_buffer_size())
        except (AttributeError, RuntimeError):
            return 0

    def flush(self) -> None:
        parts = self._parts
        if not parts:
            return
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()
        if self.closed or self._transport.is_closing():
            return
        try:
            if self._websocket is None:
                self._transport.write(data)
            elif self._websocket.protocol.state is State.OPEN:
                self._transport.write(websocket_frame(data))
        except Exception as exc:  # a socket that failed under us: its reader sees it end
            log.debug("write failed: %r", exc)
            self._transport.abort()

    def close(self) -> None:
        """Flush what is buffered (a CONNACK refusal, the last acknowledgements), then write nothing more."""
        self.flush()
        self.closed = True
