"""Archived restaurants (`restaurant.archived_at`), and each restaurant's currency (`restaurant.currency`).

A restaurant that closes (or one `orderbus simulate` made) is archived, not deleted: its orders,
events and tickets stay history, its id is never handed to a new restaurant (tokens and topics name
restaurants by id), and it leaves the lists. See `core.services.archive`.

Amounts were always hundredths of an unnamed currency; restaurants made before get EUR.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 03:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("restaurant", schema=None) as batch_op:
        batch_op.add_column(sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("currency", sa.String(), nullable=False, server_default="EUR"))
    with op.batch_alter_table("restaurant", schema=None) as batch_op:
        batch_op.alter_column("currency", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("restaurant", schema=None) as batch_op:
        batch_op.drop_column("currency")
        batch_op.drop_column("archived_at")
