"""The stock ledger (`stock_movement`), and ids that deleted rows never lend to new ones.

Every stock change writes one `stock_movement` line (`core.services.inventory.apply_stock`). An
item that existed before gets one opening line (`counted`, "opening balance") holding its figures,
so each item's ledger sums to its stock and damaged quantities from the start.

SQLite hands a deleted last row's id to the next insert unless the table is AUTOINCREMENT, and
events, retained topics and tokens name rows by id. SQLite cannot alter that in place: every table
with an integer key is rebuilt (batch mode, "recreate always") from what the database says it is now
(reflected, not written out here: revisions before this one may have added columns), with its rows,
indexes and foreign keys. The copy sets each table's counter to its highest id; an id deleted before
the upgrade at the very end of a table can still come back once, none after. PostgreSQL's sequences
never hand an id out twice: nothing to do there.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 06:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stock_movement",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("restaurant_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("stock_delta", sa.Integer(), nullable=False),
        sa.Column("damaged_delta", sa.Integer(), nullable=False),
        sa.Column("stock_after", sa.Integer(), nullable=False),
        sa.Column("damaged_after", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("actor", sa.String(), nullable=True),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"]),
        sa.ForeignKeyConstraint(["restaurant_id"], ["restaurant.id"]),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("stock_movement", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stock_movement_item_id"), ["item_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_stock_movement_restaurant_id"), ["restaurant_id"], unique=False)
    op.execute(
        "INSERT INTO stock_movement (restaurant_id, item_id, kind, stock_delta, damaged_delta, stock_after,"
        " damaged_after, reason, actor, order_id, created_at)"
        " SELECT restaurant_id, id, 'counted', stock_quantity, damaged_quantity, stock_quantity, damaged_quantity,"
        " 'opening balance', NULL, NULL, CURRENT_TIMESTAMP FROM menu_item"
        " WHERE stock_quantity <> 0 OR damaged_quantity <> 0 ORDER BY id"
    )
    if op.get_bind().dialect.name == "sqlite":
        for table in _reused_id_tables():
            with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": True}):
                pass


def _reused_id_tables() -> list[str]:
    """The tables whose key is one INTEGER column and that are not AUTOINCREMENT yet (SQLite)."""
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    found = []
    for table in sorted(inspector.get_table_names()):
        key = inspector.get_pk_constraint(table)["constrained_columns"]
        if table == "alembic_version" or len(key) != 1:
            continue
        column = next(c for c in inspector.get_columns(table) if c["name"] == key[0])
        sql = bind.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
        if isinstance(column["type"], sa.Integer) and "AUTOINCREMENT" not in sql.scalar_one().upper():
            found.append(table)
    return found


def downgrade() -> None:
    """The ledger goes; the tables stay AUTOINCREMENT (the schema before never relied on reuse)."""
    with op.batch_alter_table("stock_movement", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stock_movement_restaurant_id"))
        batch_op.drop_index(batch_op.f("ix_stock_movement_item_id"))
    op.drop_table("stock_movement")
