"""Outbox retention and dead letters on a temporary SQLite file: pruning takes only a prefix of each
restaurant's published, old events, in small batches, on an injected clock; `/events?after=` answers
410 naming the snapshot for a pruned seq, refuses bad input with 422, and marks a dead letter."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from bridge.retention import prune_outbox
from bridge.routing import Publication, encode, packet_size
from bridge.sweeper import Sweeper
from broker.limits import Limits
from config.settings import Settings
from core.events import Event
from core.models import OutboxEvent, utcnow
from core.services import outbox
from core.unit_of_work import UnitOfWork
from tests.support import App, ShiftedClock

DAY = timedelta(days=1)


def emit(engine: Engine, rid: int, count: int) -> list[int]:
    with UnitOfWork(engine) as uow:
        seqs = [uow.emit(rid, Event("menu_updated", {"action": "updated", "n": n})).seq for n in range(count)]
        uow.commit()
    return seqs


def publish(engine: Engine, rid: int, seqs: list[int], at: datetime) -> None:
    with Session(engine) as session:
        session.execute(
            update(OutboxEvent)
            .where(col(OutboxEvent.restaurant_id) == rid, col(OutboxEvent.seq).in_(seqs))
            .values(published_at=at)
        )
        session.commit()


def kept(engine: Engine, rid: int) -> list[int]:
    with Session(engine) as session:
        return list(session.exec(select(OutboxEvent.seq).where(OutboxEvent.restaurant_id == rid).order_by("seq")))


def prune(engine: Engine, before: datetime, batch: int = 500) -> int:
    with UnitOfWork(engine) as uow:
        deleted = outbox.prune(uow, before, batch)
        uow.commit()
    return deleted


@pytest.fixture
def two(app: App) -> tuple[int, int]:
    return app.add_restaurant("A", "a@example.com"), app.add_restaurant("B", "b@example.com")


def test_only_published_events_older_than_the_cutoff_go_as_a_prefix_per_restaurant(engine: Engine, two):
    a, b = two
    now = utcnow()
    emit(engine, a, 6)
    emit(engine, b, 3)
    publish(engine, a, [1, 2], now - 10 * DAY)
    publish(engine, a, [4, 5], now - 10 * DAY)  # seq 3 is not published yet: it keeps 4 and 5
    publish(engine, a, [6], now - 1 * DAY)
    publish(engine, b, [1, 2, 3], now - 10 * DAY)
    assert prune(engine, now - 7 * DAY) == 5
    assert kept(engine, a) == [3, 4, 5, 6]
    assert kept(engine, b) == []
    assert prune(engine, now - 7 * DAY) == 0, "nothing else is old enough and published"
    publish(engine, a, [3], now - 9 * DAY)
    assert prune(engine, now - 7 * DAY) == 3
    assert kept(engine, a) == [6], "the recent event stays"


def test_pruning_goes_in_small_batches(engine: Engine, two):
    a, _ = two
    emit(engine, a, 25)
    publish(engine, a, list(range(1, 26)), utcnow() - 30 * DAY)
    assert [prune(engine, utcnow() - 7 * DAY, batch=10) for _ in range(4)] == [10, 10, 5, 0]
    assert kept(engine, a) == []


def test_the_sweep_prunes_by_its_clock_after_the_retention_period(engine: Engine, two):
    a, _ = two
    emit(engine, a, 3)
    publish(engine, a, [1, 2, 3], utcnow())
    clock = ShiftedClock()
    sweeper = Sweeper(lambda: UnitOfWork(engine), [prune_outbox(7, clock)])
    clock.ahead = (6 * DAY).total_seconds()
    sweeper.run_once()
    assert kept(engine, a) == [1, 2, 3]
    clock.ahead = (8 * DAY).total_seconds()
    sweeper.run_once()
    assert kept(engine, a) == []


def test_events_after_a_pruned_seq_answer_410_naming_the_snapshot(app: App, engine: Engine, two):
    a, b = two
    admin = app.http(app.api_token("user-a", "admin", a))
    emit(engine, a, 5)
    emit(engine, b, 2)
    publish(engine, a, [1, 2, 3], utcnow() - 10 * DAY)
    prune(engine, utcnow() - 7 * DAY)

    gone = admin.get(f"/restaurants/{a}/events", params={"after": 1})
    assert gone.status_code == 410
    assert gone.json()["pruned_through"] == 3
    assert gone.json()["snapshot"] == f"/api/v1/restaurants/{a}/dashboard"
    snapshot = admin.get(gone.json()["snapshot"].removeprefix("/api/v1")).json()
    assert snapshot["seq"] == 5, "the snapshot to restart from"
    assert [e["seq"] for e in admin.get(f"/restaurants/{a}/events", params={"after": 3}).json()] == [4, 5]
    assert admin.get(f"/restaurants/{a}/events", params={"after": 5}).json() == []
    other = app.http(app.api_token("user-b", "admin", b))
    assert [e["seq"] for e in other.get(f"/restaurants/{b}/events").json()] == [1, 2], "B is untouched"

    publish(engine, a, [4, 5], utcnow() - 9 * DAY)
    prune(engine, utcnow() - 7 * DAY)  # every event of A is gone: the restaurant's seq tells what was
    assert admin.get(f"/restaurants/{a}/events", params={"after": 4}).status_code == 410
    assert admin.get(f"/restaurants/{a}/events", params={"after": 5}).json() == []
    assert admin.get(f"/restaurants/{a}/events", params={"after": 99}).json() == [], "a seq not reached yet"


@pytest.mark.parametrize(
    "params",
    [{"after": -1}, {"after": 2**63}, {"after": 2**64}, {"after": "x"}, {"after": "1.5"}, {"limit": 0}],
)
def test_bad_after_and_limit_are_422(app: App, two, params):
    a, _ = two
    admin = app.http(app.api_token("user-a", "admin", a))
    assert admin.get(f"/restaurants/{a}/events", params=params).status_code == 422


def test_the_largest_after_is_answered(app: App, two):
    a, _ = two
    admin = app.http(app.api_token("user-a", "admin", a))
    assert admin.get(f"/restaurants/{a}/events", params={"after": 2**63 - 1}).json() == []


def test_a_dead_letter_is_served_marked_withheld_and_notified_once(app: App, engine: Engine, two):
    a, _ = two
    [seq] = emit(engine, a, 1)
    with UnitOfWork(engine) as uow:
        row_id = uow.session.exec(select(OutboxEvent.id).where(OutboxEvent.seq == seq)).one()
        assert row_id is not None
        dead = outbox.dead_letter(uow, row_id, "too_large", "a 300000-byte message")
        assert outbox.dead_letter(uow, row_id, "too_large", "again") is None, "already done"
        uow.commit()
    assert dead is not None and dead.published_at is not None
    admin = app.http(app.api_token("user-a", "admin", a))
    first, note = admin.get(f"/restaurants/{a}/events").json()
    assert first["seq"] == seq and first["mqtt_withheld"] is True
    assert note["type"] == "notification" and "mqtt_withheld" not in note
    assert note["data"]["notification"]["kind"] == outbox.DEAD_LETTER_KIND

    with UnitOfWork(engine) as uow:  # the notification itself dead-lettered: no notification about it
        note_id = uow.session.exec(select(OutboxEvent.id).where(OutboxEvent.seq == seq + 1)).one()
        assert note_id is not None
        outbox.dead_letter(uow, note_id, "refused", "the broker dropped the connection")
        uow.commit()
    assert [e["seq"] for e in admin.get(f"/restaurants/{a}/events").json()] == [seq, seq + 1]


def test_payloads_are_utf8_json_not_escapes():
    payload = encode({"notes": "борщ 🍲", "n": 1})
    assert payload == '{"notes":"борщ 🍲","n":1}'.encode()


def test_packet_size_counts_the_fixed_header_topic_packet_id_and_payload():
    assert packet_size(Publication("t", b"x" * 122)) == 1 + 1 + 2 + 1 + 2 + 122  # remaining 127: one length byte
    assert packet_size(Publication("t", b"x" * 123)) == 1 + 2 + 2 + 1 + 2 + 123  # remaining 128: two
    assert packet_size(Publication("t", b"x" * 16_379)) == 1 + 3 + 16_384
    assert packet_size(Publication("é", b"")) == 1 + 1 + 2 + 2 + 2, "the topic counts in UTF-8 bytes"


def test_the_relays_packet_limit_defaults_to_the_embedded_brokers():
    assert Settings().mqtt_max_packet_bytes == Limits().max_packet_bytes
    assert Settings().outbox_retention_days == 7
    with pytest.raises(ValueError):
        Settings(outbox_retention_days=0)
