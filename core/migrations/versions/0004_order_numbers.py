"""Order numbers per restaurant: `orders.number` (1, 2, 3… per restaurant) and `restaurant.order_seq`.

The kitchen called orders by their global id, so restaurant 1 jumped from #6 to #27 when another
restaurant ordered. Existing orders are numbered per restaurant in id order (the order they were
placed), and each restaurant's counter starts after its last number.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 20:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("restaurant", schema=None) as batch_op:
        batch_op.add_column(sa.Column("order_seq", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("number", sa.Integer(), nullable=False, server_default="0"))
    # window functions: SQLite 3.25+ and PostgreSQL
    op.execute(
        "UPDATE orders SET number = (SELECT numbered.n FROM (SELECT id, ROW_NUMBER() OVER "
        "(PARTITION BY restaurant_id ORDER BY id) AS n FROM orders) AS numbered WHERE numbered.id = orders.id)"
    )
    op.execute(
        "UPDATE restaurant SET order_seq = COALESCE("
        "(SELECT MAX(orders.number) FROM orders WHERE orders.restaurant_id = restaurant.id), 0)"
    )
    with op.batch_alter_table("restaurant", schema=None) as batch_op:
        batch_op.alter_column("order_seq", server_default=None)
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.alter_column("number", server_default=None)
        batch_op.create_unique_constraint("uq_orders_restaurant_number", ["restaurant_id", "number"])


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_constraint("uq_orders_restaurant_number", type_="unique")
        batch_op.drop_column("number")
    with op.batch_alter_table("restaurant", schema=None) as batch_op:
        batch_op.drop_column("order_seq")
