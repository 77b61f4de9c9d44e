"""The ticket deadline as a service on a real SQLite file, with the clock as an argument.

No broker and no sweeper thread: the service decides which tickets are late, the test says when
"now" is. The orders come in through the in-process REST app, the way they do in production."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine
from sqlmodel import col, select

from core.models import Ticket, utcnow
from core.services.tickets import expire_unacknowledged
from core.unit_of_work import UnitOfWork
from tests.support import App

DEADLINE = 30.0


def place_grill_order(app: App) -> tuple[int, int]:
    """A restaurant with one grill item and one order of it: (restaurant id, order id)."""
    rid = app.add_restaurant("A", "a@example.com")
    item = app.add_menu_item(rid, "Burger", station="grill")
    staff = app.http(app.api_token("user-s", "staff", rid))
    order = staff.post(f"/restaurants/{rid}/orders", json={"items": [{"menu_item_id": item, "quantity": 1}]})
    assert order.status_code == 201, order.text
    return rid, order.json()["id"]


def expire_at(engine: Engine, seconds_from_now: float) -> int:
    """One sweep pass, as the sweeper runs it, with "now" that far from the present."""
    with UnitOfWork(engine) as uow:
        late = expire_unacknowledged(uow, DEADLINE, utcnow() + timedelta(seconds=seconds_from_now))
        uow.commit()
    return late


def states(engine: Engine, order_id: int) -> list[str]:
    with UnitOfWork(engine) as uow:
        query = select(Ticket).where(Ticket.order_id == order_id).order_by(col(Ticket.id))
        return [ticket.state for ticket in uow.session.exec(query)]


def test_a_ticket_is_late_only_past_the_deadline_and_notifies_once(app: App, engine: Engine):
    rid, order_id = place_grill_order(app)
    admin = app.http(app.api_token("user-a", "admin", rid))
    assert states(engine, order_id) == ["sent"]

    assert expire_at(engine, DEADLINE - 1) == 0
    assert states(engine, order_id) == ["sent"]
    assert expire_at(engine, DEADLINE + 1) == 1
    assert states(engine, order_id) == ["unacknowledged"]
    assert expire_at(engine, DEADLINE + 60) == 0  # already marked: not again

    notes = admin.get(f"/restaurants/{rid}/notifications").json()["data"]
    assert [note["kind"] for note in notes] == ["ticket_unacknowledged"]
    assert f"order {order_id}" in notes[0]["title"]
    events = admin.get(f"/restaurants/{rid}/events", params={"limit": 1000}).json()
    told = [e["data"]["notification"]["kind"] for e in events if e["type"] == "notification"]
    assert told == ["ticket_unacknowledged"]


def test_a_printed_ticket_is_never_late(app: App, engine: Engine, uow: UnitOfWork):
    _rid, order_id = place_grill_order(app)
    (ticket,) = uow.session.exec(select(Ticket).where(Ticket.order_id == order_id)).all()
    ticket.state = "printed"
    uow.session.add(ticket)
    uow.commit()
    assert expire_at(engine, DEADLINE + 60) == 0
    assert states(engine, order_id) == ["printed"]
