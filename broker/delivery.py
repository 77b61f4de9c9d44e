"""What the broker owes each session: messages in flight and queued, packet ids, and the journal hooks.

One `Outbound` per session. Deliveries are synchronous: `deliver` encodes nothing (the `Message`
holds the bytes every subscriber shares) and writes to the session's `Link`, which coalesces writes
into one flush per connection per loop turn; there is no task per delivery and no timer per message.

MQTT 3.1.1 rules kept here:
- delivered QoS = min(publish QoS, granted QoS) [MQTT-3.8.4-6, 3.3.5];
- RETAIN=0 on live and queued deliveries, 1 only for retained messages sent for a new subscription
  [MQTT-3.3.1-9];
- a QoS 1/2 PUBLISH stays in flight until acknowledged; at a CleanSession=0 reconnect every one is sent
  again with DUP=1 and its original packet id (PUBREL for those already PUBREC'd), in order, before
  anything new [MQTT-4.4.0-1]. There is no acknowledgement timeout: 3.1.1 resends only on reconnect.
- packet ids are 1..65535, never one still in use [MQTT-2.3.1-1, 2.3.1-2].
Memory is bounded by the in-flight window (beyond it, messages wait in `queue`) and the queue bound.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from broker import codec
from broker.stats import DROPPED

SENT, RELEASED = 1, 2  # an in-flight entry: PUBLISH sent / (QoS 2) PUBREC received and PUBREL sent
_QUEUE_FULL = DROPPED.labels(cause="queue_full")
_OFFLINE_QUEUE_FULL = DROPPED.labels(cause="offline_queue_full")


class Journal(Protocol):
    """Durability hooks, called on the event loop, synchronous and cheap; only for CleanSession=0 sessions
    (plus the retained store). `key` orders one session's messages. `after_commit(callback)` runs the
    callback once everything recorded so far is durable (the PUBACK of a journaled QoS 1 PUBLISH waits)."""

    def session_saved(self, client_id: str, claims: dict[str, Any], expires_after: int) -> None: ...
    def session_deleted(self, client_id: str) -> None: ...
    def disconnected(self, client_id: str) -> None: ...
    def subscribed(self, client_id: str, topic_filter: str, qos: int) -> None: ...
    def unsubscribed(self, client_id: str, topic_filter: str) -> None: ...
    def added(self, client_id: str, key: int, topic: str, payload: bytes, qos: int) -> None: ...
    def sent(self, client_id: str, key: int, packet_id: int) -> None: ...
    def removed(self, client_id: str, key: int) -> None: ...
    def retained(self, topic: str, payload: bytes, qos: int) -> None: ...
    def retained_cleared(self, topic: str) -> None: ...
    def after_commit(self, callback: Callable[[], None]) -> None: ...


class NoJournal:
    """Nothing is kept across a restart; acknowledgements go out at once."""

    def session_saved(self, client_id: str, claims: dict[str, Any], expires_after: int) -> None:
        pass

    def session_deleted(self, client_id: str) -> None:
        pass

    def disconnected(self, client_id: str) -> None:
        pass

    def subscribed(self, client_id: str, topic_filter: str, qos: int) -> None:
        pass

    def unsubscribed(self, client_id: str, topic_filter: str) -> None:
        pass

    def added(self, client_id: str, key: int, topic: str, payload: bytes, qos: int) -> None:
        pass

    def sent(self, client_id: str, key: int, packet_id: int) -> None:
        pass

    def removed(self, client_id: str, key: int) -> None:
        pass

    def retained(self, topic: str, payload: bytes, qos: int) -> None:
        pass

    def retained_cleared(self, topic: str) -> None:
        pass

    def after_commit(self, callback: Callable[[], None]) -> None:
        callback()


NO_JOURNAL = NoJournal()


@dataclass
class Pending:
    """A message a persistent session was owed, as a journal loads it (packet_id: it was in flight)."""

    key: int
    topic: str
    payload: bytes
    qos: int
    packet_id: int | None = None


@dataclass
class SessionSnapshot:
    client_id: str
    claims: dict[str, Any]
    subscriptions: list[tuple[str, int]] = field(default_factory=list)
    pending: list[Pending] = field(default_factory=list)  # in key order
    disconnected_at: float | None = None  # wall clock; None: now


@dataclass
class Snapshot:
    """What `OrderbusBroker.restore` takes at start: persistent sessions and retained messages."""

    sessions: list[SessionSnapshot] = field(default_factory=list)
    retained: list[tuple[str, bytes, int]] = field(default_factory=list)


class Message:
    """One application message, encoded once for every subscriber it reaches."""

    __slots__ = ("_head0", "_head1", "_plain", "data", "qos", "topic")

    def __init__(self, topic: str, data: bytes, qos: int) -> None:
        self.topic = topic
        self.data = data
        self.qos = qos
        self._plain: bytes | None = None
        self._head0: bytes | None = None
        self._head1: bytes | None = None

    def plain(self) -> bytes:
        """The whole QoS 0, RETAIN=0 PUBLISH: identical for every subscriber."""
        if self._plain is None:
            self._plain = codec.BYTE[0x30] + self.head(0) + self.data
        return self._plain

    def head(self, qos: int) -> bytes:
        if qos:
            if self._head1 is None:
                self._head1 = codec.publish_head(self.topic.encode(), len(self.data), 1)
            return self._head1
        if self._head0 is None:
            self._head0 = codec.publish_head(self.topic.encode(), len(self.data), 0)
        return self._head0


class Link(Protocol):
    """The write side of a connection (`broker.connection.Link`)."""

    def write(self, data: bytes) -> None: ...
    def publish(self, header: int, message: Message, packet_id: int) -> None: ...
    def backlog(self) -> int: ...


class Entry:
    """A QoS 1/2 delivery owed to a session: queued (pid 0) or in flight."""

    __slots__ = ("key", "message", "pid", "qos", "retain", "state")

    def __init__(self, message: Message, qos: int, key: int, retain: bool = False) -> None:
        self.message = message
        self.qos = qos
        self.key = key
        self.retain = retain
        self.pid = 0
        self.state = 0


class Outbound:
    """What one session is owed. `link` is None while its client is away."""

    __slots__ = (
        "_key",
        "_pid",
        "allowed",
        "client_id",
        "filters",
        "grants",
        "incoming",
        "inflight",
        "journal",
        "link",
        "max_backlog",
        "max_queue",
        "persistent",
        "queue",
        "window",
    )

    def __init__(
        self, client_id: str, persistent: bool, *, window: int, max_queue: int, max_backlog: int, journal: Journal
    ) -> None:
        self.client_id = client_id
        self.persistent = persistent
        self.journal = journal
        self.window = window
        self.max_queue = max_queue
        self.max_backlog = max_backlog
        self.link: Link | None = None
        self.inflight: dict[int, Entry] = {}  # by packet id, in the order sent
        self.queue: deque[Entry] = deque()
        self.incoming: set[int] | None = None  # QoS 2 packet ids received, PUBREL not yet seen
        self._pid = 0
        self._key = 0
        self.grants: object = None  # the grants `allowed` was computed for (broker.routing)
        self.allowed: dict[str, bool] | None = None
        self.filters: dict[str, int] | None = None  # this session's subscriptions (broker.routing keeps them)

    # --- delivering ------------------------------------------------------------------------

    def deliver(self, message: Message, granted: int, retain: bool = False) -> bool:
        """Send or keep `message` at min(its QoS, granted); True when it was journaled."""
        qos = message.qos if message.qos < granted else granted
        link = self.link
        if not qos:
            if link is None:
                return False  # QoS 0 is never kept for an absent client
            if link.backlog() > self.max_backlog:
                _QUEUE_FULL.inc()
                return False
            link.publish(0x31 if retain else 0x30, message, 0)
            return False
        if link is None and not self.persistent:
            return False
        sendable = link is not None and not self.queue and len(self.inflight) < self.window
        if sendable and self.inflight and link is not None and link.backlog() > self.max_backlog:
            sendable = False  # a PUBACK will come and pump the queue
        if not sendable and len(self.queue) >= self.max_queue:
            (_OFFLINE_QUEUE_FULL if link is None else _QUEUE_FULL).inc()
            return False
        self._key += 1
        entry = Entry(message, qos, self._key, retain)
        journaled = self.persistent
        if journaled:
            self.journal.added(self.client_id, entry.key, message.topic, message.data, qos)
        if sendable and link is not None:
            self._send(entry, link)
        else:
            self.queue.append(entry)
        return journaled

    def _send(self, entry: Entry, link: Link) -> None:
        pid = self._next_pid()
        entry.pid, entry.state = pid, SENT
        self.inflight[pid] = entry
        if self.persistent:
            self.journal.sent(self.client_id, entry.key, pid)
        link.publish(codec.publish_header(entry.qos, entry.retain), entry.message, pid)

    def _next_pid(self) -> int:
        """1..65535, skipping ids in flight [MQTT-2.3.1-1]; the window keeps far fewer than 65535 in use."""
        pid = self._pid
        for _ in range(65535):
            pid = pid % 65535 + 1
            if pid not in self.inflight:
                self._pid = pid
                return pid
        raise RuntimeError("no free packet id")

    def pump(self) -> None:
        """Move queued messages into flight while the window has room."""
        link = self.link
        while link is not None and self.queue and len(self.inflight) < self.window:
            if self.inflight and link.backlog() > self.max_backlog:
                return
            self._send(self.queue.popleft(), link)

    # --- acknowledgements --------------------------------------------------------------------

    def acked(self, pid: int) -> bool:
        """PUBACK; False for an id not in flight at QoS 1 (the caller counts it as ignored)."""
        entry = self.inflight.get(pid)
        if entry is None or entry.qos != 1:
            return False
        self._done(pid, entry)
        return True

    def received(self, pid: int) -> bool:
        """PUBREC: answer PUBREL; the message is now the client's [MQTT-4.3.3-1]."""
        entry = self.inflight.get(pid)
        if entry is None or entry.qos != 2:
            return False
        entry.state = RELEASED
        if self.link is not None:
            self.link.write(codec.ack(codec.PUBREL, pid))
        return True

    def completed(self, pid: int) -> bool:
        entry = self.inflight.get(pid)
        if entry is None or entry.state != RELEASED:
            return False
        self._done(pid, entry)
        return True

    def _done(self, pid: int, entry: Entry) -> None:
        del self.inflight[pid]
        if self.persistent:
            self.journal.removed(self.client_id, entry.key)
        if self.queue:
            self.pump()

    # --- connections ---------------------------------------------------------------------------

    def resume(self, link: Link) -> None:
        """The client is back: resend what is in flight, DUP=1 and original ids, then the queue [MQTT-4.4.0-1]."""
        self.link = link
        for pid, entry in list(self.inflight.items()):
            if entry.state == RELEASED:
                link.write(codec.ack(codec.PUBREL, pid))
            else:
                link.publish(codec.publish_header(entry.qos, entry.retain, dup=True), entry.message, pid)
        self.pump()

    def keep_only(self, allowed: Callable[[str], bool]) -> list[str]:
        """Drop what the session may no longer read (its token changed while it was away); their topics."""
        dropped: list[str] = []
        for pid, entry in list(self.inflight.items()):
            if not allowed(entry.message.topic):
                dropped.append(entry.message.topic)
                del self.inflight[pid]
                if self.persistent:
                    self.journal.removed(self.client_id, entry.key)
        kept: deque[Entry] = deque()
        for entry in self.queue:
            if allowed(entry.message.topic):
                kept.append(entry)
            else:
                dropped.append(entry.message.topic)
                if self.persistent:
                    self.journal.removed(self.client_id, entry.key)
        self.queue = kept
        return dropped

    def load(self, pending: list[Pending]) -> None:
        """Entries from a journal: those with a packet id were in flight and will be resent with DUP=1."""
        for item in pending:
            entry = Entry(Message(item.topic, item.payload, item.qos), item.qos, item.key)
            self._key = max(self._key, item.key)
            if item.packet_id and item.packet_id not in self.inflight:
                entry.pid, entry.state = item.packet_id, SENT
                self.inflight[item.packet_id] = entry
                self._pid = item.packet_id
            else:
                self.queue.append(entry)

    @property
    def depth(self) -> int:
        return len(self.queue)
