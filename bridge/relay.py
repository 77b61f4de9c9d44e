"""The outbox relay: committed events → MQTT, in seq order per restaurant, at QoS 1, nothing lost.

A row is stamped published only after the broker's PUBACK for every message it became.
While the broker is away, paho keeps the messages and resends them in order on reconnect,
so the relay waits rather than publishing again (no duplicates from the relay itself).

An event that cannot be published never holds up the ones after it: one over the broker's packet
limit (known before sending) or that cannot be encoded is dead-lettered at once; one during whose
flight the broker drops the connection `max_attempts` times (counted in the row, so a restart does
not start over) is withdrawn from paho's queue and dead-lettered. Dead-lettering stamps the row done,
notifies the restaurant's staff and counts `orderbus_outbox_dead_letter_total`; the event stays
readable from `/events`.

After every connect, the retained state is rebuilt from the database before the next row (`bridge.retained`).

`fence`, when given, is asked before every batch whether this process may still publish (the bridge
lease, `bridge.lease`): a relay whose lease is gone publishes nothing more, since another relay may
hold it already.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from bridge.metrics import OUTBOX_DEAD_LETTERS, RELAY_EVENTS_PUBLISHED, RELAY_PUBLISH_SECONDS
from bridge.retained import HeldReader, RetainedRebuild
from bridge.routing import Publication, packet_size, publications
from core.models import OutboxEvent
from core.services import outbox
from core.sizes import MAX_PACKET_BYTES
from core.unit_of_work import UnitOfWork

log = logging.getLogger("orderbus.relay")


class Relay:
    def __init__(
        self,
        engine: Engine,
        client: mqtt.Client,
        host: str,
        port: int,
        *,
        batch_size: int = 200,
        idle_poll_seconds: float = 5.0,
        max_packet_bytes: int = MAX_PACKET_BYTES,
        max_attempts: int = 5,
        fence: Callable[[], bool] | None = None,
        read_held: HeldReader | None = None,
    ) -> None:
        self._engine = engine
        self._client = client
        self._host, self._port = host, port
        self._batch_size = batch_size
        self._idle_poll = idle_poll_seconds  # a safety net: other processes wake it too (bridge/wake.py)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._give_up = threading.Event()  # set when a stop's drain time is over
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
        self._max_packet = max_packet_bytes
        self._max_attempts = max_attempts
        self._fence = fence
        self._sessions = 0  # accepted CONNACKs so far
        self._drops = 0  # connections lost after being accepted (a refused CONNECT is not the event's doing)
        self._count_drops()
        self._retained = RetainedRebuild(engine, client, self.wake, read_held)  # chains the callbacks above

    def _count_drops(self) -> None:
        """Count lost connections beside the client's own callbacks (chained, not replaced)."""
        on_connect, on_disconnect = self._client.on_connect, self._client.on_disconnect
        counted_session = 0

        def connected(*args: Any) -> None:  # (client, userdata, flags, reason, properties)
            if not getattr(args[3], "is_failure", False):
                self._sessions += 1
            if on_connect is not None:
                on_connect(*args)

        def disconnected(*args: Any) -> None:
            nonlocal counted_session
            if self._sessions != counted_session:  # at most one drop per accepted connection
                counted_session = self._sessions
                self._drops += 1
            if on_disconnect is not None:
                on_disconnect(*args)

        self._client.on_connect = connected
        self._client.on_disconnect = disconnected

    def wake(self) -> None:
        """Called after every commit that wrote events."""
        self._wake.set()

    def start(self) -> None:
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()
        self._thread.start()

    def stop(self, drain_seconds: float = 5.0) -> None:
        """Publish what is pending, for up to `drain_seconds`; the rest waits in the outbox for the next start."""
        timer = threading.Timer(drain_seconds, self._give_up.set)
        timer.start()
        self._stopping.set()
        self._wake.set()
        self._thread.join()
        timer.cancel()
        self._client.disconnect()
        self._client.loop_stop()

    def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                while not self._give_up.is_set() and self.publish_pending():
                    pass
            except Exception:
                log.exception("relay pass failed; retrying")
                self._give_up.wait(1.0)
            if self._stopping.is_set():
                return
            self._wake.wait(self._idle_poll)

    def publish_pending(self) -> int:
        """Publish one batch of unpublished events in order; returns how many were stamped done."""
        if not self._retained.ensure(self._give_up):
            return 0  # not connected, or the rebuild did not finish: the next connect wakes the relay
        if self._fence is not None and not self._fence():
            return 0  # the lease is gone: whoever holds it now publishes; this relay is being stopped
        with Session(self._engine) as session:
            rows = session.exec(
                select(OutboxEvent.id, OutboxEvent.envelope)
                .where(col(OutboxEvent.published_at).is_(None))
                .order_by(col(OutboxEvent.id))
                .limit(self._batch_size)
            ).all()
        if not rows:
            return 0
        started = time.monotonic()
        sent: list[tuple[int, list[mqtt.MQTTMessageInfo]]] = []
        done = 0
        for row_id, envelope in rows:
            assert row_id is not None  # a stored row has its id
            messages, refusal = self._messages(envelope)
            if refusal is not None:
                done += self._dead_letter(row_id, *refusal)
                continue
            sent.append((row_id, [self._client.publish(m.topic, m.payload, qos=1, retain=m.retain) for m in messages]))
        published: list[int] = []
        for row_id, infos in sent:
            outcome = self._wait_for_acks(row_id, infos, started)
            if outcome == "stopped":
                break
            if outcome == "refused":
                done += self._dead_letter(
                    row_id,
                    "refused",
                    f"the broker dropped the connection {self._max_attempts} times while it was in flight",
                )
            else:
                published.append(row_id)
        if published:
            with Session(self._engine) as session:
                session.execute(
                    update(OutboxEvent).where(col(OutboxEvent.id).in_(published)).values(published_at=datetime.now(UTC))
                )
                session.commit()
            RELAY_EVENTS_PUBLISHED.inc(len(published))
        return done + len(published)

    def _messages(self, envelope: Mapping[str, Any]) -> tuple[list[Publication], tuple[str, str] | None]:
        """The event's messages, or why it cannot be published at all: (reason, detail)."""
        try:
            messages = publications(envelope)
        except Exception as exc:  # malformed data, a lone surrogate: no retry will change it
            return [], ("unencodable", f"cannot be encoded as MQTT messages ({type(exc).__name__})")
        largest = max((packet_size(m) for m in messages), default=0)
        if largest > self._max_packet:
            return [], ("too_large", f"a {largest}-byte message is over the broker's {self._max_packet}-byte limit")
        return messages, None

    def _dead_letter(self, row_id: int, reason: str, detail: str) -> int:
        with UnitOfWork(self._engine, self.wake) as uow:
            row = outbox.dead_letter(uow, row_id, reason, detail)
            uow.commit()
        if row is None:
            return 0
        OUTBOX_DEAD_LETTERS.labels(reason=reason).inc()
        log.error(
            "outbox event dead-lettered restaurant_id=%s seq=%s type=%s reason=%s (%s)",
            row.restaurant_id,
            row.seq,
            row.type,
            reason,
            detail,
        )
        return 1

    def _wait_for_acks(self, row_id: int, infos: list[mqtt.MQTTMessageInfo], started: float) -> str:
        """Wait for every PUBACK of one event: `acked`; `refused` when the broker dropped the connection
        `max_attempts` times while this was the oldest event in flight (its messages are then
        withdrawn); `stopped` when a stop's drain time runs out first."""
        drops = self._drops
        for info in infos:
            while not self._acked(info):
                if self._give_up.is_set():
                    return "stopped"
                if self._drops != drops:
                    drops = self._drops
                    with UnitOfWork(self._engine) as uow:
                        attempts = outbox.count_attempt(uow, row_id)
                        uow.commit()
                    if attempts >= self._max_attempts:
                        self._withdraw(infos)
                        return "refused"
            RELAY_PUBLISH_SECONDS.observe(time.monotonic() - started)  # publish → PUBACK (outages included)
        return "acked"

    @staticmethod
    def _acked(info: mqtt.MQTTMessageInfo) -> bool:
        # `is_published` raises for a message queued while disconnected, though paho
        # sends it on reconnect; read the flag under its lock instead.
        with info._condition:
            if not info._published:
                info._condition.wait(0.05)
            return info._published

    def _withdraw(self, infos: list[mqtt.MQTTMessageInfo]) -> None:
        """Take messages out of paho's queue so that no reconnect sends them again. paho has no public
        call for one message (`drop_out_messages` drops all), hence its queue under its own lock."""
        client = self._client
        with client._out_message_mutex:
            for info in infos:
                message = client._out_messages.pop(info.mid, None)
                if message is not None and message.state == mqtt.mqtt_ms_wait_for_puback:
                    client._inflight_messages -= 1  # recounted from scratch on every reconnect anyway
