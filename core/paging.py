"""One page of a list: the rows in a window of the query, and how many rows the whole query has.

Every list the API serves is read through `page`, so each has the same `skip`/`limit` meaning and a
total that a client can page through without guessing when it has reached the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import func
from sqlmodel import select
from sqlmodel.sql.expression import SelectOfScalar

from core.unit_of_work import UnitOfWork

T = TypeVar("T")


@dataclass(frozen=True)
class Window:
    """Rows `skip`.. `skip + limit` of a list; `limit=None` is all of them (the dashboard's snapshot)."""

    skip: int = 0
    limit: int | None = None


EVERYTHING = Window()


@dataclass(frozen=True)
class Page(Generic[T]):
    rows: list[T]
    count: int  # rows in the whole list, not only in this page


def page(uow: UnitOfWork, query: SelectOfScalar[T], window: Window) -> Page[T]:
    """The window of the (ordered) query, and the count of everything it selects, in one transaction."""
    counted: Any = select(func.count()).select_from(query.order_by(None).subquery())
    count = uow.session.exec(counted).one()
    rows = list(uow.session.exec(query.offset(window.skip).limit(window.limit)))
    return Page(rows, count)
