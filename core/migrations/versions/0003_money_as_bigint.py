"""An order's total, its refunded total and a refund's amount as BIGINT.

The largest valid order (core/sizes.py) totals more than PostgreSQL's INTEGER holds: placing it was a
500 ("integer out of range"). SQLite stores 64-bit integers either way; the batch copy there only
changes the declared type, so the models and the schema agree on both.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 14:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = {"orders": ("total_cents", "refunded_cents"), "refund": ("amount_cents",)}


def upgrade() -> None:
    for table, columns in COLUMNS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in columns:
                batch_op.alter_column(
                    column, existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=False
                )


def downgrade() -> None:
    for table, columns in COLUMNS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in columns:
                batch_op.alter_column(
                    column, existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=False
                )
