"""Kitchen tickets: cut per station from an order, and tracked until a printer confirms them.

A ticket is a row (its id is what printers dedupe by) and a `kitchen_ticket` event that the
relay publishes to `restaurant/{rid}/kitchen/{station}/tickets`. Outcomes come back from the
printers (`printed`, `failed`) or from the clock (`unacknowledged`); the two bad ones notify
the restaurant once and count in `orderbus_tickets_total`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlmodel import col, select

from core import domain, events
from core.domain import DomainError, NotFound
from core.locking import locked, locked_where
from core.metrics import count_ticket
from core.models import Order, OrderItem, Ticket, utcnow
from core.paging import Page, Window, page
from core.services.inventory import notify
from core.services.notifications import resolve
from core.unit_of_work import UnitOfWork

TICKET_KINDS = ("new", "void", "reprint")
BAD_OUTCOMES = {"failed": "did not print at", "unacknowledged": "not confirmed at"}  # outcome -> title words


def cut(uow: UnitOfWork, order: Order, kind: str) -> list[Ticket]:
    """One ticket per station the order's items route to, each with its event, in the caller's transaction."""
    assert kind in TICKET_KINDS
    lines = list(uow.session.exec(select(OrderItem).where(OrderItem.order_id == order.id).order_by(col(OrderItem.id))))
    by_station: dict[str, list[OrderItem]] = {}
    for line in lines:
        by_station.setdefault(domain.station_of(line.station), []).append(line)
    return [_send(uow, order, station, kind, events.ticket_items(mine)) for station, mine in by_station.items()]


def cut_chits(uow: UnitOfWork, order: Order, station: str, added: list[OrderItem], voided: list[OrderItem]) -> None:
    """An edit's chits for one station (`core.rules.order_changes.chits`): the VOID first, then the ADD,
    so a cook reading them in order stops the old dish before starting its new version."""
    if voided:
        _send(uow, order, station, "void", events.ticket_items(voided), partial=True)
    if added:
        _send(uow, order, station, "new", events.ticket_items(added), partial=True)


def _send(
    uow: UnitOfWork, order: Order, station: str, kind: str, items: list[dict[str, Any]], partial: bool = False
) -> Ticket:
    """The ticket row keeps the lines it carries: a resend sends these, whatever the order became."""
    assert order.id is not None  # a stored order
    ticket = Ticket(
        restaurant_id=order.restaurant_id,
        order_id=order.id,
        version=order.version,
        station=station,
        kind=kind,
        lines=items,
        partial=partial,
    )
    uow.session.add(ticket)
    uow.session.flush()
    uow.emit(order.restaurant_id, events.kitchen_ticket(ticket, order, items))
    return ticket


def resend_unprinted(uow: UnitOfWork, restaurant_id: int, station: str, within_hours: float = 12) -> int:
    """Send a station's tickets no printer has confirmed again, same ids, when its printer comes online.

    The embedded broker keeps a printer's queue across restarts (`broker/store.py`), but not when
    its state file was lost or set aside, the session expired or the queue overflowed while the
    printer was away, or an external broker keeps none. Printers dedupe by ticket id (their
    journal), so sending again what did arrive costs nothing and what did not arrive prints.
    """
    since = utcnow() - timedelta(hours=within_hours)
    waiting = uow.session.exec(
        select(Ticket)
        .where(
            Ticket.restaurant_id == restaurant_id,
            Ticket.station == station,
            Ticket.state != "printed",
            col(Ticket.created_at) >= since,
        )
        .order_by(col(Ticket.id))
        .limit(200)
    ).all()
    sent = 0
    for ticket in waiting:
        order = uow.session.get(Order, ticket.order_id)
        assert order is not None
        if (ticket.kind != "void" or ticket.partial) and not domain.is_open(order.status):
            continue  # served or cancelled meanwhile: its whole-order void (if any) is what the kitchen needs
        uow.emit(restaurant_id, events.kitchen_ticket(ticket, order, _items_of(uow, ticket, order), resent=True))
        sent += 1
    return sent


def _items_of(uow: UnitOfWork, ticket: Ticket, order: Order) -> list[dict[str, Any]]:
    """The lines the ticket was cut with; a ticket older than `Ticket.lines` gets its station's lines now."""
    if ticket.lines is not None:
        return ticket.lines
    lines = uow.session.exec(select(OrderItem).where(OrderItem.order_id == order.id).order_by(col(OrderItem.id)))
    return events.ticket_items(line for line in lines if domain.station_of(line.station) == ticket.station)


def reprint(uow: UnitOfWork, order: Order) -> list[Ticket]:
    if not domain.is_open(order.status):
        raise DomainError(f"order {order.id} is {order.status}; only open orders are reprinted")
    return cut(uow, order, "reprint")


def get_ticket(uow: UnitOfWork, restaurant_id: int, ticket_id: int) -> Ticket:
    """Locked (`core.locking`): its outcome is decided from its state (a printer's report against the sweep)."""
    ticket = locked(uow.session, Ticket, ticket_id)
    if ticket is None or ticket.restaurant_id != restaurant_id:
        raise NotFound(f"ticket {ticket_id} not found")
    return ticket


def record_printed(uow: UnitOfWork, ticket: Ticket, device_id: str) -> None:
    """A printer confirmed it; late confirmations (after `failed` or `unacknowledged`) still count."""
    if ticket.state == "printed":
        return  # a repeated report: the printer dedupes, so do we
    late = ticket.state in ("failed", "unacknowledged")
    ticket.state, ticket.device_id, ticket.printed_at = "printed", device_id, utcnow()
    uow.session.add(ticket)
    count_ticket("printed", ticket.restaurant_id, device_id)
    if late:  # the problem staff were told of is gone: clear its notification on every screen
        titles = [_notice_title(ticket, what) for what in BAD_OUTCOMES.values()]
        resolve(uow, ticket.restaurant_id, kinds=[f"ticket_{outcome}" for outcome in BAD_OUTCOMES], titles=titles)


def record_failed(uow: UnitOfWork, ticket: Ticket, device_id: str, reason: str, detail: str) -> None:
    """Notify once per ticket: a printer retrying the same ticket reports `failed` only once, but be sure."""
    if ticket.state in ("printed", "failed"):
        return
    ticket.device_id, ticket.detail = device_id, f"{reason}: {detail}"[:200]
    _went_wrong(uow, ticket, "failed", f"{reason}: {detail}"[:500])


def expire_unacknowledged(uow: UnitOfWork, deadline_seconds: float, now: datetime | None = None) -> int:
    """Tickets still `sent` after the deadline: mark, notify, count. Returns how many."""
    cutoff = (now or utcnow()) - timedelta(seconds=deadline_seconds)
    # Locked, skipping a ticket a printer's report holds right now: that report decides it.
    late = locked_where(uow.session, Ticket, Ticket.state == "sent", col(Ticket.created_at) < cutoff, limit=500)
    late.sort(key=lambda ticket: (ticket.restaurant_id, ticket.id or 0))  # restaurant rows in ascending id
    for ticket in late:
        body = f"no printer confirmed it within {deadline_seconds:g} s; check the {ticket.station} printer"
        _went_wrong(uow, ticket, "unacknowledged", body)
    return len(late)


def _went_wrong(uow: UnitOfWork, ticket: Ticket, outcome: str, body: str) -> None:
    """A bad outcome: recorded on the ticket, counted, and told to the restaurant once."""
    ticket.state = outcome
    uow.session.add(ticket)
    count_ticket(outcome, ticket.restaurant_id, ticket.device_id)
    title = _notice_title(ticket, BAD_OUTCOMES[outcome])
    notify(uow, ticket.restaurant_id, kind=f"ticket_{outcome}", title=title, body=body)


def _notice_title(ticket: Ticket, what: str) -> str:
    """The notification's title says the order and station (the dashboard groups by the station);
    a later print finds the notifications it resolves by the same title."""
    return f"Ticket for order {ticket.order_id} {what} {ticket.station}"


def list_tickets(
    uow: UnitOfWork, restaurant_id: int, order_id: int | None, state: str | None, window: Window
) -> Page[Ticket]:
    """Newest first."""
    query = select(Ticket).where(Ticket.restaurant_id == restaurant_id)
    if order_id is not None:
        query = query.where(Ticket.order_id == order_id)
    if state is not None:
        query = query.where(Ticket.state == state)
    return page(uow, query.order_by(col(Ticket.id).desc()), window)
