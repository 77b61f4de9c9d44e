"""What an edit of a placed order changes: its lines after, the stock it moves, and the kitchen's chits.

Pure, over plain values: the service (`core.services.order_edits`) reads the order's lines, asks
these rules, and only writes once every rule has answered, so a refused edit writes nothing.

A line is known by its order line id (`None` for a line the edit adds). The kitchen hears of a
change as chits per station, like a real kitchen's ADD and VOID slips: what is cooked more goes on
an ADD chit, what is cooked less on a VOID chit. A line whose modifiers, notes or course change is
a different dish: the old one is voided and the new one added, whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from core.domain import DomainError, NotFound, station_of


@dataclass(frozen=True)
class Line:
    """One order line, as the kitchen and the stock see it."""

    id: int | None
    menu_item_id: int
    name: str
    quantity: int
    unit_price_cents: int = 0
    modifiers: tuple[str, ...] = ()
    notes: str = ""
    course: str | None = None
    station: str | None = None

    def recipe(self) -> tuple[object, ...]:
        """What the cook makes of it, apart from how many: a change here is another dish."""
        return (self.menu_item_id, self.name, self.modifiers, self.notes, self.course, self.station)


@dataclass(frozen=True)
class Removal:
    line_id: int
    quantity: int


@dataclass(frozen=True)
class Change:
    """New modifiers and/or notes for a line; `None` keeps what it has."""

    line_id: int
    modifiers: tuple[str, ...] | None = None
    notes: str | None = None


@dataclass(frozen=True)
class Chits:
    """What one station is told: lines to cook (ADD) and lines to stop (VOID), each with its quantity."""

    added: list[Line] = field(default_factory=list)
    voided: list[Line] = field(default_factory=list)


def edited_lines(
    before: Sequence[Line], removals: Iterable[Removal], changes: Iterable[Change], added: Iterable[Line]
) -> list[Line]:
    """The order's lines after the edit, in order; a line reduced to nothing is gone.

    Removals of one line add up; removing more than the line has, naming a line the order lacks
    (NotFound), or changing a line the same edit removes whole is refused."""
    by_id = {line.id: line for line in before}
    left = {line.id: line.quantity for line in before}
    for removal in removals:
        if removal.line_id not in by_id:
            raise NotFound(f"order line {removal.line_id} not found in this order")
        if removal.quantity <= 0:
            raise DomainError(f"quantity must be positive, got {removal.quantity}")
        left[removal.line_id] -= removal.quantity
        if left[removal.line_id] < 0:
            line = by_id[removal.line_id]
            raise DomainError(f"line {line.id} has {line.quantity} {line.name}; cannot remove more")
    changed = dict(by_id)
    for change in changes:
        if change.line_id not in by_id:
            raise NotFound(f"order line {change.line_id} not found in this order")
        if left[change.line_id] == 0:
            raise DomainError(f"line {change.line_id} is removed by this edit; it cannot also change")
        line = changed[change.line_id]
        if change.modifiers is not None:
            line = replace(line, modifiers=tuple(change.modifiers))
        if change.notes is not None:
            line = replace(line, notes=change.notes)
        changed[change.line_id] = line
    kept = [replace(changed[line.id], quantity=left[line.id]) for line in before if left[line.id] > 0]
    return kept + [replace(line, id=None) for line in added]


def stock_moves(before: Iterable[Line], after: Iterable[Line]) -> dict[int, int]:
    """Per menu item, how many more the order takes (positive) or gives back (negative); zeros left out."""
    moves: dict[int, int] = {}
    for line in after:
        moves[line.menu_item_id] = moves.get(line.menu_item_id, 0) + line.quantity
    for line in before:
        moves[line.menu_item_id] = moves.get(line.menu_item_id, 0) - line.quantity
    return {item_id: delta for item_id, delta in sorted(moves.items()) if delta}


def changed_lines(before: Sequence[Line], after: Sequence[Line]) -> tuple[list[Line], list[Line]]:
    """The lines before that the edit removed or changed, and the lines after that it added or changed."""
    after_by_id: dict[int | None, Line] = {line.id: line for line in after if line.id is not None}
    gone = [line for line in before if after_by_id.get(line.id) != line]
    before_by_id = {line.id: line for line in before}
    came = [line for line in after if line.id is None or before_by_id.get(line.id) != line]
    return gone, came


def chits(before: Sequence[Line], after: Sequence[Line]) -> dict[str, Chits]:
    """Per station (`domain.station_of`), what the kitchen must cook more and stop cooking; only
    stations the edit touches appear. Quantities are the difference; a new recipe voids the old line
    whole and adds the new one whole."""
    out: dict[str, Chits] = {}

    def station(line: Line) -> Chits:
        return out.setdefault(station_of(line.station), Chits())

    after_by_id: dict[int | None, Line] = {line.id: line for line in after if line.id is not None}
    for old in before:
        new = after_by_id.get(old.id)
        if new is None:
            station(old).voided.append(old)
        elif new.recipe() != old.recipe():
            station(old).voided.append(old)
            station(new).added.append(new)
        elif new.quantity < old.quantity:
            station(old).voided.append(replace(old, quantity=old.quantity - new.quantity))
        elif new.quantity > old.quantity:
            station(new).added.append(replace(new, quantity=new.quantity - old.quantity))
    for line in after:
        if line.id is None or line.id not in {old.id for old in before}:
            station(line).added.append(line)
    return out


def total_cents(lines: Iterable[Line]) -> int:
    return sum(line.unit_price_cents * line.quantity for line in lines)
