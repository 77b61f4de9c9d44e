"""One accepted MQTT connection after its CONNACK: one task reads, packets are handled synchronously.

amqtt ran a reader task that created a task per packet, a client loop of four waiters, and a task
plus an acknowledgement timer per delivery. Here the connection's own task reads whatever the
socket has, cuts it into packets, checks each with `broker.guard.Framing` (the rules live there),
and dispatches it at once; writes go into the `Link` (`broker.transport`), flushed once per loop
turn for every connection written to. Anything that goes wrong with one client's packet closes that
client's connection, counted and logged, and nothing else.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from amqtt.session import Session
from websockets.exceptions import ConnectionClosed

from broker import codec
from broker.delivery import Outbound
from broker.guard import Framing
from broker.routing import Router
from broker.stats import DISCONNECTS, DROPPED, IGNORED, Traffic
from broker.transport import Link, Source

log = logging.getLogger("orderbus.broker")
_UNKNOWN_ID = IGNORED.labels(reason="unknown_packet_id")


class Connection:
    __slots__ = (
        "_acks_waiting",
        "activity",
        "clean_exit",
        "ended",
        "finished",
        "framing",
        "link",
        "outbound",
        "router",
        "session",
        "source",
        "traffic",
        "writer",
    )

    def __init__(
        self,
        router: Router,
        traffic: Traffic,
        session: Session,
        outbound: Outbound,
        source: Source,
        link: Link,
        writer: Any,
        activity: Any,
    ) -> None:
        self.router = router
        self.traffic = traffic
        self.session = session
        self.outbound = outbound
        self.source = source
        self.link = link
        self.writer = writer  # amqtt's adapter: what metrics read the listener kind from
        self.activity = activity  # the guard's reader: `last_activity` is its keepalive clock
        self.framing: Framing | None = None
        self.clean_exit = False  # DISCONNECT received: no Last Will
        self.ended = False  # reading stops
        self.finished = False  # the broker has handled the end (Last Will, session)
        self._acks_waiting = 0

    async def run(self, max_packet: int) -> None:
        """Read until EOF, DISCONNECT or a violation."""
        framing = self.framing = Framing(max_packet)
        framing.packets = 1  # the CONNECT has been read
        source, traffic, buffer, fed = self.source, self.traffic, b"", 0
        while not self.ended and not self.clean_exit:
            try:
                chunk = await source.chunk()
            except (OSError, EOFError, ConnectionClosed):
                chunk = b""
            if not chunk or self.ended:
                return
            self.activity.last_activity = time.monotonic()
            traffic.bytes_received += len(chunk)
            data = buffer + chunk if buffer else chunk
            at, size = 0, len(data)
            try:
                while size - at >= 2:
                    header = codec.read_remaining_length(data, at + 1)
                    if header is None or header[0] + header[1] > size:
                        break
                    end = header[0] + header[1]
                    if end > fed and (reason := framing.feed(data[fed:end])):
                        self.refuse(reason)
                        return
                    fed = end
                    self.dispatch(data[at], data[header[1] : end])
                    at = end
                    if self.ended or self.clean_exit:
                        return
                if size > fed and (reason := framing.feed(data[fed:size])):
                    self.refuse(reason)
                    return
            except codec.Malformed as exc:
                self.refuse(exc.reason)
                return
            except Exception:
                log.exception("packet handling failed client_id=%r; closing its connection", self.session.client_id)
                DISCONNECTS.labels(reason="internal_error").inc()
                self.stop()
                return
            buffer, fed = data[at:], size - at

    def refuse(self, reason: str) -> None:
        """Close for a protocol violation (counted and logged the way the guard's reader did)."""
        client_id = self.session.client_id
        if reason == "size":
            DROPPED.labels(cause="size").inc()
            log.warning("disconnect client_id=%r reason=packet_too_large", client_id)
        else:
            DISCONNECTS.labels(reason=reason).inc()
            log.warning("disconnect client_id=%r reason=%s", client_id, reason)
        self.stop()

    def stop(self) -> None:
        self.link.closed = True
        self.ended = True

    def dispatch(self, first: int, body: bytes) -> None:
        kind = first >> 4
        self.traffic.packets_received += 1
        if kind == codec.PUBLISH:
            self.on_publish(first & 0x0F, body)
        elif kind == codec.PUBACK:
            pid = codec.packet_id(body)
            if not self.outbound.acked(pid):
                self.ignored("PUBACK", pid)
        elif kind == codec.PUBREC:
            pid = codec.packet_id(body)
            if not self.outbound.received(pid):
                self.ignored("PUBREC", pid)
        elif kind == codec.PUBCOMP:
            pid = codec.packet_id(body)
            if not self.outbound.completed(pid):
                self.ignored("PUBCOMP", pid)
        elif kind == codec.PUBREL:
            self.on_pubrel(codec.packet_id(body))
        elif kind == codec.SUBSCRIBE:
            self.on_subscribe(body)
        elif kind == codec.UNSUBSCRIBE:
            pid, filters = codec.parse_unsubscribe(body)
            for topic_filter in filters:
                self.router.unsubscribe(self.session, self.outbound, topic_filter)
            self.link.write(codec.ack(codec.UNSUBACK, pid))
        elif kind == codec.PINGREQ:
            self.link.write(codec.PINGRESP_PACKET)
        elif kind == codec.DISCONNECT:
            self.clean_exit = True
        else:  # CONNACK, SUBACK, UNSUBACK, PINGRESP: only a server sends them
            raise codec.Malformed("unexpected_packet")

    def on_publish(self, flags: int, body: bytes) -> None:
        topic, pid, payload = codec.parse_publish(flags, body)
        qos = (flags >> 1) & 0x03
        self.traffic.messages_received += 1
        if qos == 2:
            incoming = self.outbound.incoming
            if incoming is None:
                incoming = self.outbound.incoming = set()
            if pid in incoming:  # a resend of one already routed: acknowledge only [MQTT-4.3.3-2]
                self.link.write(codec.ack(codec.PUBREC, pid))
                return
            incoming.add(pid)
        journaled = self.router.publish(self.session, topic, payload, qos, bool(flags & codec.RETAIN))
        if qos:
            self.acknowledge(codec.ack(codec.PUBACK if qos == 1 else codec.PUBREC, pid), journaled)

    def acknowledge(self, ack: bytes, journaled: bool) -> None:
        """PUBACK/PUBREC at once, or once the journal has made what it owes durable; in order either way
        [MQTT-4.6.0-2]: after one waits, the following wait too."""
        if not journaled and not self._acks_waiting:
            self.link.write(ack)
            return
        self._acks_waiting += 1

        def send() -> None:
            self._acks_waiting -= 1
            self.link.write(ack)

        self.router.journal.after_commit(send)

    def on_pubrel(self, pid: int) -> None:
        incoming = self.outbound.incoming
        if incoming is not None and pid in incoming:
            incoming.discard(pid)
        else:  # still answered [MQTT-4.3.3-2]: the client may be finishing a flow from before a restart
            self.ignored("PUBREL", pid)
        self.link.write(codec.ack(codec.PUBCOMP, pid))

    def ignored(self, kind: str, pid: int) -> None:
        """An acknowledgement for a packet id not in flight: ignored as the standard allows, counted, logged."""
        _UNKNOWN_ID.inc()
        log.info("ignored %s client_id=%r packet_id=%s reason=unknown_packet_id", kind, self.session.client_id, pid)

    def on_subscribe(self, body: bytes) -> None:
        pid, wanted = codec.parse_subscribe(body)
        router, session, outbound = self.router, self.session, self.outbound
        codes = [router.subscribe(session, outbound, topic_filter, qos) for topic_filter, qos in wanted]
        self.link.write(codec.suback(pid, codes))
        for (topic_filter, _), code in zip(wanted, codes, strict=True):
            if code != 0x80:
                router.send_retained(session, outbound, topic_filter, code, "receive_retained")
