"""The outbox relay: committed events → MQTT, in seq order per restaurant, at QoS 1, nothing lost.

A row is stamped published only after the broker's PUBACK for every message it became.
While the broker is away, paho keeps the messages and resends them in order on reconnect,
so the relay waits rather than publishing again (no duplicates from the relay itself).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from bridge.metrics import RELAY_EVENTS_PUBLISHED, RELAY_PUBLISH_SECONDS
from bridge.routing import publications
from core.models import OutboxEvent

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
        """Publish one batch of unpublished events in order; returns how many were stamped published."""
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
        infos = [
            self._client.publish(pub.topic, pub.payload, qos=1, retain=pub.retain)
            for _row_id, envelope in rows
            for pub in publications(envelope)
        ]
        for info in infos:
            if not self._wait_for_ack(info):
                return 0
            RELAY_PUBLISH_SECONDS.observe(time.monotonic() - started)  # publish → PUBACK (outages included)
        with Session(self._engine) as session:
            session.execute(
                update(OutboxEvent)
                .where(col(OutboxEvent.id).in_([row_id for row_id, _ in rows]))
                .values(published_at=datetime.now(UTC))
            )
            session.commit()
        RELAY_EVENTS_PUBLISHED.inc(len(rows))
        return len(rows)

    def _wait_for_ack(self, info: mqtt.MQTTMessageInfo) -> bool:
        """Wait for the PUBACK; False only when a stop's drain time runs out first."""
        while not self._give_up.is_set():
            # `is_published` raises for a message queued while disconnected, though paho
            # sends it on reconnect; read the flag under its lock instead.
            with info._condition:
                if info._published:
                    return True
                info._condition.wait(0.05)
        return False
