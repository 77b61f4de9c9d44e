"""Row locks for read-modify-writes: the one place the locking rule lives.

Why: a use case that reads a row, decides (is there stock? may this order move? how much is left
to refund?) and writes it back is only right if nobody changes the row in between. SQLite hides
the race, because `core.db` begins every transaction with `BEGIN IMMEDIATE` (one writer at a time
for the whole file); PostgreSQL lets ten transactions read "30 in stock" at once and all sell 4.
So every read that a write depends on reads through `locked` / `locked_all`: `SELECT … FOR UPDATE`
on PostgreSQL, which waits for the row's other writer to commit and then sees its change.
SQLAlchemy renders no `FOR UPDATE` on SQLite, where the writer lock already serialises.

The order, to avoid deadlocks (two transactions each holding what the other waits for):

1. the order row;
2. menu items, in ascending id (`locked_all` sorts);
3. any other row the use case changes (a ticket, a device, an outbox event, a notification);
4. the restaurant row last: `UnitOfWork.emit` takes it (`UPDATE … RETURNING event_seq`) for the
   gap-free seq, so a use case locks everything it will change before its first `emit`. A sweep
   that emits for several restaurants in one transaction does so in ascending restaurant id.

An idempotency key is claimed before any of it (`core.services.idempotency`): a second request
with the key waits on the first's unique row while holding nothing.

PostgreSQL detects a deadlock that slips through anyway and aborts one transaction; the API
answers it 503 with Retry-After like any other transient database failure (`api.db_errors`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from sqlmodel import Session, SQLModel, col, select

M = TypeVar("M", bound=SQLModel)


def locked(session: Session, model: type[M], row_id: object) -> M | None:
    """The row by primary key, locked until the transaction ends, with what the last writer committed.

    `populate_existing`: a row the session already holds is refreshed from the locked read, or the
    decision would be made on the value read before the lock."""
    return session.get(model, row_id, with_for_update=True, populate_existing=True)


def locked_all(session: Session, model: type[M], row_ids: Iterable[int]) -> dict[int, M]:
    """Rows by integer primary key, locked in ascending id (the rule's order), by id.

    One statement: PostgreSQL locks the rows of `ORDER BY … FOR UPDATE` as the sorted rows come out
    (its LockRows step runs above the sort), so in ascending id, as the rule wants."""
    ids = sorted(set(row_ids))
    if not ids:
        return {}
    id_column = col(model.id)  # type: ignore[attr-defined]
    query = select(model).where(id_column.in_(ids)).order_by(id_column).with_for_update()
    return {row.id: row for row in session.exec(query.execution_options(populate_existing=True))}  # type: ignore[attr-defined]


def locked_where(session: Session, model: type[M], *conditions: object, limit: int) -> list[M]:
    """Rows matching `conditions`, oldest id first, locked; rows another transaction holds are skipped
    (`SKIP LOCKED`): for sweeps that must not wait on, nor overwrite, a row being changed right now."""
    id_column = col(model.id)  # type: ignore[attr-defined]
    query = select(model).where(*conditions).order_by(id_column).limit(limit)  # type: ignore[arg-type]
    return list(session.exec(query.with_for_update(skip_locked=True).execution_options(populate_existing=True)))
