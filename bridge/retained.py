"""Retained state rebuilt from the database on every connect of the relay, before it publishes more events.

A broker restarted without its retained store (or with an old copy of it) would otherwise give a new
subscriber no open orders and no stock, or orders long closed. On each CONNACK the relay, before its
next outbox row:

1. learns which state topics the broker holds: it subscribes to them, collects the retained
   messages, and unsubscribes; the UNSUBACK comes after the last of them (a broker answers one
   client's packets in order). On NATS a restarted node answers before it has loaded its retained
   messages, so there they are read from the stream they are kept in (`bridge.nats_retained`), and
   only if that read fails, the MQTT way;
2. reads the state as of the last *published* event (`core.services.retained_state`, one snapshot);
   by then every event the relay handed to the broker is acknowledged and stamped, so the rebuilt
   state is the newest the broker was given, and the unpublished events that follow move it forward:
   a screen never sees an older state after a newer one;
3. publishes each state topic retained at QoS 1 (the envelope of the event that last changed it,
   exactly the message `routing.publications` made of that event), clears (empty retained payload)
   each held order or stock topic the snapshot no longer has, and restores the presence of offline or
   lost devices whose status the broker lost (marked `restored`, which ingest ignores). Online devices
   are left to say so themselves: every device publishes `online` with a new boot id on each connect,
   and an older `online` from the database would overwrite it;
4. waits for every PUBACK. A disconnect on the way leaves the rebuild due: it runs again, whole,
   after the next CONNACK.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import paho.mqtt.client as mqtt
from sqlalchemy import Engine

from bridge.nats_retained import StreamUnreadable
from bridge.routing import publications
from core import topics
from core.services import retained_state
from core.unit_of_work import UnitOfWork

log = logging.getLogger("orderbus.relay")

STATE_FILTERS = (topics.every_restaurant(topics.OPEN_ORDER), topics.every_restaurant(topics.INVENTORY_ITEM))
STATUS_FILTER = topics.every_restaurant(topics.STATUS)
RESTORED_STATES = (topics.OFFLINE, topics.LOST)  # presence the bus republishes for a device
ANSWER_SECONDS = 10.0  # for a SUBACK or UNSUBACK, connected; longer means something is wrong: retry
# what the broker holds retained under some filters, read from its store rather than over MQTT (on NATS:
# bridge.nats_retained.StreamReader.held); raises StreamUnreadable when it cannot tell
HeldReader = Callable[[Sequence[str]], dict[str, bytes]]


class RetainedRebuild:
    """Installs itself on the relay's client; `ensure()` is called before each outbox batch."""

    def __init__(
        self, engine: Engine, client: mqtt.Client, wake: Callable[[], None], read_held: HeldReader | None = None
    ) -> None:
        self._engine, self._client, self._wake = engine, client, wake
        self._read_held = read_held
        self._lock = threading.Lock()
        # connection changes so far (each CONNACK and each drop); a rebuild is due while this is ahead of
        # `_rebuilt_for`. A drop counts too: what the relay hands paho while it is disconnected is queued
        # and sent first thing at the next CONNACK, before the rebuild could run.
        self._connects = 0
        self._rebuilt_for = 0
        self._answered: dict[int, threading.Event] = {}
        self._refused: set[int] = set()
        self._held: dict[str, bytes] | None = None  # collecting while not None
        # paho types the slot as any callback version; the bus's clients are made with VERSION2 (bridge.mqtt)
        previous_on_connect = cast("mqtt.CallbackOnConnect_v2 | None", client.on_connect)
        previous_on_disconnect = cast("mqtt.CallbackOnDisconnect_v2 | None", client.on_disconnect)

        def on_connect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            if previous_on_connect is not None:
                previous_on_connect(c, userdata, flags, reason, props)
            if not reason.is_failure:
                with self._lock:
                    self._connects += 1
                self._wake()

        def on_disconnect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            with self._lock:
                self._connects += 1
            if previous_on_disconnect is not None:
                previous_on_disconnect(c, userdata, flags, reason, props)

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_subscribe = self._on_answer
        client.on_unsubscribe = self._on_answer
        for topic_filter in (*STATE_FILTERS, STATUS_FILTER):
            client.message_callback_add(topic_filter, self._on_message)

    def ensure(self, give_up: threading.Event) -> bool:
        """True once the broker holds the state of this connection; False to be asked again later."""
        while not give_up.is_set():
            with self._lock:
                connect = self._connects
            if connect == self._rebuilt_for:
                return True
            if not self._client.is_connected():
                return False
            try:
                done = self._rebuild(connect, give_up)
            except Exception:
                log.exception("retained state rebuild failed; retrying")
                return False
            if not done:
                return False
            self._rebuilt_for = connect
        return False

    # --- one rebuild ----------------------------------------------------------------------------

    def _rebuild(self, connect: int, give_up: threading.Event) -> bool:
        started = time.monotonic()
        learned = self._held_by_broker(connect, give_up)
        if learned is None:
            return False
        held, known = learned
        with UnitOfWork(self._engine) as uow:  # read only: rolled back at the end
            state = retained_state.read(uow)
        wanted: dict[str, bytes] = {}
        for envelope in (*state.orders, *state.items):
            wanted |= {pub.topic: pub.payload for pub in publications(envelope) if pub.retain}
        cleared = [topic for topic in held if topic not in wanted and not _is_status(topic)]
        restored = {
            topics.device(p.restaurant_id, p.device_id, "status"): _presence(p)
            for p in state.presence
            if known
            and p.state in RESTORED_STATES
            and topics.device(p.restaurant_id, p.device_id, "status") not in held
        }
        sends = [*wanted.items(), *((topic, b"") for topic in cleared), *restored.items()]
        infos = [self._client.publish(topic, payload, qos=1, retain=True) for topic, payload in sends]
        for info in infos:
            if not _acknowledged(info, give_up):
                return False
        log.info(
            "retained state rebuilt: %d orders, %d items, %d cleared, %d presence restored in %.3fs",
            len(state.orders),
            len(state.items),
            len(cleared),
            len(restored),
            time.monotonic() - started,
        )
        return True

    def _held_by_broker(self, connect: int, give_up: threading.Event) -> tuple[dict[str, bytes], bool] | None:
        """The state and status topics the broker holds retained, and whether it let the relay read them
        (an ACL without the grant: nothing is cleared or restored, the state is still republished);
        None when the connection changed on the way."""
        if self._read_held is not None:
            try:
                return self._read_held((*STATE_FILTERS, STATUS_FILTER)), True
            except StreamUnreadable as exc:
                log.error("could not read the retained state from the broker's store (%s): reading it over MQTT", exc)
        with self._lock:
            self._held = {}
        try:
            filters = [(topic_filter, 0) for topic_filter in (*STATE_FILTERS, STATUS_FILTER)]
            subscribed = self._ask(self._client.subscribe(filters)[1], connect, give_up)
            if subscribed is None:
                return None
            if self._ask(self._client.unsubscribe([f for f, _ in filters])[1], connect, give_up) is None:
                return None
            if not subscribed:
                log.error("the broker refused the relay's reading of the retained state topics: nothing is cleared")
            with self._lock:
                return self._held, subscribed
        finally:
            with self._lock:
                self._held = None

    def _ask(self, mid: int | None, connect: int, give_up: threading.Event) -> bool | None:
        """Wait for the answer to packet `mid` on this same connection: granted, refused, or None (no answer)."""
        if mid is None:
            return None
        with self._lock:
            answered = self._answered.setdefault(mid, threading.Event())
        deadline = time.monotonic() + ANSWER_SECONDS
        try:
            while not answered.wait(0.05):
                with self._lock:
                    moved = self._connects != connect
                if moved or give_up.is_set() or time.monotonic() > deadline or not self._client.is_connected():
                    return None
            with self._lock:
                return mid not in self._refused
        finally:
            with self._lock:
                self._answered.pop(mid, None)
                self._refused.discard(mid)

    # --- paho callbacks (network thread) --------------------------------------------------------

    def _on_answer(self, _c: mqtt.Client, _u: Any, mid: int, codes: Any, _props: Any) -> None:
        with self._lock:
            if any(code.is_failure for code in codes):
                self._refused.add(mid)
            answered = self._answered.setdefault(mid, threading.Event())
        answered.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            if self._held is not None and message.retain and message.payload:
                self._held[message.topic] = bytes(message.payload)


def _is_status(topic: str) -> bool:
    return topics.parse(topic).template == topics.STATUS


def _presence(presence: retained_state.Presence) -> bytes:
    body = {"state": presence.state, "boot_id": presence.boot_id, "kind": presence.kind, "restored": True}
    return json.dumps(body, separators=(",", ":")).encode()


def _acknowledged(info: mqtt.MQTTMessageInfo, give_up: threading.Event) -> bool:
    """Wait for the PUBACK (paho resends after a reconnect); False only when a stop's drain time runs out."""
    while not give_up.is_set():
        with info._condition:
            if info._published:
                return True
            info._condition.wait(0.05)
    return False
