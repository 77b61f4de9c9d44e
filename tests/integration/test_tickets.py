"""Kitchen tickets through the real bus: cut per station, voided, reprinted, and tracked to an outcome."""

from __future__ import annotations

import json

import pytest
from sqlmodel import col, select

from core.metrics import TICKETS
from core.models import Ticket
from core.unit_of_work import UnitOfWork
from tests.support import ShiftedClock, Stack, Subscriber, wait_for


@pytest.fixture
def kitchen(stack: Stack):
    """Restaurant 1 with a grill item, a bar item and an item without a station; restaurant 2 beside it."""
    rid = stack.add_restaurant("A", "a@example.com")
    other = stack.add_restaurant("B", "b@example.com")
    return {
        "rid": rid,
        "other": other,
        "staff": stack.http(stack.api_token("staff-a", "staff", rid)),
        "burger": stack.add_menu_item(rid, "Burger", station="grill"),
        "spritz": stack.add_menu_item(rid, "Spritz", station="bar"),
        "bread": stack.add_menu_item(rid, "Bread"),
        "grill_token": stack.add_device(rid, "grill-1", "printer", station="grill"),
        "other_burger": stack.add_menu_item(other, "Burger", station="grill"),
    }


def place(kitchen: dict, *lines: tuple[str, int], **extra: object) -> dict:
    body = {"items": [{"menu_item_id": kitchen[name], "quantity": qty} for name, qty in lines], **extra}
    response = kitchen["staff"].post(f"/restaurants/{kitchen['rid']}/orders", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def station_subscriber(stack: Stack, subscribers: list[Subscriber], rid: int, station: str) -> Subscriber:
    token = stack.mqtt_token(f"printer-{station}", "printer", rid, station=station)
    sub = Subscriber(stack.settings.mqtt_port, f"printer-{station}", token)
    subscribers.append(sub)
    assert sub.connect() == 0
    sub.subscribe(f"restaurant/{rid}/kitchen/{station}/tickets")
    return sub


def tickets_of(stack: Stack, order_id: int) -> list[Ticket]:
    with UnitOfWork(stack.parts.engine) as uow:
        rows = list(uow.session.exec(select(Ticket).where(Ticket.order_id == order_id).order_by(col(Ticket.id))))
        uow.session.expunge_all()  # readable after the unit of work ends
        return rows


def test_an_order_becomes_one_ticket_per_station_on_that_stations_topic(stack: Stack, subscribers, kitchen):
    rid = kitchen["rid"]
    grill, bar, pantry = (station_subscriber(stack, subscribers, rid, s) for s in ("grill", "bar", "kitchen"))
    order = place(kitchen, ("burger", 2), ("spritz", 1), ("bread", 1), table_name="T12", server_name="Ana")

    (grill_ticket,) = grill.collect(1)
    (bar_ticket,) = bar.collect(1)
    (pantry_ticket,) = pantry.collect(1)  # no station on its category: the default station
    ticket = grill_ticket.json()["data"]["ticket"]
    assert grill_ticket.json()["type"] == "kitchen_ticket"
    assert ticket["order_id"] == order["id"] and ticket["kind"] == "new" and ticket["station"] == "grill"
    assert ticket["table_name"] == "T12" and ticket["server_name"] == "Ana"
    assert [(i["name"], i["quantity"]) for i in ticket["items"]] == [("Burger", 2)]
    assert [i["name"] for i in bar_ticket.json()["data"]["ticket"]["items"]] == ["Spritz"]
    assert [i["name"] for i in pantry_ticket.json()["data"]["ticket"]["items"]] == ["Bread"]
    rows = tickets_of(stack, order["id"])
    assert sorted((t.station, t.kind, t.state) for t in rows) == [
        ("bar", "new", "sent"),
        ("grill", "new", "sent"),
        ("kitchen", "new", "sent"),
    ]
    assert grill.drain() == [] and bar.drain() == []  # nothing else on a ticket topic


def test_cancelling_voids_and_reprint_marks_tickets(stack: Stack, subscribers, kitchen):
    rid, staff = kitchen["rid"], kitchen["staff"]
    grill = station_subscriber(stack, subscribers, rid, "grill")
    order = place(kitchen, ("burger", 1))
    assert grill.collect(1)[0].json()["data"]["ticket"]["kind"] == "new"

    assert staff.post(f"/restaurants/{rid}/orders/{order['id']}/reprint").status_code == 200
    reprint = grill.collect(1)[0].json()["data"]["ticket"]
    assert reprint["kind"] == "reprint" and reprint["order_id"] == order["id"]

    assert (
        staff.post(f"/restaurants/{rid}/orders/{order['id']}/status", json={"status": "cancelled"}).status_code == 200
    )
    void = grill.collect(1)[0].json()["data"]["ticket"]
    assert void["kind"] == "void" and void["version"] == 2

    refused = staff.post(f"/restaurants/{rid}/orders/{order['id']}/reprint")  # a closed order
    assert refused.status_code == 409 and "only open orders" in refused.text
    assert grill.drain() == []
    listed = staff.get(f"/restaurants/{rid}/orders/{order['id']}/tickets").json()
    assert [t["kind"] for t in listed["data"]] == ["void", "reprint", "new"] and listed["count"] == 3
    other_staff = stack.http(stack.api_token("staff-b", "staff", kitchen["other"]))
    assert other_staff.post(f"/restaurants/{rid}/orders/{order['id']}/reprint").status_code == 403


def notifications(sub: Subscriber, kind: str, quiet: float = 0.3) -> list[dict]:
    """The notifications of one kind among what `sub` received since the last call."""
    bodies = [m.json() for m in sub.drain(quiet)]
    return [
        b["data"]["notification"]
        for b in bodies
        if b["type"] == "notification" and b["data"]["notification"]["kind"] == kind
    ]


def notifications_watcher(stack: Stack, subscribers: list[Subscriber], rid: int) -> Subscriber:
    """An admin dashboard's view of the restaurant's notifications."""
    notes = Subscriber(stack.settings.mqtt_port, "dash", stack.mqtt_token("dash", "admin", rid))
    subscribers.append(notes)
    assert notes.connect() == 0
    notes.subscribe(f"restaurant/{rid}/notifications")
    return notes


def printer_client(stack: Stack, subscribers: list[Subscriber], kitchen: dict) -> Subscriber:
    """The registered grill printer, as a plain MQTT client that publishes reports by hand."""
    sub = Subscriber(stack.settings.mqtt_port, "grill-1", kitchen["grill_token"])
    subscribers.append(sub)
    assert sub.connect() == 0
    sub.subscribe(f"restaurant/{kitchen['rid']}/devices/grill-1/commands")
    return sub


def report(sub: Subscriber, rid: int, body: object) -> None:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    sub.client.publish(f"restaurant/{rid}/devices/grill-1/events", payload, qos=1).wait_for_publish(5)


def ticket_state(stack: Stack, ticket: Ticket) -> str:
    """The ticket's state as stored now."""
    with UnitOfWork(stack.parts.engine) as uow:
        stored = uow.session.get(Ticket, ticket.id)
        assert stored is not None
        return stored.state


def counted(outcome: str) -> float:
    return TICKETS.labels(outcome=outcome)._value.get()


def test_printed_and_failed_reports_are_recorded_and_a_failure_notifies_once(stack: Stack, subscribers, kitchen):
    rid = kitchen["rid"]
    printer = printer_client(stack, subscribers, kitchen)
    notes = notifications_watcher(stack, subscribers, rid)
    first = tickets_of(stack, place(kitchen, ("burger", 1))["id"])[0]
    second = tickets_of(stack, place(kitchen, ("burger", 1))["id"])[0]
    printed_before, failed_before = counted("printed"), counted("failed")

    report(printer, rid, {"type": "printed", "ticket_id": first.id, "printer": "primary", "ts": "x"})
    report(printer, rid, {"type": "printed", "ticket_id": first.id, "printer": "primary", "ts": "x"})  # repeated
    failure = {"type": "failed", "ticket_id": second.id, "reason": "paper_out", "detail": "DLE EOT 4", "ts": "x"}
    report(printer, rid, failure)
    report(printer, rid, failure)
    wait_for(lambda: ticket_state(stack, first) == "printed" and ticket_state(stack, second) == "failed")

    (note,) = wait_for(lambda: notifications(notes, "ticket_failed"))
    assert "paper_out" in note["body"]
    assert counted("printed") == printed_before + 1 and counted("failed") == failed_before + 1
    report(printer, rid, {"type": "printed", "ticket_id": second.id, "printer": "backup", "ts": "x"})  # late print
    wait_for(lambda: ticket_state(stack, second) == "printed")
    (resolved,) = wait_for(lambda: notifications(notes, "ticket_failed"))  # once per ticket, not per report
    assert (resolved["id"], resolved["read"]) == (note["id"], True)  # printed after all: the problem is gone


def test_a_printer_problem_notifies_once_for_the_primary_and_once_for_the_backup(stack: Stack, subscribers, kitchen):
    rid = kitchen["rid"]
    printer = printer_client(stack, subscribers, kitchen)
    notes = notifications_watcher(stack, subscribers, rid)

    def status(printer_name: str | None, **fields: object) -> None:
        body = {"type": "printer_status", "online": True, "paper": "ok", "cover_open": False, **fields}
        report(printer, rid, body if printer_name is None else {**body, "printer": printer_name})

    status(None, online=False, paper="out")  # an agent that does not name the printer speaks for the primary
    status("primary", online=False, paper="out")  # the same problem again
    (note,) = wait_for(lambda: notifications(notes, "printer_problem"))
    assert note["title"] == "grill-1: paper out"
    status("backup", cover_open=True)
    status("backup", cover_open=True)
    (note,) = wait_for(lambda: notifications(notes, "printer_problem"))
    assert note["title"] == "grill-1 backup: cover open" and "cannot take over" in note["body"]
    status("primary")  # fixed: no notification
    status("primary", error=True)  # a new problem: one more
    (note,) = wait_for(lambda: notifications(notes, "printer_problem"))
    assert note["title"] == "grill-1: printer error"
    assert notifications(notes, "printer_problem", quiet=0.5) == []
    assert [m.json() for m in printer.drain(0.3) if m.topic.endswith("/commands")] == []  # no error replies


def test_a_ticket_nobody_confirms_becomes_unacknowledged_and_notifies(stack: Stack, subscribers, kitchen):
    """The deadline is the bus's clock, moved past it rather than waited for; the sweeper runs for real."""
    rid = kitchen["rid"]
    clock = ShiftedClock()
    stack.set_ticket_clock(clock)
    notes = notifications_watcher(stack, subscribers, rid)
    before = counted("unacknowledged")
    (ticket,) = tickets_of(stack, place(kitchen, ("burger", 1))["id"])
    assert ticket_state(stack, ticket) == "sent"

    clock.ahead = stack.settings.ticket_ack_seconds + 1
    wait_for(lambda: ticket_state(stack, ticket) == "unacknowledged", timeout=5)
    assert len(wait_for(lambda: notifications(notes, "ticket_unacknowledged"), timeout=5)) == 1
    assert counted("unacknowledged") == before + 1
    assert notifications(notes, "ticket_unacknowledged", quiet=1.5) == []  # once, not on every sweep


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not_json"),
        (b"[1, 2]", "bad_type"),
        ({"type": "printed"}, "bad_type"),  # no ticket id
        ({"type": "printed", "ticket_id": "1"}, "bad_type"),
        ({"type": "printed", "ticket_id": True}, "bad_type"),
        ({"type": "jammed", "ticket_id": 1}, "bad_type"),
        ({"type": "failed", "ticket_id": "TICKET", "reason": "on fire"}, "bad_type"),
        ({"type": "printed", "ticket_id": 999_999}, "refused"),  # no such ticket
        ({"type": "printer_status", "online": "yes", "paper": "ok"}, "bad_type"),
        ({"type": "printer_status", "online": True, "paper": "wet"}, "bad_type"),
        ({"type": "printer_status", "online": True, "paper": "ok", "error": "jam"}, "bad_type"),
        ({"type": "printer_status", "online": True, "paper": "ok", "printer": "spare"}, "bad_type"),
        (b"{" + b" " * 5000 + b"}", "too_large"),
    ],
)
def test_bad_printer_reports_get_an_error_reply_and_change_nothing(stack: Stack, subscribers, kitchen, body, reason):
    rid = kitchen["rid"]
    printer = printer_client(stack, subscribers, kitchen)
    (ticket,) = tickets_of(stack, place(kitchen, ("burger", 1))["id"])
    if isinstance(body, dict) and body.get("ticket_id") == "TICKET":
        body = {**body, "ticket_id": ticket.id}
    report(printer, rid, body)
    (reply,) = printer.collect(1)
    assert reply.json()["type"] == "error" and reply.json()["reason"] == reason, reply.json()
    assert reply.json()["topic"] == f"restaurant/{rid}/devices/grill-1/events"
    assert ticket_state(stack, ticket) == "sent"


def test_a_printer_cannot_confirm_another_restaurants_or_another_stations_ticket(stack: Stack, subscribers, kitchen):
    rid, other = kitchen["rid"], kitchen["other"]
    printer = printer_client(stack, subscribers, kitchen)
    other_staff = stack.http(stack.api_token("staff-b", "staff", other))
    foreign = other_staff.post(
        f"/restaurants/{other}/orders", json={"items": [{"menu_item_id": kitchen["other_burger"], "quantity": 1}]}
    ).json()
    (foreign_ticket,) = tickets_of(stack, foreign["id"])
    (bar_ticket,) = tickets_of(stack, place(kitchen, ("spritz", 1))["id"])

    report(printer, rid, {"type": "printed", "ticket_id": foreign_ticket.id})
    assert printer.collect(1)[0].json()["reason"] == "refused"
    report(printer, rid, {"type": "printed", "ticket_id": bar_ticket.id})
    assert printer.collect(1)[0].json()["reason"] == "wrong_station"
    assert ticket_state(stack, foreign_ticket) == "sent" and ticket_state(stack, bar_ticket) == "sent"
