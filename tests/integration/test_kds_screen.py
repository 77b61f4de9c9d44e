"""The KDS screen (Textual, headless through Pilot) against a real stack: keys change real orders."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from textual.widgets import Static

from devices.kds import KdsApp, OrderCard
from devices.kds_board import Board
from devices.kds_client import KdsClient
from tests.integration.kitchen import Kitchen, open_kitchen
from tests.support import Stack


class Clock:
    """The board's clock, moved by the test: no waiting five minutes for yellow."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, minutes: float) -> None:
        self.now += timedelta(minutes=minutes)


async def until(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """support.wait_for for the app's own loop: the screen is read between its updates, never during one."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)  # yields to the app; not a fixed wait
    return value


def text_of(app: KdsApp, selector: str) -> str:
    return str(app.query_one(selector, Static).content)


def row(app: KdsApp, order_id: int) -> OrderCard | None:
    found = app.query(f"#order-{order_id}")
    return found.first(OrderCard) if found else None


def content(app: KdsApp, order_id: int) -> str:
    """The row's text, or "" while it is not on the screen."""
    shown = row(app, order_id)
    return str(shown.content) if shown is not None else ""


def selected(app: KdsApp, order_id: int) -> bool:
    shown = row(app, order_id)
    return shown is not None and shown.has_class("selected")


def client_busy(app: KdsApp, order_id: int) -> bool:
    return app.client.busy(order_id)


def colour(app: KdsApp, order_id: int) -> str | None:
    shown = row(app, order_id)
    return next((name for name in ("normal", "warn", "late") if shown and shown.has_class(name)), None)


async def scenario(app: KdsApp, kitchen: Kitchen, first: int, clock: Clock) -> None:
    async with app.run_test(size=(120, 30)) as pilot:
        await until(lambda: row(app, first) is not None)  # the retained open order, placed before we connected
        await until(lambda: "● connected" in text_of(app, "#connection"))
        await until(lambda: selected(app, first))  # drawn by the next redraw, not with the row itself
        assert colour(app, first) == "normal"
        number = app.board.cards[first].number
        assert number == 1  # the restaurant's first order, whatever its global id
        assert all(part in content(app, first) for part in (f"#{number}", "T12", "PENDING", "2 x Burger\n  + no onion"))

        second = kitchen.place(table="T3")["id"]  # live, while the screen is up
        await until(lambda: row(app, second) is not None)
        assert [child.id for child in app.query(OrderCard)] == [f"order-{first}", f"order-{second}"]

        await pilot.press("b")
        await until(lambda: kitchen.order(first) == ("preparing", 2))
        await until(lambda: "PREPARING" in content(app, first))
        await until(lambda: f"{app.called(first)} → preparing ✓" in text_of(app, "#message"))

        clock.advance(minutes=5)
        await until(lambda: colour(app, first) == "warn")
        clock.advance(minutes=3)
        await until(lambda: colour(app, first) == "late")

        await pilot.press("space")
        await until(lambda: kitchen.order(first) == ("ready", 3))
        await until(lambda: "READY" in content(app, first))
        await pilot.press("enter")  # picked up: off the screen, the next one selected
        await until(lambda: kitchen.order(first) == ("completed", 4))
        await until(lambda: row(app, first) is None)
        await until(lambda: selected(app, second))

        await pilot.press("r")  # recall the last bump: back on the screen as ready
        await until(lambda: kitchen.order(first) == ("ready", 5))
        await until(lambda: "READY" in content(app, first))

        await pilot.press("down", "b")  # the bottom row stays selected: the second order
        await until(lambda: kitchen.order(second) == ("preparing", 2))
        await until(lambda: "PREPARING" in content(app, second) and not client_busy(app, second))
        await pilot.press("b")  # a tap while the last one waits for its reply is ignored: wait for it
        await until(lambda: kitchen.order(second) == ("ready", 3))
        await until(lambda: "READY" in content(app, second) and not client_busy(app, second))
        await pilot.press("up", "b")  # the first one again: picked up
        await until(lambda: kitchen.order(first) == ("completed", 6))
        await until(lambda: row(app, first) is None)

        # the counter cancels the ready order meanwhile: its recall is refused, and the screen says so
        cancel = kitchen.admin.post(f"/restaurants/{kitchen.rid}/orders/{second}/status", json={"status": "cancelled"})
        assert cancel.status_code == 200, cancel.text
        await until(lambda: row(app, second) is None)
        await pilot.press("r")  # the last bump was the first order's: recalled
        await until(lambda: kitchen.order(first) == ("ready", 7))
        await pilot.press("r")  # then the second order's, now cancelled
        await until(lambda: app.query_one("#message").has_class("error"))
        message = text_of(app, "#message")
        assert f"{app.called(second)} not recalled" in message and "cancelled cannot be recalled" in message, message
        assert kitchen.order(second) == ("cancelled", 4)
        await pilot.press("r")
        await until(lambda: "nothing to recall" in text_of(app, "#message"))
        await pilot.press("q")


def test_the_kds_screen_shows_bumps_recalls_and_turns_late(stack: Stack):
    kitchen = open_kitchen(stack, "Screen")
    first = kitchen.place(table="T12")["id"]
    token = stack.add_device(kitchen.rid, "kds-screen", "tablet")
    clock = Clock()
    client = KdsClient(token, "127.0.0.1", stack.settings.mqtt_port, Board(clock=clock))
    app = KdsApp(client, tick_seconds=0.1)
    run_on_own_loop(scenario(app, kitchen, first, clock))
    assert not client.connected  # `q` stopped it cleanly


async def outage(app: KdsApp, stack: Stack, kitchen: Kitchen, first: int) -> None:
    async with app.run_test(size=(120, 30)) as pilot:
        await until(lambda: row(app, first) is not None and "● connected" in text_of(app, "#connection"))
        await asyncio.to_thread(stack.call, stack.runtime.stop_broker())
        try:
            await until(lambda: "reconnecting" in text_of(app, "#connection"))
            assert app.query_one("#connection").has_class("offline")
            second = kitchen.place(table="T8")["id"]  # waits in the outbox
            await pilot.press("b")  # queued by the client, sent when the broker is back
            await until(lambda: "…" in content(app, first))  # shown as waiting for the bus
        finally:
            await asyncio.to_thread(stack.call, stack.runtime.start_broker())
        await until(lambda: "● connected" in text_of(app, "#connection"), timeout=20)
        assert not app.query_one("#connection").has_class("offline")
        await until(lambda: row(app, second) is not None, timeout=20)  # placed during the outage
        # The tap made offline is sent as soon as the tablet is back. The embedded broker forgets
        # sessions when it restarts, so if the tablet is back before the ingest, nobody receives
        # it: then the screen says there was no answer and nothing changed, and a second tap works.
        await until(lambda: "…" not in content(app, first), timeout=20)
        if kitchen.order(first) == ("pending", 1):
            assert f"{app.called(first)}: no answer from the bus" in text_of(app, "#message")
            assert "PENDING" in content(app, first)
            await pilot.press("b")
        await until(lambda: kitchen.order(first) == ("preparing", 2))
        await until(lambda: f"{app.called(first)} → preparing ✓" in text_of(app, "#message"))
        await until(lambda: "PREPARING" in content(app, first))


def test_the_kds_screen_shows_a_broker_outage_and_catches_up_after_it(stack: Stack):
    kitchen = open_kitchen(stack, "Outage")
    first = kitchen.place(table="T12")["id"]
    token = stack.add_device(kitchen.rid, "kds-outage", "tablet")
    client = KdsClient(token, "127.0.0.1", stack.settings.mqtt_port, Board())
    app = KdsApp(client, tick_seconds=0.1, reply_timeout=5)
    run_on_own_loop(outage(app, stack, kitchen, first))


def run_on_own_loop(scenario: Coroutine[Any, Any, None]) -> None:
    """Textual's Pilot needs an event loop; the session's Playwright browser keeps one on this thread."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, scenario).result(timeout=120)


async def revoked(app: KdsApp, stack: Stack, rid: int) -> None:
    from core.services import devices
    from core.unit_of_work import UnitOfWork

    async with app.run_test(size=(200, 30)):
        await until(lambda: "● connected" in text_of(app, "#connection"))
        with UnitOfWork(stack.engine) as uow:
            devices.revoke_device(uow, rid, "kds-revoked")
            uow.commit()
        await until(lambda: "✕ refused: revoked" in text_of(app, "#connection"), timeout=30)
        await until(lambda: "register a new device" in text_of(app, "#message"))
        assert "kds-revoked: device revoked at" in text_of(app, "#message")
        assert app.query_one("#message").has_class("error") and app.client.link.refused_attempts == 1


def test_the_kds_screen_says_why_the_bus_refuses_it(stack: Stack):
    """Revoked while on: the reason on screen, not "reconnecting…" for ever."""
    kitchen = open_kitchen(stack, "Revoked")
    token = stack.add_device(kitchen.rid, "kds-revoked", "tablet")
    client = KdsClient(token, "127.0.0.1", stack.settings.mqtt_port, Board(), api_url=stack.base_url)
    app = KdsApp(client, tick_seconds=0.1)
    run_on_own_loop(revoked(app, stack, kitchen.rid))
