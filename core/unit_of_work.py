"""The unit of work: one transaction for a change and the events it carries.

Its owner commits it, once: the API's request dependency, the ingest for one device message, the
sweeper for one sweep, the demo seeding. Services only add to it (rows and events) and never
commit, so a use case called from another joins the caller's transaction instead of ending it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Self

from sqlalchemy import Engine, text, update
from sqlmodel import Session, col

from core.events import Event, envelope
from core.models import OutboxEvent, Restaurant
from core.wake import CHANNEL


class UnitOfWork:
    """`with UnitOfWork(engine) as uow: ...; uow.commit()`; anything uncommitted is rolled back.

    `on_events_committed` is called after a commit that wrote events: it wakes the relay in this
    process, or signals the one in another process (`core.wake`). On PostgreSQL the commit itself
    carries `NOTIFY orderbus_outbox`, so a relay listening anywhere wakes whoever committed.
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

    def emit(self, restaurant_id: int, event: Event) -> OutboxEvent:
        """Record an event with the restaurant's next seq; the row lock keeps seq gap-free.

        The `UPDATE … RETURNING` locks the restaurant row until the commit, so a second transaction
        of the restaurant waits here and its seq follows in commit order. It is the last lock of the
        order in `core.locking`: lock the rows a use case changes before its first emit."""
        seq = self.session.execute(
            update(Restaurant)
            .where(col(Restaurant.id) == restaurant_id)
            .values(event_seq=col(Restaurant.event_seq) + 1)
            .returning(col(Restaurant.event_seq))
        ).scalar_one()
        event_id = str(uuid.uuid4())
        row = OutboxEvent(
            event_id=event_id,
            restaurant_id=restaurant_id,
            seq=seq,
            type=event.type,
            envelope=envelope(
                event_id=event_id, seq=seq, type_=event.type, restaurant_id=restaurant_id, data=event.data
            ),
        )
        self.session.add(row)
        self._pending_events += 1
        return row

    def commit(self) -> None:
        if self._pending_events and self._engine.dialect.name == "postgresql":
            self.session.execute(text(f"NOTIFY {CHANNEL}"))  # delivered at commit, never for a rollback
        self.session.commit()
        wrote_events, self._pending_events = self._pending_events, 0
        if wrote_events and self._on_events_committed is not None:
            self._on_events_committed()
