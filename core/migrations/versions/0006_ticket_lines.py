"""A ticket keeps the lines it carries (`ticket.lines`) and whether it is an edit's chit (`ticket.partial`).

An edit of a placed order (`core.services.order_edits`) cuts ADD and VOID chits that carry only the
changed lines; resending one (`core.services.tickets.resend_unprinted`) must send the same lines, not
the order's current ones. Tickets cut before keep `lines` NULL and are recomputed from the order as before.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ticket", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lines", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("partial", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("ticket", schema=None) as batch_op:
        batch_op.alter_column("partial", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("ticket", schema=None) as batch_op:
        batch_op.drop_column("partial")
        batch_op.drop_column("lines")
