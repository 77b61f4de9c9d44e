"""Notifications as shared state, on SQLite and on PostgreSQL: marking read (one or all) and dismissing
are `notification_updated` events, so every dashboard of the restaurant agrees; dismissed ones leave
the list; read ones are pruned by the sweeper after the retention period, unread ones never."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text, update
from sqlmodel import col

from bridge.retention import prune_notifications
from bridge.sweeper import Sweeper
from config.settings import Settings
from core.models import Notification, utcnow
from core.services.notifications import notify
from core.unit_of_work import UnitOfWork
from tests.support import App, ShiftedClock


@pytest.fixture
def site(db: Engine, tmp_path) -> dict[str, Any]:
    app = App(Settings(data_dir=tmp_path / "data"), db)
    rid = app.add_restaurant("A", "a@example.com")
    other = app.add_restaurant("B", "b@example.com")
    return {"app": app, "rid": rid, "other": other, "staff": app.http(app.api_token("user-s", "staff", rid))}


def add_notes(engine: Engine, rid: int, n: int) -> list[int]:
    with UnitOfWork(engine) as uow:
        ids = [notify(uow, rid, kind="low_stock", title=f"note {i}").id for i in range(n)]
        uow.commit()
    return [i for i in ids if i is not None]


def updates(site: dict[str, Any], after: int = 0) -> list[dict[str, Any]]:
    answer = site["staff"].get(f"/restaurants/{site['rid']}/events", params={"after": after, "limit": 1000})
    return [event["data"] for event in answer.json() if event["type"] == "notification_updated"]


def rows(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        found = connection.execute(
            text("SELECT id, read, read_at IS NOT NULL, dismissed_at IS NOT NULL FROM notification")
        )
        return sorted(tuple(row) for row in found)


def outbox(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT count(*) FROM outbox_event")).scalar_one()


def test_reading_and_dismissing_are_events_every_dashboard_applies(site):
    engine, rid, staff = site["app"].engine, site["rid"], site["staff"]
    base = f"/restaurants/{rid}/notifications"
    a, b, c, d = add_notes(engine, rid, 4)

    read = staff.post(f"{base}/{a}/read")
    assert read.status_code == 200 and read.json()["read"] and read.json()["read_at"] is not None
    assert updates(site)[-1] | {"at": None} == {"action": "read", "ids": [a], "at": None}
    seen = outbox(engine)
    assert staff.post(f"{base}/{a}/read").status_code == 200 and outbox(engine) == seen  # again: nothing to tell

    assert staff.post(f"{base}/read-all", params={"up_to": c}).json() == {"marked": 2}
    assert updates(site)[-1]["ids"] == [b, c]

    dismissed = staff.post(f"{base}/{d}/dismiss")  # unread: dismissing reads it too
    assert dismissed.status_code == 200 and dismissed.json()["read"] and dismissed.json()["dismissed_at"]
    assert (updates(site)[-1]["action"], updates(site)[-1]["ids"]) == ("dismissed", [d])
    seen = outbox(engine)
    assert staff.post(f"{base}/{d}/dismiss").status_code == 200 and outbox(engine) == seen

    listed = staff.get(base).json()
    assert ([n["id"] for n in listed["data"]], listed["count"]) == ([c, b, a], 3)  # the dismissed one is gone

    assert staff.post(f"{base}/dismiss-read", params={"up_to": b}).json() == {"dismissed": 2}
    assert (updates(site)[-1]["action"], updates(site)[-1]["ids"]) == ("dismissed", [a, b])
    assert staff.post(f"{base}/dismiss-read").json() == {"dismissed": 1}
    assert staff.get(base).json() == {"data": [], "count": 0}
    assert [u["action"] for u in updates(site)] == ["read", "read", "dismissed", "dismissed", "dismissed"]


def test_mark_all_read_of_many_is_told_in_events_of_at_most_a_thousand_ids(site):
    engine, rid = site["app"].engine, site["rid"]
    ids = add_notes(engine, rid, 1203)
    assert site["staff"].post(f"/restaurants/{rid}/notifications/read-all").json() == {"marked": 1203}
    told = updates(site, after=1203)  # after the notifications' own events
    assert [len(u["ids"]) for u in told] == [1000, 203]
    assert [i for u in told for i in u["ids"]] == ids


def test_bad_notification_requests_are_refused_and_write_nothing(site):
    app, engine, rid, other, staff = site["app"], site["app"].engine, site["rid"], site["other"], site["staff"]
    (mine,) = add_notes(engine, rid, 1)
    (theirs,) = add_notes(engine, other, 1)
    before, seen = rows(engine), outbox(engine)
    base = f"/restaurants/{rid}/notifications"
    for action in ("read", "dismiss"):
        assert staff.post(f"{base}/{theirs}/{action}").status_code == 404  # another restaurant's
        assert staff.post(f"{base}/99999/{action}").status_code == 404
        for bad in ("0", "x", "-3"):
            answer = staff.post(f"{base}/{bad}/{action}")
            assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["path", "notification_id"]
        outsider = app.http(app.api_token("user-b", "staff", other))
        assert outsider.post(f"{base}/{mine}/{action}").status_code == 403
    for bad in ("0", "x", "1.5"):
        answer = staff.post(f"{base}/dismiss-read", params={"up_to": bad})
        assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["query", "up_to"]
    assert app.http(None).post(f"{base}/dismiss-read").status_code == 401
    assert (rows(engine), outbox(engine)) == (before, seen)


def test_the_sweeper_prunes_notifications_read_before_the_retention_period_and_keeps_the_rest(site):
    engine, rid, other = site["app"].engine, site["rid"], site["other"]
    old_read, old_unread, new_read, dismissed = add_notes(engine, rid, 4)
    (theirs_old_read,) = add_notes(engine, other, 1)
    staff = site["staff"]
    for note in (old_read, new_read):
        staff.post(f"/restaurants/{rid}/notifications/{note}/read")
    staff.post(f"/restaurants/{rid}/notifications/{dismissed}/dismiss")
    now = utcnow()
    with engine.begin() as connection:
        connection.execute(update(Notification).where(col(Notification.id) == theirs_old_read).values(read=True))
        for note, days in [(old_read, 31), (theirs_old_read, 40), (dismissed, 45), (new_read, 29)]:
            connection.execute(
                update(Notification).where(col(Notification.id) == note).values(read_at=now - timedelta(days=days))
            )
        connection.execute(  # created long ago, never read: stays
            update(Notification).where(col(Notification.id) == old_unread).values(created_at=now - timedelta(days=90))
        )
    settings = Settings(data_dir=site["app"].settings.data_dir)
    sweeper = Sweeper(lambda: UnitOfWork(engine), [prune_notifications(settings.notification_retention_days)])
    sweeper.run_once()
    assert [row[0] for row in rows(engine)] == sorted([old_unread, new_read])

    clock = ShiftedClock(ahead=timedelta(days=2).total_seconds())  # two days on, the other read one is old too
    Sweeper(lambda: UnitOfWork(engine), [prune_notifications(30, clock, batch_size=1)]).run_once()
    assert [row[0] for row in rows(engine)] == [old_unread]
