"""What a KDS tablet shows, as a pure model: open orders from the bus, timers, selection, recall.

No MQTT and no screen here, so every rule is testable with plain values and an injected clock.
The board is fed everything a tablet receives (`receive(topic, payload)`):

- `restaurant/{rid}/orders/open/{id}`: retained open orders, the picture at connect; an empty
  payload means the order closed;
- `restaurant/{rid}/orders`: `new_order` / `order_updated` as they happen;
- `restaurant/{rid}/kitchen/{station}/tickets`: `kitchen_ticket` (docs/devices.md).

The same event reaches it twice (on `orders` and on `orders/open/{id}`), retained state comes
again on every reconnect, QoS 1 may repeat a message, and catch-up (devices/catchup.py) reads
events again that came live: events are deduped by `id`, orders only move forward by `version`
(kept after an order closes, so a late copy cannot revive it). A snapshot (`restart`) replaces
what the board learnt up to its seq.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from core import topics
from core.domain import BUMPS, OPEN_STATUSES, RECALLS, OrderStatus

log = logging.getLogger("orderbus.devices.kds")

Colour = Literal["normal", "warn", "late"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_time(value: Any) -> datetime | None:
    """An ISO timestamp from the bus; naive ones are UTC (SQLite keeps no zone)."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Line:
    """One item line of an order, as the kitchen reads it."""

    name: str
    quantity: int
    modifiers: tuple[str, ...] = ()
    notes: str = ""
    course: str | None = None
    station: str | None = None

    @classmethod
    def from_json(cls, item: dict[str, Any], station: str | None = None) -> Line:
        modifiers = item.get("modifiers") or []
        return cls(
            name=str(item.get("name", "?")),
            quantity=int(item.get("quantity", 1)),
            modifiers=tuple(str(m) for m in modifiers) if isinstance(modifiers, list) else (),
            notes=str(item.get("notes") or ""),
            course=item.get("course") if isinstance(item.get("course"), str) else None,
            station=item.get("station") if isinstance(item.get("station"), str) else station,
        )

    def same_dish(self, other: Line) -> bool:
        """The same dish apart from how many: what a VOID chit's line takes off."""
        return (self.name, self.modifiers, self.notes, self.course) == (
            other.name,
            other.modifiers,
            other.notes,
            other.course,
        ) and (self.station is None or other.station is None or self.station == other.station)

    def text(self) -> str:
        extras = [*self.modifiers, *([self.notes] if self.notes else [])]
        return f"{self.quantity} x {self.name}" + (f" ({', '.join(extras)})" if extras else "")


def _without(lines: tuple[Line, ...], voided: tuple[Line, ...]) -> tuple[Line, ...]:
    """`lines` less the quantities a VOID chit takes off, dish by dish; a line down to nothing goes."""
    left = list(lines)
    for gone in voided:
        quantity = gone.quantity
        for index, line in enumerate(left):
            if quantity and line.quantity and line.same_dish(gone):
                taken = min(quantity, line.quantity)
                left[index] = replace(line, quantity=line.quantity - taken)
                quantity -= taken
    return tuple(line for line in left if line.quantity > 0)


def _number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


@dataclass(frozen=True)
class Card:
    """One open order on the screen."""

    order_id: int
    status: str
    version: int
    created_at: datetime
    lines: tuple[Line, ...]
    number: int | None = None  # per restaurant (`orders.number`); the id is global
    table_name: str | None = None
    pickup_name: str | None = None
    server_name: str | None = None
    notes: str = ""
    provisional: bool = False  # known only from a kitchen ticket so far; the order itself replaces it
    voided: tuple[Line, ...] = ()  # lines an edit's VOID chits took off: shown struck, never cooked
    chits: frozenset[int] = frozenset()  # the edit chits (ticket ids) already applied to it

    @property
    def where(self) -> str:
        if self.table_name:
            return self.table_name
        if self.pickup_name:
            return f"pickup {self.pickup_name}"
        return "-"

    @property
    def label(self) -> str:
        """The status as the dashboard shows it (its badge: the status name in capitals)."""
        return self.status.upper()

    @property
    def title(self) -> str:
        """What the kitchen calls the order: its number in the restaurant (the id only if an old event lacks it)."""
        return f"#{self.number}" if self.number else f"id {self.order_id}"

    @classmethod
    def from_order(cls, order: dict[str, Any]) -> Card:
        return cls(
            order_id=int(order["id"]),
            number=_number(order.get("number")),
            status=OrderStatus(order["status"]).value,  # an unknown status is a malformed message
            version=int(order.get("version", 0)),
            created_at=parse_time(order.get("created_at")) or utcnow(),
            lines=tuple(Line.from_json(item) for item in order.get("items") or []),
            table_name=order.get("table_name"),
            pickup_name=order.get("pickup_name"),
            server_name=order.get("server_name"),
            notes=str(order.get("notes") or ""),
        )

    @classmethod
    def from_ticket(cls, ticket: dict[str, Any]) -> Card:
        station = str(ticket.get("station") or "")
        return cls(
            order_id=int(ticket["order_id"]),
            number=_number(ticket.get("number")),
            status=OrderStatus.PENDING,
            version=int(ticket.get("version", 0)),
            created_at=parse_time(ticket.get("created_at")) or utcnow(),
            lines=tuple(Line.from_json(item, station) for item in ticket.get("items") or []),
            table_name=ticket.get("table_name"),
            pickup_name=ticket.get("pickup_name"),
            server_name=ticket.get("server_name"),
            notes=str(ticket.get("notes") or ""),
            provisional=True,
        )


@dataclass
class Board:
    """The open orders of one restaurant (or one station of it), oldest first."""

    warn_minutes: float = 5.0
    late_minutes: float = 8.0
    clock: Callable[[], datetime] = utcnow
    station: str | None = None  # a per-station screen shows only that station's items
    default_station: str = "kitchen"  # where items without a station go (the bus's `default_station`)
    recall_depth: int = 10
    remembered_events: int = 5000
    cards: dict[int, Card] = field(default_factory=dict, init=False)
    recall_stack: list[int] = field(default_factory=list, init=False)  # latest accepted bump last
    ignored: int = field(default=0, init=False)  # malformed messages dropped (the screen shows the count)
    _versions: dict[int, int] = field(default_factory=dict, init=False)  # highest version seen, kept after close
    _seen: OrderedDict[str, None] = field(default_factory=OrderedDict, init=False)
    _seq: dict[int, int] = field(default_factory=dict, init=False)  # the latest event seq each card came from
    _selected: int | None = field(default=None, init=False)
    _selected_index: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not 0 <= self.warn_minutes <= self.late_minutes:
            raise ValueError("warn_minutes must be at most late_minutes")

    # --- input -----------------------------------------------------------------------------

    def receive(self, topic: str, payload: bytes | bytearray) -> bool:
        """Apply one message a tablet received; True if the screen changed. Garbage is logged and ignored."""
        try:
            found = topics.parse(topic)
        except topics.TopicError:
            return False
        try:
            if found.template == topics.OPEN_ORDER and not payload and isinstance(found.key, int):
                return self.clear(found.key)
            if found.template in (topics.OPEN_ORDER, topics.ORDERS, topics.TICKETS):
                return self.apply_envelope(json.loads(payload))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            self.ignored += 1
            log.warning("kds: ignored a malformed message on %s: %s", topic, exc)
        return False

    def apply_envelope(self, envelope: dict[str, Any]) -> bool:
        event_id = envelope.get("id")
        if isinstance(event_id, str):
            if event_id in self._seen:
                return False
            self._seen[event_id] = None
            while len(self._seen) > self.remembered_events:
                self._seen.popitem(last=False)
        kind, data = envelope.get("type"), envelope.get("data") or {}
        if kind in ("new_order", "order_updated"):
            order_id, changed = int(data["order"]["id"]), self.apply_order(data["order"])
        elif kind == "kitchen_ticket":
            order_id, changed = int(data["ticket"]["order_id"]), self.apply_ticket(data["ticket"])
        else:
            return False
        seq = envelope.get("seq")
        if isinstance(seq, int) and seq > self._seq.get(order_id, 0):
            self._seq[order_id] = seq
        return changed

    def restart(self, open_orders: list[dict[str, Any]], seq: int) -> bool:
        """A snapshot of the open orders as of `seq` or later: cards it lacks that nothing after `seq`
        brought are closed orders (their events were missed), so they leave the screen."""
        listed = {int(order["id"]) for order in open_orders}
        changed = False
        for order in open_orders:
            changed = self.apply_order(order) or changed
        for order_id in [order_id for order_id in self.cards if order_id not in listed]:
            if self._seq.get(order_id, 0) <= seq:
                changed = self._drop(order_id) or changed
        return changed

    def apply_order(self, order: dict[str, Any]) -> bool:
        """The order as the bus now has it; older versions than what the board saw are ignored."""
        card = Card.from_order(order)
        current = self.cards.get(card.order_id)
        known = self._versions.get(card.order_id)
        newer = known is None or card.version > known or (current is not None and current.provisional)
        if not newer:
            return False
        self._versions[card.order_id] = max(card.version, known or 0)
        if card.status not in OPEN_STATUSES:
            return self._drop(card.order_id)
        if current is not None:  # what the edits' chits said stays on the card
            card = replace(card, voided=current.voided, chits=current.chits)
        self.cards[card.order_id] = card
        return True

    def apply_ticket(self, ticket: dict[str, Any]) -> bool:
        """A ticket adds an order the board has not seen yet; a void takes it off the screen."""
        order_id, version = int(ticket["order_id"]), int(ticket.get("version", 0))
        if ticket.get("partial") is True:
            return self._apply_chit(ticket)
        if ticket.get("kind") == "void":
            self._versions[order_id] = max(version, self._versions.get(order_id, 0))
            return self._drop(order_id)
        if order_id in self._versions and version <= self._versions[order_id] and order_id not in self.cards:
            return False  # closed since: a late ticket must not revive it
        card = self.cards.get(order_id)
        fresh = Card.from_ticket(ticket)
        if card is None:
            self.cards[order_id] = fresh
            return True
        if not card.provisional:
            return False  # the order itself already lists every item with its station
        stations = {line.station for line in fresh.lines}
        if stations <= {line.station for line in card.lines}:
            return False  # a reprint, or the same station again
        self.cards[order_id] = replace(card, lines=card.lines + fresh.lines)
        return True

    def _apply_chit(self, ticket: dict[str, Any]) -> bool:
        """An edit's ADD or VOID chit: some lines of an order, never the whole order.

        A VOID strikes its lines (they stay on the card, struck, so the cook sees what to stop); an
        ADD adds its lines. When the order's own event of that version came first, its lines already
        are the edited ones: only the struck lines are new. A chit that came first changes the
        lines itself, and the order's event replaces them when it comes."""
        order_id, version, ticket_id = int(ticket["order_id"]), int(ticket.get("version", 0)), int(ticket["id"])
        card = self.cards.get(order_id)
        void = ticket.get("kind") == "void"
        if card is None:
            if void or version <= self._versions.get(order_id, 0):
                return False  # nothing on screen to take off, or closed since
            self.cards[order_id] = replace(Card.from_ticket(ticket), chits=frozenset({ticket_id}))
            return True
        if ticket_id in card.chits:
            return False  # sent again (a resend has the same ticket id)
        lines = Card.from_ticket(ticket).lines
        current = card.lines
        if card.provisional or version > card.version:  # the order's event of this version has not come yet
            current = _without(current, lines) if void else current + lines
        voided = card.voided + lines if void else card.voided
        self.cards[order_id] = replace(card, lines=current, voided=voided, chits=card.chits | {ticket_id})
        return True

    def apply_ack(self, order_id: int, status: str, version: int) -> bool:
        """The bus's answer to this tablet's bump or recall: show it now, the event confirms it later."""
        card = self.cards.get(order_id)
        if self._versions.get(order_id, 0) >= version:
            return False
        if status not in OPEN_STATUSES:
            self._versions[order_id] = version
            return self._drop(order_id)
        if card is None:
            return False  # back from closed (a recall): its event carries the items, so leave it to that
        self._versions[order_id] = version
        self.cards[order_id] = replace(card, status=status, version=version)
        return True

    def clear(self, order_id: int) -> bool:
        """An empty retained payload: the order is no longer open."""
        if order_id in self.cards:
            self._versions[order_id] = max(self.cards[order_id].version, self._versions.get(order_id, 0))
        return self._drop(order_id)

    def _drop(self, order_id: int) -> bool:
        self._seq.pop(order_id, None)
        return self.cards.pop(order_id, None) is not None

    # --- what the screen shows -------------------------------------------------------------

    def lines_of(self, card: Card) -> tuple[Line, ...]:
        return self._mine(card.lines)

    def voided_of(self, card: Card) -> tuple[Line, ...]:
        """The lines edits voided on this screen's station(s), shown struck."""
        return self._mine(card.voided)

    def _mine(self, lines: tuple[Line, ...]) -> tuple[Line, ...]:
        if self.station is None:
            return lines
        return tuple(line for line in lines if (line.station or self.default_station) == self.station)

    def orders(self) -> list[Card]:
        """The open orders this screen shows, oldest first."""
        shown = [card for card in self.cards.values() if self.lines_of(card)]
        return sorted(shown, key=lambda card: (card.created_at, card.order_id))

    def all_day(self) -> list[tuple[str, int]]:
        """How many of each item the open orders on this screen still want (the cook's "all day"),
        most first: ready orders are cooked, so they do not count."""
        counts: dict[str, int] = {}
        for card in self.orders():
            if card.status == OrderStatus.READY:
                continue
            for line in self.lines_of(card):
                counts[line.name] = counts.get(line.name, 0) + line.quantity
        return sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))

    def elapsed(self, card: Card) -> timedelta:
        return max(self.clock() - card.created_at, timedelta(0))

    def colour(self, card: Card) -> Colour:
        minutes = self.elapsed(card).total_seconds() / 60
        if minutes >= self.late_minutes:
            return "late"
        if minutes >= self.warn_minutes:
            return "warn"
        return "normal"

    # --- selection and the recall stack ----------------------------------------------------

    def selection(self) -> Card | None:
        """The selected order; when it leaves the screen, the one that took its place."""
        cards = self.orders()
        if not cards:
            self._selected = None
            return None
        for index, card in enumerate(cards):
            if card.order_id == self._selected:
                self._selected_index = index
                return card
        self._selected_index = min(self._selected_index, len(cards) - 1)
        chosen = cards[self._selected_index]
        self._selected = chosen.order_id
        return chosen

    def move(self, delta: int) -> Card | None:
        cards = self.orders()
        current = self.selection()
        if current is None:
            return None
        index = max(0, min(len(cards) - 1, cards.index(current) + delta))
        self._selected, self._selected_index = cards[index].order_id, index
        return cards[index]

    def next_step(self, card: Card) -> str | None:
        """The status a bump asks the bus for (the bus's own rule, `core.domain.BUMPS`)."""
        return BUMPS[OrderStatus(card.status)] if card.status in BUMPS else None

    def bumped(self, order_id: int, status: str) -> None:
        """Remember a bump the bus accepted, so `recall` can take back the latest one.

        Only bumps the bus can take back count (to `ready` or `completed`): a recall of an
        order that just started preparing would only be refused.
        """
        if status not in RECALLS:
            return
        if order_id in self.recall_stack:
            self.recall_stack.remove(order_id)
        self.recall_stack.append(order_id)
        del self.recall_stack[: -self.recall_depth]

    def last_bumped(self) -> int | None:
        return self.recall_stack[-1] if self.recall_stack else None

    def recalled(self, order_id: int) -> None:
        if order_id in self.recall_stack:
            self.recall_stack.remove(order_id)
