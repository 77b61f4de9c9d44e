"""The unit of work: one transaction for a change and the events it carries."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from sqlalchemy import Engine, update
from sqlmodel import Session, col

from core.models import OutboxEvent, Restaurant

ENVELOPE_VERSION = 1


def envelope(*, event_id: str, seq: int, type_: str, restaurant_id: int, data: dict[str, Any]) -> dict:
    ts = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "v": ENVELOPE_VERSION,
        "id": event_id,
        "seq": seq,
        "type": type_,
        "restaurant_id": restaurant_id,
        "ts": ts,
        "data": data,
    }


class UnitOfWork:
    """`with UnitOfWork(engine) as uow: ...; uow.commit()`; anything uncommitted is rolled back.

    `on_events_committed` is called after a commit that wrote events: it wakes the relay.
    """

    def __init__(self, engine: Engine, on_events_committed: Callable[[], None] | None = None) -> None:
        self._engine = engine
        self._on_events_committed = on_events_committed
        self._pending_events = 0

    def __enter__(self) -> Self:
        self.session = Session(self._engine, expire_on_commit=False)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.session.rollback()
        self.session.close()

    def emit(self, restaurant_id: int, type_: str, data: dict[str, Any]) -> OutboxEvent:
        """Record an event with the restaurant's next seq; the row lock keeps seq gap-free."""
        seq = self.session.execute(
            update(Restaurant)
            .where(col(Restaurant.id) == restaurant_id)
            .values(event_seq=Restaurant.event_seq + 1)
            .returning(col(Restaurant.event_seq))
        ).scalar_one()
        event_id = str(uuid.uuid4())
        row = OutboxEvent(
            event_id=event_id,
            restaurant_id=restaurant_id,
            seq=seq,
            type=type_,
            envelope=envelope(event_id=event_id, seq=seq, type_=type_, restaurant_id=restaurant_id, data=data),
        )
        self.session.add(row)
        self._pending_events += 1
        return row

    def commit(self) -> None:
        self.session.commit()
        wrote_events, self._pending_events = self._pending_events, 0
        if wrote_events and self._on_events_committed is not None:
            self._on_events_committed()
