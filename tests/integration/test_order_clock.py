"""The restaurant's clock in the order use cases, on SQLite and PostgreSQL: numbers per business day,
`available_days` on the local date, the back office's orders list and the day's totals. Time is driven
by passing `now` to the services: no sleeping, nothing patched."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import col, func, select

from core.commands import MenuIn, MenuItemIn, OrderIn, OrderItemIn, RestaurantIn, RestaurantUpdate
from core.domain import DomainError, OrderStatus
from core.models import Menu, Order, Restaurant
from core.paging import Window
from core.services import menu as menu_service
from core.services import order_list, orders, refunds, restaurants
from core.services.order_list import OrderQuery
from core.unit_of_work import UnitOfWork
from tests.integration.test_concurrency import at_once

PARIS = "Europe/Paris"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def make_restaurant(engine: Engine, timezone: str = PARIS, day_starts_at: int = 4) -> int:
    with UnitOfWork(engine) as uow:
        row = restaurants.create_restaurant(
            uow, RestaurantIn(name="Clock", timezone=timezone, day_starts_at=day_starts_at)
        )
        uow.commit()
        assert row.id is not None
        return row.id


def make_item(engine: Engine, rid: int, name: str, price_cents: int = 500, **fields) -> int:
    with UnitOfWork(engine) as uow:
        menu = uow.session.exec(select(Menu).where(Menu.restaurant_id == rid)).first()
        menu_id = menu.id if menu else menu_service.create_row(uow, Menu, rid, MenuIn(name="Menu")).id
        assert menu_id is not None
        row = menu_service.create_item(
            uow, rid, MenuItemIn(menu_id=menu_id, name=name, price_cents=price_cents, **fields)
        )
        uow.commit()
        assert row.id is not None
        return row.id


def place(engine: Engine, rid: int, item_id: int, now: datetime, quantity: int = 1, **fields) -> Order:
    with UnitOfWork(engine) as uow:
        body = OrderIn(items=[OrderItemIn(menu_item_id=item_id, quantity=quantity)], **fields)
        order = orders.place_order(uow, rid, body, now=now).order
        uow.commit()
        uow.session.expunge(order)
        return order


def order_count(engine: Engine) -> int:
    with UnitOfWork(engine) as uow:
        return uow.session.exec(select(func.count()).select_from(Order)).one()


def test_numbers_restart_at_the_day_start_in_the_restaurants_zone(db: Engine):
    """Paris, June (UTC+2), day starting 04:00: orders at 22:00 and 01:30 are one service (#1, #2);
    04:00 opens the next (#1 again). Another restaurant in UTC counts on its own."""
    rid = make_restaurant(db)
    other = make_restaurant(db, "UTC")
    soup = make_item(db, rid, "Soup")
    tea = make_item(db, other, "Tea")
    evening = place(db, rid, soup, utc(2026, 6, 2, 20, 0))  # 22:00 Paris, the 2nd
    late = place(db, rid, soup, utc(2026, 6, 2, 23, 30))  # 01:30 Paris, the 3rd on the calendar
    other_first = place(db, other, tea, utc(2026, 6, 2, 23, 45))  # 23:45 UTC: the 2nd's too
    before_start = place(db, rid, soup, utc(2026, 6, 3, 1, 59))  # 03:59 Paris
    morning = place(db, rid, soup, utc(2026, 6, 3, 2, 0))  # 04:00 Paris: a new day
    after = place(db, rid, soup, utc(2026, 6, 3, 10, 0))
    assert [(o.number, o.business_date) for o in (evening, late, before_start, morning, after)] == [
        (1, date(2026, 6, 2)),
        (2, date(2026, 6, 2)),
        (3, date(2026, 6, 2)),
        (1, date(2026, 6, 3)),
        (2, date(2026, 6, 3)),
    ]
    assert (other_first.number, other_first.business_date) == (1, date(2026, 6, 2))
    with UnitOfWork(db) as uow:
        restaurant = uow.session.get(Restaurant, rid)
        assert restaurant is not None and (restaurant.order_seq, restaurant.order_day) == (2, date(2026, 6, 3))


def test_a_refused_order_gives_no_number_and_a_later_day_still_restarts(db: Engine):
    rid = make_restaurant(db, "UTC")
    fries = make_item(db, rid, "Fries", enable_stock_tracking=True, stock_quantity=1)
    assert place(db, rid, fries, utc(2026, 6, 2, 12, 0)).number == 1
    with pytest.raises(DomainError, match="not enough Fries"):
        place(db, rid, fries, utc(2026, 6, 2, 12, 5))
    assert order_count(db) == 1
    soup = make_item(db, rid, "Soup")
    assert place(db, rid, soup, utc(2026, 6, 2, 12, 10)).number == 2  # gap-free
    assert place(db, rid, soup, utc(2026, 6, 3, 12, 0)).number == 1


def test_a_zone_moved_west_never_gives_a_number_twice(db: Engine):
    """Numbers given on the 3rd (UTC); the zone becomes Los Angeles, where it is still the 2nd: the
    order counts on in the 3rd's service instead of restarting in a day whose numbers may be taken."""
    rid = make_restaurant(db, "UTC", 0)
    soup = make_item(db, rid, "Soup")
    first = place(db, rid, soup, utc(2026, 6, 3, 1, 0))
    with UnitOfWork(db) as uow:
        restaurants.update_restaurant(uow, rid, RestaurantUpdate(timezone="America/Los_Angeles"))
        uow.commit()
    second = place(db, rid, soup, utc(2026, 6, 3, 2, 0))  # 19:00 on the 2nd in Los Angeles
    assert (first.number, first.business_date) == (1, date(2026, 6, 3))
    assert (second.number, second.business_date) == (2, date(2026, 6, 3))


def test_available_days_follow_the_restaurants_local_date(db: Engine):
    """A Sunday-only roast in Los Angeles: Sunday 23:30 there (Monday 07:30 UTC) it sells; Monday 10:00
    there it is refused as not available today; switched off it is refused as not available."""
    rid = make_restaurant(db, "America/Los_Angeles")
    roast = make_item(db, rid, "Roast", available_days=[7])
    assert place(db, rid, roast, utc(2026, 3, 2, 7, 30)).number == 1
    with pytest.raises(DomainError, match=r"Roast is not available today \(Monday"):
        place(db, rid, roast, utc(2026, 3, 2, 18, 0))
    with UnitOfWork(db) as uow:
        assert restaurants.local_today(uow, rid, utc(2026, 3, 2, 7, 30)) == date(2026, 3, 1)
        item = menu_service.update_item(uow, rid, roast, menu_service.MenuItemUpdate(available=False))
        assert item.available is False
        uow.commit()
    with pytest.raises(DomainError, match=r"^Roast is not available$"):
        place(db, rid, roast, utc(2026, 3, 8, 18, 0))  # a Sunday, but switched off
    assert order_count(db) == 1


@pytest.fixture
def back_office(db: Engine) -> dict:
    """Three business days of one restaurant (UTC, day from 04:00), and another restaurant's order."""
    rid = make_restaurant(db, "UTC")
    burger = make_item(db, rid, "Smash Burger", 1200)
    salad = make_item(db, rid, "Caesar Salad", 800)
    day1, day2, day3 = (utc(2026, 6, d, 12, 0) for d in (1, 2, 3))
    made = {
        "a": place(db, rid, burger, day1, table_name="T1", server_name="Ann"),
        "b": place(db, rid, salad, day1 + timedelta(hours=15), 2, pickup_name="Zoë", notes="no 50% croutons"),  # 03:00
        "c": place(db, rid, burger, day2, 3, table_name="t1"),
        "d": place(db, rid, salad, day2 + timedelta(hours=1), table_name="Terrace 4", server_name="Bob"),
        "e": place(db, rid, burger, day3, table_name="T2"),
    }
    other = make_restaurant(db, "UTC")
    place(db, other, make_item(db, other, "Smash Burger"), day2, table_name="T1")
    with UnitOfWork(db) as uow:
        orders.change_status(uow, rid, made["d"].id or 0, OrderStatus.CANCELLED)
        orders.change_status(uow, rid, made["c"].id or 0, OrderStatus.PREPARING)
        refunds.pay(uow, rid, made["c"].id or 0)
        by = refunds.Refunder("user-1")
        refunds.refund(uow, rid, made["c"].id or 0, amount_cents=500, reason="cold", lines=[], by=by)
        uow.commit()
    return {"rid": rid, "db": db, **{key: order.id for key, order in made.items()}}


def listed(office: dict, **query) -> tuple[list[str], int]:
    names = {office[key]: key for key in "abcde"}
    with UnitOfWork(office["db"]) as uow:
        found = order_list.list_orders(uow, office["rid"], OrderQuery(**query), Window(0, 100))
        return [names[view.order.id] for view in found.rows], found.count


def test_the_list_filters_by_status_dates_table_and_text(back_office: dict):
    assert listed(back_office) == (["e", "d", "c", "b", "a"], 5)  # newest first, the other restaurant's left out
    assert listed(back_office, statuses={OrderStatus.PENDING}) == (["e", "b", "a"], 3)
    assert listed(back_office, statuses={OrderStatus.PREPARING, OrderStatus.CANCELLED}) == (["d", "c"], 2)
    # business dates: b was placed at 03:00 on the 2nd, so it belongs to the 1st
    assert listed(back_office, date_from=date(2026, 6, 1), date_to=date(2026, 6, 1)) == (["b", "a"], 2)
    assert listed(back_office, date_from=date(2026, 6, 2)) == (["e", "d", "c"], 3)
    assert listed(back_office, date_to=date(2026, 6, 2)) == (["d", "c", "b", "a"], 4)
    assert listed(back_office, table="T1") == (["c", "a"], 2)  # whole name, any case
    assert listed(back_office, q="smash") == (["e", "c", "a"], 3)  # an item's name
    assert listed(back_office, q="ANN") == (["a"], 1)  # server
    assert listed(back_office, q="zo") == (["b"], 1)  # pickup
    assert listed(back_office, q="50%") == (["b"], 1)  # notes; % is a character, not a wildcard
    assert listed(back_office, q="5_%") == ([], 0)
    assert listed(back_office, q="terrace", statuses={OrderStatus.PENDING}) == ([], 0)  # filters add up


def test_the_list_sorts_and_pages_with_a_total(back_office: dict):
    assert listed(back_office, sort="oldest") == (["a", "b", "c", "d", "e"], 5)
    assert listed(back_office, sort="total") == (["c", "b", "e", "a", "d"], 5)  # 3600, 1600, 1200, 1200, 800
    with UnitOfWork(back_office["db"]) as uow:
        found = order_list.list_orders(uow, back_office["rid"], OrderQuery(sort="oldest"), Window(1, 2))
        assert [view.order.id for view in found.rows] == [back_office["b"], back_office["c"]]
    assert found.count == 5


def test_the_days_totals(back_office: dict):
    db, rid = back_office["db"], back_office["rid"]
    with UnitOfWork(db) as uow:
        day2 = order_list.day_summary(uow, rid, date(2026, 6, 2))
        day1 = order_list.day_summary(uow, rid, None, now=utc(2026, 6, 2, 3, 59))  # still the 1st's service
        empty = order_list.day_summary(uow, rid, date(2026, 7, 1))
    # the 2nd: c (3 burgers, 3600, preparing, 500 refunded) and d (800, cancelled: counted, no revenue)
    assert (day2.orders, day2.revenue_cents, day2.refunds_cents, day2.net_cents) == (2, 3600, 500, 3100)
    assert day2.by_status == {"pending": 0, "preparing": 1, "ready": 0, "completed": 0, "cancelled": 1}
    assert (day1.business_date, day1.orders, day1.revenue_cents, day1.net_cents) == (date(2026, 6, 1), 2, 2800, 2800)
    assert (empty.orders, empty.revenue_cents, empty.refunds_cents) == (0, 0, 0)


def test_a_filter_that_cannot_hold_is_refused():
    with pytest.raises(ValueError, match="after to"):
        OrderQuery(date_from=date(2026, 6, 2), date_to=date(2026, 6, 1))


def test_orders_of_one_day_share_no_number(db: Engine):
    """The unique key is (restaurant, business date, number)."""
    rid = make_restaurant(db, "UTC")
    soup = make_item(db, rid, "Soup")
    for hour in range(5, 10):
        place(db, rid, soup, utc(2026, 6, 2, hour, 0))
    with UnitOfWork(db) as uow:
        numbers = uow.session.exec(select(Order.number).order_by(col(Order.id))).all()
    assert numbers == [1, 2, 3, 4, 5]


def test_orders_at_once_on_a_new_day_get_one_number_each(db: Engine):
    """Ten orders released together across the day start: the counter restarts once, and each order gets
    its own number, gap-free (on PostgreSQL the row lock of the `UPDATE … RETURNING` serialises them)."""
    rid = make_restaurant(db, "UTC")
    soup = make_item(db, rid, "Soup")
    place(db, rid, soup, utc(2026, 6, 2, 22, 0))  # the 2nd's service
    morning = utc(2026, 6, 3, 4, 0)
    body = OrderIn(items=[OrderItemIn(menu_item_id=soup, quantity=1)])
    results = at_once(
        db, lambda uow, i: orders.place_order(uow, rid, body, now=morning + timedelta(seconds=i)).order.number
    )
    assert sorted(results) == list(range(1, 11))
    with UnitOfWork(db) as uow:
        restaurant = uow.session.get(Restaurant, rid)
        assert restaurant is not None and (restaurant.order_seq, restaurant.order_day) == (10, date(2026, 6, 3))
