"""An event the relay cannot publish, through the real embedded broker and relay: it is dead-lettered,
every later event of every restaurant still goes out in seq order, staff are notified, the metric
counts it, `/events` still serves it, and a restart with such an event pending is not stuck.

The events are written by the unit of work directly (`emit`), as a bug or an older version could
have written them: the API refuses orders this large."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import REGISTRY
from sqlmodel import Session, col, func, select

from bridge.routing import Publication, packet_size
from core.events import Event
from core.metrics import outbox_figures
from core.models import OutboxEvent
from core.unit_of_work import UnitOfWork
from tests.support import Stack, Subscriber, add_burger_and_fries, wait_for

EMBEDDED_LIMIT = 256 * 1024


def dead_letters(reason: str) -> float:
    return REGISTRY.get_sample_value("orderbus_outbox_dead_letter_total", {"reason": reason}) or 0.0


def unpublished(stack: Stack) -> int:
    with Session(stack.engine) as session:
        return session.exec(select(func.count()).where(col(OutboxEvent.published_at).is_(None))).one()


def row(stack: Stack, rid: int, seq: int) -> OutboxEvent:
    with Session(stack.engine) as session:
        found = session.exec(select(OutboxEvent).where(OutboxEvent.restaurant_id == rid, OutboxEvent.seq == seq)).one()
        session.expunge(found)
        return found


def emit_order_event(stack: Stack, rid: int, notes_chars: int, attempts: int | None = None, notes: str = "") -> int:
    """A `new_order` event whose notes are `notes_chars` Cyrillic letters (2 bytes each in UTF-8)."""
    order = {
        "id": 10**6 + notes_chars,
        "status": "pending",
        "version": 1,
        "items": [],
        "notes": notes or "ж" * notes_chars,
    }
    with UnitOfWork(stack.engine, stack.runtime.wake_relay) as uow:
        emitted = uow.emit(rid, Event("new_order", {"order": order}))
        uow.session.flush()
        if attempts is not None:
            emitted.attempts = attempts
        seq = emitted.seq
        uow.commit()
    return seq


def shop(stack: Stack, name: str) -> dict[str, Any]:
    rid = stack.add_restaurant(name, f"{name.lower()}@example.com")
    admin = stack.http(stack.api_token(f"user-{name}", "admin", rid))
    _burger, fries = add_burger_and_fries(admin, rid, stock=50, low_stock=1)
    return {"rid": rid, "admin": admin, "fries": fries["id"]}


def order(shop: dict[str, Any]) -> int:
    response = shop["admin"].post(
        f"/restaurants/{shop['rid']}/orders", json={"items": [{"menu_item_id": shop["fries"], "quantity": 1}]}
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def watch(stack: Stack, subscribers: list[Subscriber], rid: int, name: str) -> Subscriber:
    subscriber = Subscriber(stack.settings.mqtt_port, name, stack.mqtt_token(name, "admin", rid))
    subscribers.append(subscriber)
    assert subscriber.connect() == 0
    assert subscriber.subscribe(f"restaurant/{rid}/orders") == 1
    assert subscriber.subscribe(f"restaurant/{rid}/notifications") == 1
    subscriber.drain(quiet=0.3)
    return subscriber


def seqs(subscriber: Subscriber) -> tuple[list[int], list[dict]]:
    """(seqs of every event received, the notifications among them)."""
    events = [message.json() for message in subscriber.drain(quiet=0.5)]
    return [e["seq"] for e in events], [e["data"]["notification"] for e in events if e["type"] == "notification"]


def watched_after(shop: dict[str, Any], after: int) -> list[int]:
    """The seqs after `after` that a `watch` subscriber gets: orders and notifications."""
    return [e["seq"] for e in events_after(shop, after) if e["type"] in ("new_order", "order_updated", "notification")]


def events_after(shop: dict[str, Any], after: int) -> list[dict]:
    response = shop["admin"].get(f"/restaurants/{shop['rid']}/events", params={"after": after})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def watchers() -> Iterator[list[Subscriber]]:
    """Subscribers made by a test, closed after it (without starting the default stack)."""
    made: list[Subscriber] = []
    yield made
    for subscriber in made:
        subscriber.close()


@pytest.fixture
def big_limit_stack(tmp_path: Path) -> Iterator[Stack]:
    """The bridge believes the broker takes 1 MiB packets; the embedded one takes 256 KiB: only trying tells."""
    running = Stack(tmp_path / "data", mqtt_max_packet_bytes=1024 * 1024).start()
    yield running
    running.stop()


def test_an_event_over_the_packet_limit_is_dead_lettered_and_every_stream_goes_on(stack: Stack, subscribers):
    a, b = shop(stack, "A"), shop(stack, "B")
    wait_for(lambda: unpublished(stack) == 0)
    watch_a, watch_b = watch(stack, subscribers, a["rid"], "dash-a"), watch(stack, subscribers, b["rid"], "dash-b")
    before = dead_letters("too_large")

    poison = emit_order_event(stack, a["rid"], notes_chars=150_000)  # 300 KB of UTF-8
    for _ in range(2):
        order(a)
    unencodable = emit_order_event(stack, b["rid"], notes_chars=0, notes="\ud800")  # a lone surrogate
    later_b = [order(b), order(b)]
    wait_for(lambda: unpublished(stack) == 0, timeout=15)

    got_a, notes_a = seqs(watch_a)
    got_b, notes_b = seqs(watch_b)
    assert poison not in got_a and unencodable not in got_b
    assert got_a == sorted(got_a) and got_b == sorted(got_b), "seq order kept on each stream"
    # Right after the hole, each stream goes on with the next events it watches (the relay's own
    # dead-letter notification may land between the later orders: /events says where).
    assert [s for s in got_a if s > poison][:2] == watched_after(a, poison)[:2], "A's next events after the hole"
    assert [s for s in got_b if s > unencodable][:2] == watched_after(b, unencodable)[:2]
    assert len(later_b) == 2
    [note] = notes_a
    assert note["kind"] == "outbox_dead_letter" and f"Event {poison} (new_order)" in note["title"]
    assert [n["kind"] for n in notes_b] == ["outbox_dead_letter"]
    assert dead_letters("too_large") == before + 1
    assert row(stack, b["rid"], unencodable).dead_letter_reason.startswith("unencodable")  # type: ignore[union-attr]
    [withheld] = events_after(b, unencodable - 1)[:1]
    assert withheld["data"]["order"]["notes"] == "\ud800" and withheld["mqtt_withheld"] is True

    dead = row(stack, a["rid"], poison)
    assert dead.dead_letter_at is not None and dead.published_at is not None
    assert dead.dead_letter_reason is not None and dead.dead_letter_reason.startswith("too_large")
    fetched = events_after(a, poison - 1)
    assert fetched[0]["seq"] == poison and fetched[0]["mqtt_withheld"] is True
    assert fetched[0]["data"]["order"]["notes"] == "ж" * 150_000
    assert all("mqtt_withheld" not in event for event in fetched[1:])
    assert outbox_figures(stack.engine) == (0, 0.0), "a dead letter is not pending: /readyz ignores it"
    ready = httpx.get(f"{stack.base_url}/readyz", timeout=10).json()
    assert "relay" not in ready["failed"]


def test_an_event_at_the_packet_limit_is_published_not_dead_lettered(stack: Stack, subscribers):
    """The relay's size check agrees with the broker: a packet of exactly the limit goes through."""
    a = shop(stack, "A")
    wait_for(lambda: unpublished(stack) == 0)
    seq = emit_order_event(stack, a["rid"], notes_chars=1)
    probe = row(stack, a["rid"], seq).envelope
    topic = f"restaurant/{a['rid']}/orders"
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="probe", protocol=mqtt.MQTTv311)
    client.username_pw_set("probe", stack.mqtt_token("probe", "service", None))
    client.connect("127.0.0.1", stack.settings.mqtt_port)
    client.loop_start()
    try:
        overhead = packet_size(Publication(topic, b"x" * 20_000)) - 20_000
        exact = Publication(topic, b"x" * (EMBEDDED_LIMIT - overhead))
        assert packet_size(exact) == EMBEDDED_LIMIT
        info = client.publish(exact.topic, exact.payload, qos=1)
        info.wait_for_publish(timeout=10)
        assert info.is_published() and client.is_connected()
    finally:
        client.disconnect()
        client.loop_stop()
    assert probe["data"]["order"]["notes"] == "ж"


def test_an_event_the_broker_keeps_refusing_is_dead_lettered_after_bounded_tries(big_limit_stack: Stack, watchers):
    stack = big_limit_stack
    a, b = shop(stack, "A"), shop(stack, "B")
    wait_for(lambda: unpublished(stack) == 0)
    watch_a, watch_b = watch(stack, watchers, a["rid"], "dash-a"), watch(stack, watchers, b["rid"], "dash-b")
    before = dead_letters("refused")

    poison = emit_order_event(stack, a["rid"], notes_chars=150_000)  # under the relay's 1 MiB, over the broker's
    order(a)
    order(b)
    wait_for(lambda: unpublished(stack) == 0, timeout=40)

    dead = row(stack, a["rid"], poison)
    assert dead.attempts == 5
    assert dead.dead_letter_reason is not None and dead.dead_letter_reason.startswith("refused")
    assert dead_letters("refused") == before + 1
    got_a, notes_a = seqs(watch_a)
    got_b, _ = seqs(watch_b)
    assert poison not in got_a and poison + 1 in got_a and got_a == sorted(got_a)
    assert len(got_b) == 1
    assert [n["kind"] for n in notes_a] == ["outbox_dead_letter"]
    assert events_after(a, poison - 1)[0]["mqtt_withheld"] is True


def test_a_restart_with_unpublishable_events_pending_is_not_stuck(tmp_path: Path):
    """Written while nothing ran: one event over every limit, one the broker refused 4 times before
    the restart (the count survives it), then ordinary events of two restaurants."""
    first = Stack(tmp_path / "data", mqtt_max_packet_bytes=1024 * 1024).start()
    a, b = shop(first, "A"), shop(first, "B")
    wait_for(lambda: unpublished(first) == 0)
    first.stop()

    too_large = emit_order_event(first, a["rid"], notes_chars=600_000)  # 1.2 MB: over the relay's own limit
    refused = emit_order_event(first, a["rid"], notes_chars=150_000, attempts=4)
    follow_a = emit_order_event(first, a["rid"], notes_chars=10)
    follow_b = emit_order_event(first, b["rid"], notes_chars=10)
    assert unpublished(first) == 4

    second = Stack(tmp_path / "data", mqtt_max_packet_bytes=1024 * 1024).start()
    try:
        wait_for(lambda: unpublished(second) == 0, timeout=30)
        assert row(second, a["rid"], too_large).dead_letter_reason.startswith("too_large")  # type: ignore[union-attr]
        refused_row = row(second, a["rid"], refused)
        assert refused_row.attempts == 5, "one more refusal after the restart, not five"
        assert refused_row.dead_letter_reason.startswith("refused")  # type: ignore[union-attr]
        assert row(second, a["rid"], follow_a).dead_letter_at is None
        assert row(second, b["rid"], follow_b).dead_letter_at is None
    finally:
        second.stop()


def test_the_running_bridge_prunes_published_events_and_events_after_answers_410(tmp_path: Path):
    """The sweeper of `orderbus up` prunes (retention of 3 s here); a client behind the pruned seqs
    is sent to the snapshot, and a client at the snapshot's seq goes on with new events."""
    stack = Stack(tmp_path / "data", outbox_retention_days=3 / 86_400).start()
    try:
        a = shop(stack, "A")
        order(a)
        wait_for(lambda: unpublished(stack) == 0)
        events = a["admin"].get(f"/restaurants/{a['rid']}/events")
        assert events.status_code == 200 and events.json(), "nothing is pruned before the retention period"

        def gone() -> httpx.Response | None:
            response = a["admin"].get(f"/restaurants/{a['rid']}/events", params={"after": 0})
            return response if response.status_code == 410 else None

        answer = wait_for(gone, timeout=15, interval=0.2).json()
        snapshot = a["admin"].get(answer["snapshot"].removeprefix("/api/v1"))
        assert snapshot.status_code == 200 and snapshot.json()["seq"] >= answer["pruned_through"]
        seq = snapshot.json()["seq"]
        assert events_after(a, seq) == []
        order(a)
        after = events_after(a, seq)
        assert after[0]["seq"] == seq + 1 and after[0]["type"] == "new_order"
    finally:
        stack.stop()
