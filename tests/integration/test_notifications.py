"""Notifications over the in-process REST app on a real SQLite file: "mark all read", and a ticket
that prints after all clearing the notification of its problem (with an event, so every screen agrees)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from core.models import Notification, Ticket
from core.services import tickets
from core.services.notifications import notify
from core.unit_of_work import UnitOfWork
from tests.integration.test_ticket_deadline import DEADLINE, expire_at, place_grill_order
from tests.support import App


def add_notes(engine: Engine, rid: int, n: int) -> list[int]:
    with UnitOfWork(engine) as uow:
        ids = [notify(uow, rid, kind="ticket_unacknowledged", title=f"note {i}").id for i in range(n)]
        uow.commit()
    return [i for i in ids if i is not None]


def unread(engine: Engine, rid: int) -> list[int]:
    with UnitOfWork(engine) as uow:
        query = select(Notification).where(Notification.restaurant_id == rid, Notification.read == False)  # noqa: E712
        return sorted(note.id for note in uow.session.exec(query) if note.id is not None)


def test_mark_all_read_marks_up_to_the_newest_seen_then_the_rest(app: App, engine: Engine):
    rid = app.add_restaurant("A", "a@example.com")
    other = app.add_restaurant("B", "b@example.com")
    staff = app.http(app.api_token("user-s", "staff", rid))
    ids = add_notes(engine, rid, 5)
    theirs = add_notes(engine, other, 2)

    answer = staff.post(f"/restaurants/{rid}/notifications/read-all", params={"up_to": ids[2]})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"marked": 3}
    assert unread(engine, rid) == ids[3:]  # came after what the screen showed: still unread
    listed = staff.get(f"/restaurants/{rid}/notifications", params={"unread": True}).json()
    assert [note["id"] for note in listed["data"]] == sorted(ids[3:], reverse=True)

    assert staff.post(f"/restaurants/{rid}/notifications/read-all").json() == {"marked": 2}
    assert staff.post(f"/restaurants/{rid}/notifications/read-all").json() == {"marked": 0}  # again: nothing left
    assert unread(engine, rid) == []
    assert unread(engine, other) == theirs  # another restaurant's are not touched


def test_the_dashboard_snapshot_lists_the_unread_notifications_beyond_the_last_fifty(app: App, engine: Engine):
    rid = app.add_restaurant("A", "a@example.com")
    staff = app.http(app.api_token("user-s", "staff", rid))
    ids = add_notes(engine, rid, 70)
    assert staff.post(f"/restaurants/{rid}/notifications/read-all", params={"up_to": ids[9]}).json() == {"marked": 10}
    snapshot = staff.get(f"/restaurants/{rid}/dashboard")
    assert snapshot.status_code == 200, snapshot.text
    assert [note["id"] for note in snapshot.json()["notifications"]] == sorted(ids[10:], reverse=True)


@pytest.mark.parametrize("up_to", ["0", "-1", "x", "1.5", "99999999999999999999"])
def test_mark_all_read_refuses_a_bad_up_to_and_changes_nothing(app: App, engine: Engine, up_to: str):
    rid = app.add_restaurant("A", "a@example.com")
    staff = app.http(app.api_token("user-s", "staff", rid))
    ids = add_notes(engine, rid, 2)
    answer = staff.post(f"/restaurants/{rid}/notifications/read-all", params={"up_to": up_to})
    assert answer.status_code == 422, answer.text
    assert unread(engine, rid) == ids


def test_another_restaurants_caller_cannot_mark_all_read(app: App, engine: Engine):
    rid = app.add_restaurant("A", "a@example.com")
    other = app.add_restaurant("B", "b@example.com")
    ids = add_notes(engine, rid, 3)
    outsider = app.http(app.api_token("user-b", "admin", other))
    answer = outsider.post(f"/restaurants/{rid}/notifications/read-all")
    assert answer.status_code == 403, answer.text
    assert app.http(None).post(f"/restaurants/{rid}/notifications/read-all").status_code == 401
    assert unread(engine, rid) == ids


def test_a_late_ticket_that_prints_after_all_clears_its_notification(app: App, engine: Engine):
    rid, order_id = place_grill_order(app)
    admin = app.http(app.api_token("user-a", "admin", rid))
    steak = app.add_menu_item(rid, "Steak", station="grill")
    second = admin.post(f"/restaurants/{rid}/orders", json={"items": [{"menu_item_id": steak, "quantity": 1}]})
    assert second.status_code == 201, second.text
    assert expire_at(engine, DEADLINE + 1) == 2
    notes = admin.get(f"/restaurants/{rid}/notifications", params={"unread": True}).json()["data"]
    assert len(notes) == 2

    with UnitOfWork(engine) as uow:
        (ticket,) = uow.session.exec(select(Ticket).where(Ticket.order_id == order_id)).all()
        tickets.record_printed(uow, tickets.get_ticket(uow, rid, ticket.id or 0), "printer-1")
        uow.commit()

    left = admin.get(f"/restaurants/{rid}/notifications", params={"unread": True}).json()["data"]
    assert [note["title"] for note in left] == [f"Ticket for order {second.json()['id']} not confirmed at grill"]
    told = [
        e["data"]["notification"]
        for e in admin.get(f"/restaurants/{rid}/events", params={"limit": 1000}).json()
        if e["type"] == "notification"
    ]
    assert [(note["title"], note["read"]) for note in told][-1] == (
        f"Ticket for order {order_id} not confirmed at grill",
        True,
    )
    assert len(told) == 3  # two problems, one resolved; printing again resolves nothing more

    with UnitOfWork(engine) as uow:
        (ticket,) = uow.session.exec(select(Ticket).where(Ticket.order_id == order_id)).all()
        tickets.record_printed(uow, tickets.get_ticket(uow, rid, ticket.id or 0), "printer-1")
        uow.commit()
    events = admin.get(f"/restaurants/{rid}/events", params={"limit": 1000}).json()
    assert len([e for e in events if e["type"] == "notification"]) == 3
