"""Payments and refund history (`orders.paid_at`; who refunded and which lines, on `refund`), and
notifications as shared state (`notification.read_at`, `notification.dismissed_at`).

An order that was refunded before this revision was paid, or it could not have been refunded: it
gets `paid_at` = its creation time, so its payment status reads `refunded` / `partially_refunded`
rather than `unpaid`. Other orders start unpaid. Earlier refunds have no recorded author (NULL)
and no lines. A notification read before gets `read_at` = its creation time, so retention can
prune it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 06:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("refund", schema=None) as batch_op:
        batch_op.add_column(sa.Column("by_sub", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("by_user_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("by_email", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("lines", sa.JSON(), nullable=False, server_default="[]"))
    with op.batch_alter_table("refund", schema=None) as batch_op:
        batch_op.alter_column("lines", server_default=None)
    with op.batch_alter_table("notification", schema=None) as batch_op:
        batch_op.add_column(sa.Column("read_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("dismissed_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE orders SET paid_at = created_at WHERE refunded_cents > 0")
    op.execute("UPDATE notification SET read_at = created_at WHERE read")


def downgrade() -> None:
    with op.batch_alter_table("notification", schema=None) as batch_op:
        batch_op.drop_column("dismissed_at")
        batch_op.drop_column("read_at")
    with op.batch_alter_table("refund", schema=None) as batch_op:
        batch_op.drop_column("lines")
        batch_op.drop_column("by_email")
        batch_op.drop_column("by_user_id")
        batch_op.drop_column("by_sub")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_column("paid_at")
