"""The KDS screen after an order edit: the order's card stays, the voided lines struck, the added ones on it.

A real order placed and edited through the services on SQLite; the outbox envelopes (the order's events
and the grill's chits, as the bridge publishes them) fed to a headless KDS screen, whose drawn card is read.
"""

from __future__ import annotations

from sqlmodel import col, select

from config.settings import Settings
from core.commands import OrderEditIn, OrderIn, OrderItemIn
from core.models import OrderItem
from core.services import order_edits, orders
from core.unit_of_work import UnitOfWork
from devices.kds import KdsApp, OrderCard
from tests.integration.test_kds_cards import Clock, app_for, envelopes, feed, rendered, restaurant, until
from tests.support import run_async, sqlite_engine


async def screen(app: KdsApp, rid: int, events: list[dict]) -> list[str]:
    async with app.run_test(size=(80, 24)) as pilot:
        feed(app, rid, events)
        await until(lambda: app.query(OrderCard) and app.board.cards[1].version == 2)
        await pilot.pause()
        (view,) = app.query(OrderCard)
        lines = rendered(view)
        await pilot.press("q")
        return lines


def test_a_partial_void_strikes_its_lines_and_keeps_the_order_on_the_screen(tmp_path):
    engine = sqlite_engine(Settings(data_dir=tmp_path / "data"))
    try:
        rid, items = restaurant(engine, "Edits")
        with UnitOfWork(engine) as uow:
            body = OrderIn(items=[OrderItemIn(menu_item_id=items["Burger"], quantity=3)], table_name="T7")
            order_id = orders.place_order(uow, rid, body).order.id
            uow.commit()
        with UnitOfWork(engine) as uow:
            line = uow.session.exec(
                select(OrderItem).where(OrderItem.order_id == order_id).order_by(col(OrderItem.id))
            ).first()
            assert line is not None and order_id is not None
            edit = {
                "remove": [{"line_id": line.id, "quantity": 1}],
                "add": [{"menu_item_id": items["Fries"], "quantity": 2}],
            }
            order_edits.edit_order(uow, rid, order_id, OrderEditIn.model_validate(edit))
            uow.commit()
        events = envelopes(engine, rid)
        assert [e["data"]["ticket"].get("partial", False) for e in events if e["type"] == "kitchen_ticket"] == [
            False,
            True,
            True,
        ]
        lines = run_async(screen(app_for(rid, Clock()), rid, events))
        text = "\n".join(lines)
        assert "2 x Burger" in text and "2 x Fries" in text and "VOID 1 x Burger" in text, text
        assert "3 x Burger" not in text
    finally:
        engine.dispose()
