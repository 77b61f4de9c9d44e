"""The printer agent on the real bus: orders placed through the API → relay → broker → agent → a TCP printer.

The printer is tests/printer_emulator.py (a real TCP server speaking enough ESC/POS), the one
part that cannot be real here; everything else is: broker, MQTT session, relay, ingest, SQLite.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select

from core.models import Ticket
from core.unit_of_work import UnitOfWork
from devices.journal import Journal
from devices.printer import PrinterAgent
from devices.printer_io import open_printer
from devices.ticket import parse_envelope
from tests.printer_emulator import PrinterEmulator, printed_order_ids
from tests.support import Received, ShiftedClock, Stack, Subscriber, wait_for

PRINTER_ID = "grill-printer"


@pytest.fixture
def grill(stack: Stack) -> dict:
    rid = stack.add_restaurant("A", "a@example.com")
    return {
        "rid": rid,
        "staff": stack.http(stack.api_token("staff-a", "staff", rid)),
        "burger": stack.add_menu_item(rid, "Burger", station="grill"),
        "token": stack.add_device(rid, PRINTER_ID, "printer", station="grill"),
    }


@pytest.fixture
def emulators() -> Iterator[list[PrinterEmulator]]:
    made: list[PrinterEmulator] = []
    yield made
    for emulator in made:
        emulator.stop()


@pytest.fixture
def agents() -> Iterator[list[PrinterAgent]]:
    made: list[PrinterAgent] = []
    yield made
    for agent in made:
        agent.stop()


def emulator(emulators: list[PrinterEmulator], **state: Any) -> PrinterEmulator:
    made = PrinterEmulator(**state).start()
    emulators.append(made)
    return made


def start_agent(
    stack: Stack,
    agents: list[PrinterAgent],
    grill: dict,
    state_dir: Path,
    primary: PrinterEmulator,
    backup: PrinterEmulator | None = None,
    failover_seconds: float = 10.0,
) -> PrinterAgent:
    agent = PrinterAgent(
        token=grill["token"],
        primary=open_printer(primary.url),
        backup=open_printer(backup.url) if backup else None,
        state_dir=state_dir,
        failover_seconds=failover_seconds,
        host="127.0.0.1",
        port=stack.settings.mqtt_port,
        poll_seconds=0.5,
        retry_seconds=0.2,
        tz=UTC,
    )
    agents.append(agent)
    agent.start()
    tickets_topic = f"restaurant/{grill['rid']}/kitchen/grill/tickets"
    wait_for(lambda: stack.subscribed(tickets_topic, PRINTER_ID))
    return agent


def place(grill: dict, table: str = "T1", quantity: int = 1) -> dict:
    body = {
        "items": [{"menu_item_id": grill["burger"], "quantity": quantity, "modifiers": ["no onion"]}],
        "table_name": table,
        "server_name": "Ana",
    }
    response = grill["staff"].post(f"/restaurants/{grill['rid']}/orders", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def tickets(stack: Stack, rid: int) -> list[Ticket]:
    with UnitOfWork(stack.parts.engine) as uow:
        rows = uow.session.exec(select(Ticket).where(Ticket.restaurant_id == rid).order_by(col(Ticket.id))).all()
        for row in rows:
            uow.session.expunge(row)
        return list(rows)


def printed_orders(printer: PrinterEmulator) -> list[int]:
    """The order ids on the paper, in the order they came out."""
    return printed_order_ids(printer.texts())


def watcher(stack: Stack, subscribers: list[Subscriber], rid: int, topic: str, name: str = "watcher") -> Subscriber:
    sub = Subscriber(stack.settings.mqtt_port, name, stack.mqtt_token(name, "admin", rid))
    subscribers.append(sub)
    assert sub.connect() == 0
    assert sub.subscribe(topic) == 1
    wait_for(lambda: stack.subscribed(topic, name))  # NATS: the SUBACK can come before its consumer exists
    return sub


def events_of(received: list[Received], kind: str) -> list[dict]:
    return [body for body in (m.json() for m in received) if body.get("type") == kind]


def test_a_burst_of_25_tickets_prints_each_once_in_order(stack: Stack, subscribers, agents, emulators, grill, tmp_path):
    """A 20-top fires 25 tickets at once: all on paper, once, in the order they were placed; the bus records each."""
    printer = emulator(emulators)
    start_agent(stack, agents, grill, tmp_path / "printer", printer)
    placed = [place(grill, table=f"T{n}") for n in range(25)]

    wait_for(lambda: len(printer.tickets) >= 25, timeout=60)
    assert printed_orders(printer) == [order["id"] for order in placed]
    wait_for(lambda: all(t.state == "printed" for t in tickets(stack, grill["rid"])), timeout=30)
    rows = tickets(stack, grill["rid"])
    assert len(rows) == 25 and {t.device_id for t in rows} == {PRINTER_ID}
    assert len(printer.tickets) == 25  # nothing printed twice once everything settled
    assert all(text.splitlines()[0] == "GRILL" for text in printer.texts())  # no REPRINT, no BACKUP


def test_paper_out_fails_over_to_the_backup_which_prints_backup_from(
    stack: Stack, subscribers, agents, emulators, grill, tmp_path
):
    rid = grill["rid"]
    events = watcher(stack, subscribers, rid, f"restaurant/{rid}/devices/{PRINTER_ID}/events")
    primary, backup = emulator(emulators, paper="out"), emulator(emulators)
    start_agent(stack, agents, grill, tmp_path / "printer", primary, backup, failover_seconds=1.0)
    order = place(grill, table="T7")

    wait_for(lambda: backup.tickets, timeout=20)
    [text] = backup.texts()
    assert text.splitlines()[0] == " BACKUP FROM GRILL "
    assert f"ORDER #{order['number']}" in text
    assert primary.tickets == [] and b"ORDER" not in bytes(primary.lost)  # nothing was sent to it
    wait_for(lambda: tickets(stack, rid)[0].state == "printed")

    seen = events.drain(0.5)
    statuses = {s["printer"]: (s["online"], s["paper"], s["cover_open"]) for s in events_of(seen, "printer_status")}
    assert statuses == {"primary": (False, "out", False), "backup": (True, "ok", False)}
    [printed] = events_of(seen, "printed")
    assert (printed["ticket_id"], printed["printer"]) == (tickets(stack, rid)[0].id, "backup")
    assert events_of(seen, "failed") == []  # the backup took it: nothing failed

    primary.paper = "ok"  # paper loaded: the primary prints again, unmarked
    wait_for(
        lambda: [s for s in events_of(events.drain(0.3), "printer_status") if s["printer"] == "primary"], timeout=10
    )
    second = place(grill, table="T8")
    wait_for(lambda: primary.tickets, timeout=20)
    assert primary.texts()[0].splitlines()[:2] == ["GRILL", f"ORDER #{second['number']}"]
    assert len(backup.tickets) == 1


def test_without_a_backup_a_failure_is_reported_once_and_the_ticket_prints_when_paper_is_back(
    stack: Stack, subscribers, agents, emulators, grill, tmp_path
):
    rid = grill["rid"]
    events = watcher(stack, subscribers, rid, f"restaurant/{rid}/devices/{PRINTER_ID}/events")
    printer = emulator(emulators, paper="out")
    start_agent(stack, agents, grill, tmp_path / "printer", printer)
    order = place(grill)
    wait_for(lambda: tickets(stack, rid) and tickets(stack, rid)[0].state == "failed", timeout=20)
    assert "paper_out" in tickets(stack, rid)[0].detail
    time.sleep(1.5)  # several retries happen meanwhile (every 0.2 s): still one `failed`
    printer.paper = "ok"
    wait_for(lambda: printer.tickets, timeout=20)
    assert printed_orders(printer) == [order["id"]]
    wait_for(lambda: tickets(stack, rid)[0].state == "printed")
    seen = events.drain(0.5)
    assert [f["reason"] for f in events_of(seen, "failed")] == ["paper_out"]
    assert len(events_of(seen, "printed")) == 1


def test_a_ticket_journaled_as_printing_reprints_after_a_restart_and_a_printed_one_never(
    stack: Stack, subscribers, agents, emulators, grill, tmp_path
):
    """The agent died between sending a ticket and recording it printed: on restart it prints it again, marked."""
    rid = grill["rid"]
    kitchen = Subscriber(stack.settings.mqtt_port, "tablet-1", stack.mqtt_token("tablet-1", "tablet", rid))
    subscribers.append(kitchen)
    assert kitchen.connect() == 0
    assert kitchen.subscribe(f"restaurant/{rid}/kitchen/grill/tickets") == 1
    interrupted, done = place(grill, table="T1"), place(grill, table="T2")
    envelopes = [m.payload for m in kitchen.collect(2)]
    state_dir = tmp_path / "printer"
    journal = Journal(state_dir / f"{PRINTER_ID}.journal.sqlite3")
    first, second = (parse_envelope(payload) for payload in envelopes)
    for ticket in (first, second):
        journal.receive(ticket)
        journal.printing(ticket.id, "primary")
    journal.printed(second.id, "primary")
    journal.mark_reported(second.id)
    journal.close()

    printer = emulator(emulators)
    start_agent(stack, agents, grill, state_dir, printer)
    wait_for(lambda: printer.tickets)
    wait_for(lambda: tickets(stack, rid)[0].state == "printed")
    [text] = printer.texts()
    assert text.splitlines()[:3] == [" REPRINT ", "GRILL", f"ORDER #{interrupted['number']}"]

    # the broker delivers the printed one again (a redelivery after a lost PUBACK): acknowledged, not printed
    service = Subscriber(stack.settings.mqtt_port, "svc-test", stack.mqtt_token("svc-test", "service", None))
    subscribers.append(service)
    assert service.connect() == 0
    service.client.publish(f"restaurant/{rid}/kitchen/grill/tickets", envelopes[1], qos=1).wait_for_publish(5)
    third = place(grill, table="T3")
    wait_for(lambda: len(printer.tickets) == 2)
    assert printed_orders(printer) == [interrupted["id"], third["id"]]
    assert done["id"] not in printed_orders(printer)


BAD_TICKETS = [
    b"{not json",
    b"\xff\xfe\x00",
    b"[1, 2, 3]",
    json.dumps({"type": "new_order", "data": {"order": {"id": 1}}}).encode(),
    json.dumps({"type": "kitchen_ticket", "data": {}}).encode(),
    json.dumps({"type": "kitchen_ticket", "data": {"ticket": {"id": "9001", "kind": "new"}}}).encode(),
    json.dumps({"type": "kitchen_ticket", "data": {"ticket": {"id": 9002, "kind": "new", "items": []}}}).encode(),
]


def bad_ticket(ticket_id: int, **changes: object) -> bytes:
    ticket = {
        "id": ticket_id,
        "kind": "new",
        "order_id": 1,
        "version": 1,
        "station": "grill",
        "created_at": "2026-11-28T19:42:00.123Z",
        "items": [{"name": "Burger", "quantity": 1}],
        **changes,
    }
    return json.dumps({"v": 1, "type": "kitchen_ticket", "data": {"ticket": ticket}}).encode()


def test_bad_ticket_messages_print_nothing_and_do_not_stop_the_agent(
    stack: Stack, subscribers, agents, emulators, grill, tmp_path
):
    rid = grill["rid"]
    events = watcher(stack, subscribers, rid, f"restaurant/{rid}/devices/{PRINTER_ID}/events")
    printer = emulator(emulators)
    agent = start_agent(stack, agents, grill, tmp_path / "printer", printer)
    service = Subscriber(stack.settings.mqtt_port, "svc-test", stack.mqtt_token("svc-test", "service", None))
    subscribers.append(service)
    assert service.connect() == 0
    bad = [
        *BAD_TICKETS,
        bad_ticket(9003, items=[{"name": "Burger", "quantity": "2"}]),  # wrong type
        bad_ticket(9004, kind="urgent"),
        bad_ticket(9005, created_at=None),  # missing
        bad_ticket(9006, notes="x" * 70_000),  # notes far past their bound
        bad_ticket(9007, items=[{"name": "Burger", "quantity": 1}] * 1000),
    ]
    for payload in bad:
        service.client.publish(f"restaurant/{rid}/kitchen/grill/tickets", payload, qos=1).wait_for_publish(5)
    order = place(grill)  # a good ticket after all of them

    wait_for(lambda: printer.tickets, timeout=20)
    wait_for(lambda: tickets(stack, rid)[0].state == "printed")
    assert printed_orders(printer) == [order["id"]]
    assert agent.link.connected.is_set() and agent.worker.backlog == 0
    failed = events_of(events.drain(0.5), "failed")
    assert sorted(f["ticket_id"] for f in failed) == [9002, 9003, 9004, 9005, 9006, 9007]  # those whose id was readable
    assert {f["reason"] for f in failed} == {"error"}
    assert len(printer.tickets) == 1


def printed_once_then_stopped(
    stack: Stack, agents: list[PrinterAgent], emulators: list[PrinterEmulator], grill: dict, tmp_path: Path
) -> tuple[PrinterEmulator, Path, dict]:
    """An agent that printed one order (returned) and then stopped cleanly: its printer, its state."""
    printer = emulator(emulators)
    state_dir = tmp_path / "printer"
    first_run = start_agent(stack, agents, grill, state_dir, printer)
    before = place(grill, table="T0")
    wait_for(lambda: printer.tickets)
    first_run.stop()
    agents.remove(first_run)
    wait_for(lambda: stack.device(PRINTER_ID).presence == "offline")
    return printer, state_dir, before


def test_an_agent_offline_for_90_seconds_gets_every_missed_ticket_on_return_once_in_order(
    stack: Stack, agents, emulators, grill, tmp_path
):
    """The broker keeps the printer's persistent session and queues its tickets while it is away. What the
    90 s change is the bus's view: every missed ticket goes past its deadline (by the bus's clock, moved
    on rather than waited for), is marked `unacknowledged`, and still prints once, in order, on return."""
    rid = grill["rid"]
    clock = ShiftedClock()
    stack.set_ticket_clock(clock)
    printer, state_dir, before = printed_once_then_stopped(stack, agents, emulators, grill, tmp_path)

    missed = [place(grill, table=f"T{n}") for n in range(1, 10)]  # orders keep coming while it is away
    wait_for(lambda: len(tickets(stack, rid)) == 10)
    time.sleep(1.5)  # a sweep or more at the bus's present time: nothing is late yet
    assert [t.state for t in tickets(stack, rid)] == ["printed"] + ["sent"] * 9
    clock.ahead = 90
    assert clock.ahead > stack.settings.ticket_ack_seconds
    wait_for(lambda: [t.state for t in tickets(stack, rid)] == ["printed"] + ["unacknowledged"] * 9)
    assert len(printer.tickets) == 1

    start_agent(stack, agents, grill, state_dir, printer)
    wait_for(lambda: len(printer.tickets) >= 10, timeout=60)
    assert printed_orders(printer) == [before["id"], *(order["id"] for order in missed)]
    wait_for(lambda: all(t.state == "printed" for t in tickets(stack, rid)), timeout=30)
    assert len(printer.tickets) == 10
    assert all(text.splitlines()[0] == "GRILL" for text in printer.texts())


@pytest.mark.embedded_only("it forgets or restarts the embedded broker's store: no NATS equivalent yet")
def test_tickets_queued_for_an_absent_printer_survive_a_broker_restart_that_lost_its_store(
    stack: Stack, agents, emulators, grill, tmp_path
):
    """The broker keeps persistent sessions in its store (tests/e2e/test_broker_restart.py); when that
    store is lost, the bus sends a printer's unconfirmed tickets again when it comes online, and the
    journal keeps it to one print each."""
    rid = grill["rid"]
    printer, state_dir, before = printed_once_then_stopped(stack, agents, emulators, grill, tmp_path)
    missed = [place(grill, table=f"T{n}") for n in range(1, 4)]
    served = place(grill, table="T9")  # served while the printer was away: not worth paper any more
    staff = grill["staff"]
    for status in ("preparing", "ready", "completed"):
        staff.post(f"/restaurants/{rid}/orders/{served['id']}/status", json={"status": status})
    wait_for(lambda: stack.subscribed(f"restaurant/{rid}/kitchen/grill/tickets", PRINTER_ID))  # queued for it

    stack.call(stack.runtime.stop_broker())
    stack.forget_broker_state()  # the session and its queue are gone
    stack.call(stack.runtime.start_broker())
    start_agent(stack, agents, grill, state_dir, printer)

    wait_for(lambda: len(printer.tickets) >= 4, timeout=30)
    assert printed_orders(printer) == [before["id"], *(order["id"] for order in missed)]
    wait_for(lambda: all(t.state == "printed" for t in tickets(stack, rid) if t.order_id != served["id"]), timeout=30)
    time.sleep(1.0)  # nothing to wait for: no second print of anything, nothing of the served order
    assert len(printer.tickets) == 4


def test_an_edit_prints_an_add_and_a_void_chit_with_only_the_changed_lines(
    stack: Stack, subscribers, agents, emulators, grill, tmp_path
):
    """An order of 3 burgers, then an edit: one burger off, a rare one added. The grill printer prints the
    order, then a VOID chit (1 x Burger) and an ADD chit (1 x Burger, + rare), and reports each printed."""
    printer = emulator(emulators)
    start_agent(stack, agents, grill, tmp_path / "printer", printer)
    order = place(grill, quantity=3)
    wait_for(lambda: len(printer.tickets) >= 1)
    edit = {
        "remove": [{"line_id": order["items"][0]["id"], "quantity": 1}],
        "add": [{"menu_item_id": grill["burger"], "quantity": 1, "modifiers": ["rare"]}],
    }
    edited = grill["staff"].patch(f"/restaurants/{grill['rid']}/orders/{order['id']}", json=edit)
    assert edited.status_code == 200, edited.text

    wait_for(lambda: len(printer.tickets) >= 3, timeout=30)
    first, void, add = (text.splitlines() for text in printer.texts())
    assert first[0] == "GRILL" and "3 x Burger" in first
    assert void[0].strip() == "VOID" and void[-1].strip() == "VOID"
    assert "1 x Burger" in void and "    + no onion" in void and "    + rare" not in void
    assert add[0].strip() == "ADD" and "1 x Burger" in add and "    + rare" in add and "    + no onion" not in add
    wait_for(
        lambda: (
            [(t.kind, t.partial, t.state) for t in tickets(stack, grill["rid"])]
            == [
                ("new", False, "printed"),
                ("void", True, "printed"),
                ("new", True, "printed"),
            ]
        ),
        timeout=30,
    )
    assert len(printer.tickets) == 3
