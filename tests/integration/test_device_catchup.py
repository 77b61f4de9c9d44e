"""Catch-up by seq on the real stack: a KDS and a printer agent left behind by a broker restart
(retained state and queued messages gone) and by a bridge part that is down, brought back through
the device catch-up routes with their own broker tokens.

Each scenario takes away the bus's other ways back (the relay that would publish the events, the
ingest that would resend a returning printer's tickets), so only catch-up can bring them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import pytest

from devices.journal import Journal
from devices.kds_board import Board
from devices.kds_client import KdsClient
from devices.printer import PrinterAgent
from devices.printer_io import open_printer
from tests.integration.kitchen import Kitchen, open_kitchen
from tests.integration.test_printer import printed_orders
from tests.printer_emulator import PrinterEmulator
from tests.support import Stack, wait_for


@pytest.fixture
def kitchen(stack: Stack) -> Kitchen:
    return open_kitchen(stack, "Catchup")  # a Burger printed at the grill


@pytest.fixture
def stopping() -> Iterator[list]:
    """Device agents and printer emulators a test started, stopped after it."""
    made: list = []
    yield made
    for part in reversed(made):
        part.stop()


def shown(client: KdsClient) -> set[int]:
    with client.lock:
        return {card.order_id for card in client.board.orders()}


def kds(stack: Stack, kitchen: Kitchen, stopping: list, device_id: str, **options) -> KdsClient:
    token = stack.add_device(kitchen.rid, device_id, "tablet")
    client = KdsClient(token, "127.0.0.1", stack.settings.mqtt_port, Board(), api_url=stack.base_url, **options)
    client.start()
    stopping.append(client)
    return client


def cancel(kitchen: Kitchen, order_id: int) -> None:
    response = kitchen.admin.post(f"/restaurants/{kitchen.rid}/orders/{order_id}/status", json={"status": "cancelled"})
    assert response.status_code == 200, response.text


def stop_relay(stack: Stack) -> None:
    relay = stack.runtime.relay
    assert relay is not None
    relay.stop(drain_seconds=0)
    # what commits now stays in the outbox, unpublished (a stopped relay ignores wakes)


def restart_broker(stack: Stack) -> None:
    """A restart that lost the broker's store: retained state, sessions and their queues are gone."""
    stack.call(stack.runtime.stop_broker())
    stack.forget_broker_state()
    stack.call(stack.runtime.start_broker())


@pytest.mark.embedded_only("it forgets or restarts the embedded broker's store: no NATS equivalent yet")
def test_a_kds_started_after_a_broker_restart_shows_every_open_order(stack: Stack, kitchen: Kitchen, stopping):
    """No retained open orders to start from: the screen starts from the snapshot instead."""
    open_ones = [kitchen.place(table=f"T{n}")["id"] for n in range(3)]
    closed = kitchen.place(table="T9")["id"]
    cancel(kitchen, closed)
    restart_broker(stack)

    client = kds(stack, kitchen, stopping, "kds-fresh")
    wait_for(lambda: shown(client) == set(open_ones), timeout=15)
    later = kitchen.place(table="T5")["id"]  # and live from then on
    wait_for(lambda: shown(client) == {*open_ones, later})


@pytest.mark.embedded_only("it forgets or restarts the embedded broker's store: no NATS equivalent yet")
def test_a_running_kds_catches_up_on_reconnect_what_the_broker_never_delivered(
    stack: Stack, kitchen: Kitchen, stopping
):
    """Orders placed and closed while the broker was down and the relay too: the KDS reconnects and
    reads them by seq (the timer is an hour away: it is the reconnect that asks)."""
    first, second = kitchen.place(table="T1")["id"], kitchen.place(table="T2")["id"]
    client = kds(stack, kitchen, stopping, "kds-running", catchup_seconds=3600)
    wait_for(lambda: shown(client) == {first, second} and client.connected)
    assert client.catchup is not None
    wait_for(lambda: client.catchup is not None and client.catchup.runs >= 1)

    stop_relay(stack)
    stack.call(stack.runtime.stop_broker())
    wait_for(lambda: not client.connected)
    third = kitchen.place(table="T3")["id"]
    cancel(kitchen, first)
    stack.call(stack.runtime.start_broker())

    wait_for(lambda: shown(client) == {second, third}, timeout=20)
    with client.lock:
        cards = {card.order_id: card for card in client.board.orders()}
    assert cards[third].status == "pending" and cards[third].table_name == "T3"
    assert not cards[third].provisional  # the order itself, not only its ticket


def test_catch_up_never_shows_an_order_twice_nor_revives_a_closed_one(stack: Stack, kitchen: Kitchen, stopping):
    """Catch-up every 0.2 s reads again what came live: the board stays exactly the database's open orders."""
    client = kds(stack, kitchen, stopping, "kds-often", catchup_seconds=0.2)
    placed = [kitchen.place(table=f"T{n}")["id"] for n in range(6)]
    for order_id in placed[::2]:
        cancel(kitchen, order_id)
    wait_for(lambda: shown(client) == set(placed[1::2]))
    runs = client.catchup.runs if client.catchup else 0
    wait_for(lambda: client.catchup is not None and client.catchup.runs >= runs + 3)
    with client.lock:
        assert [card.order_id for card in client.board.orders()] == placed[1::2]


@pytest.mark.embedded_only("it forgets or restarts the embedded broker's store: no NATS equivalent yet")
def test_a_kds_whose_token_is_revoked_gets_nothing_by_catch_up(stack: Stack, kitchen: Kitchen, stopping):
    kitchen.place(table="T1")
    restart_broker(stack)  # nothing retained
    token = stack.add_device(kitchen.rid, "kds-revoked", "tablet")
    revoke = kitchen.admin.delete(f"/restaurants/{kitchen.rid}/devices/kds-revoked")
    assert revoke.status_code == 204, revoke.text
    client = KdsClient(
        token, "127.0.0.1", stack.settings.mqtt_port, Board(), api_url=stack.base_url, catchup_seconds=0.2
    )
    client.start()
    stopping.append(client)
    time.sleep(1.5)  # several attempts, each refused with 401
    assert shown(client) == set() and client.catchup is not None and client.catchup.runs == 0


# --- the printer --------------------------------------------------------------------------------


def printer_agent(stack: Stack, token: str, state_dir: Path, printer: PrinterEmulator, stopping: list) -> PrinterAgent:
    agent = PrinterAgent(
        token=token,
        primary=open_printer(printer.url),
        backup=None,
        state_dir=state_dir,
        failover_seconds=10.0,
        host="127.0.0.1",
        port=stack.settings.mqtt_port,
        api_url=stack.base_url,
        catchup_seconds=0.3,  # reads again, often, what came live: the journal must keep it to one print
        poll_seconds=0.5,
        retry_seconds=0.2,
        tz=UTC,
    )
    agent.start()
    stopping.append(agent)
    return agent


@pytest.mark.embedded_only("it forgets or restarts the embedded broker's store: no NATS equivalent yet")
def test_a_printer_away_while_its_queue_was_lost_prints_each_missed_ticket_once(
    stack: Stack, kitchen: Kitchen, stopping, tmp_path
):
    """The printer is offline while tickets are cut; the broker restarts without its store (its queue is gone) and the
    ingest is down (nobody resends on the printer's return). Catch-up from the journal's cursor
    prints every missed ticket once, in order, and nothing already printed again."""
    rid = kitchen.rid
    printer = PrinterEmulator().start()
    stopping.append(printer)
    token = stack.add_device(rid, "printer-grill", "printer", station="grill")
    state_dir = tmp_path / "printer"
    agent = printer_agent(stack, token, state_dir, printer, stopping)
    wait_for(lambda: stack.subscribed(f"restaurant/{rid}/kitchen/grill/tickets", "printer-grill"))
    before = kitchen.place(table="T0")["id"]
    wait_for(lambda: printed_orders(printer) == [before])
    wait_for(lambda: agent.journal.cursor() is not None and agent.catchup is not None and agent.catchup.runs >= 2)
    agent.stop()
    stopping.remove(agent)

    ingest = stack.runtime.ingest
    assert ingest is not None
    ingest.stop()
    missed = [kitchen.place(table=f"T{n}")["id"] for n in range(1, 5)]
    served = kitchen.place(table="T9")["id"]
    cancel(kitchen, served)  # closed while the printer was away: not worth paper (its void is)
    restart_broker(stack)

    agent = printer_agent(stack, token, state_dir, printer, stopping)
    wait_for(lambda: len(printer.tickets) >= 1 + len(missed) + 1, timeout=20)
    time.sleep(1.5)  # several catch-up runs more: nothing prints twice
    assert printed_orders(printer) == [before, *missed, served]
    assert "VOID" in printer.texts()[-1]
    head = kitchen.events()[-1]["seq"]
    assert agent.journal.cursor() == head


def test_a_printer_whose_cursor_the_bus_cannot_continue_restarts_from_the_latest_seq(
    stack: Stack, kitchen: Kitchen, stopping, tmp_path
):
    """Its journal's cursor is ahead of the bus (the bus's data was reset): 410, then the snapshot's
    seq; what comes next prints, and the cursor follows the bus again."""
    rid = kitchen.rid
    printer = PrinterEmulator().start()
    stopping.append(printer)
    token = stack.add_device(rid, "printer-moved", "printer", station="grill")
    state_dir = tmp_path / "printer"
    journal = Journal(state_dir / "printer-moved.journal.sqlite3")
    journal.set_cursor(10_000)
    journal.close()
    kitchen.place(table="T0")

    agent = printer_agent(stack, token, state_dir, printer, stopping)
    wait_for(lambda: agent.journal.cursor() == kitchen.events()[-1]["seq"])
    after = kitchen.place(table="T1")["id"]
    wait_for(lambda: after in printed_orders(printer))
    wait_for(lambda: agent.journal.cursor() == kitchen.events()[-1]["seq"])
