"""Alembic's environment: runs the revisions on the connection `core.db` hands it, inside the
transaction that connection already holds, so a migration commits whole or not at all and the
SQLite writer lock of `core.db.make_engine` is taken once, by that one connection."""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlmodel import SQLModel
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

from core import models  # noqa: F401  (registers the tables)


def render_item(kind: str, obj: Any, autogen: AutogenContext) -> str | Literal[False]:
    """Revisions name plain SQLAlchemy types: they must not depend on SQLModel's internals."""
    if kind == "type" and isinstance(obj, AutoString):
        return "sa.String()"
    if kind == "type" and isinstance(obj, UTCDateTime):  # the DDL of its impl; the conversion is the model's
        return "sa.DateTime(timezone=True)"
    return False


def run() -> None:
    if context.is_offline_mode():
        raise RuntimeError("orderbus migrations run against a database, not as SQL scripts")
    context.configure(
        connection=context.config.attributes["connection"],
        target_metadata=SQLModel.metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things: batch mode copies the table
        render_item=render_item,
        compare_type=True,
        compare_server_default=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run()
