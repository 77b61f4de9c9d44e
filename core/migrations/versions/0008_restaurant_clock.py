"""The restaurant's own clock: `restaurant.timezone`, `restaurant.day_starts_at`, order numbers per business day.

`orders.business_date` is the service an order belongs to (`core.clock.business_date`); order numbers
restart at 1 each business day (`restaurant.order_day` is the day `order_seq` counts in), so the unique
key of a number is (restaurant, business date, number).

Existing restaurants read UTC with the day starting at 04:00 (the defaults). Existing orders get the
business date of their `created_at` under those defaults (UTC, 04:00), the rule new orders follow, so an
order placed right after the upgrade continues the count of its day instead of reusing a number. Their
numbers stay as they were (unique per restaurant, so unique per day too), and each restaurant's counter
continues after them on the day of its last order.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 07:00:00
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BACKFILL_DAY_STARTS_AT = 4  # the default: UTC, 04:00 (core.clock)

orders = sa.table(
    "orders",
    sa.column("id", sa.Integer()),
    sa.column("created_at", sa.DateTime()),
    sa.column("business_date", sa.Date()),
)


def _business_date(created_at: datetime) -> datetime:
    moment = created_at if created_at.tzinfo is None else created_at.astimezone(UTC).replace(tzinfo=None)
    return moment - timedelta(hours=BACKFILL_DAY_STARTS_AT)


def upgrade() -> None:
    with op.batch_alter_table("restaurant", schema=None) as batch_op:
        batch_op.add_column(sa.Column("order_day", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("timezone", sa.String(), nullable=False, server_default="UTC"))
        batch_op.add_column(sa.Column("day_starts_at", sa.Integer(), nullable=False, server_default="4"))
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("business_date", sa.Date(), nullable=True))

    # in Python: the same rule on SQLite and PostgreSQL, whatever each does with zones in SQL
    connection = op.get_bind()
    rows = connection.execute(sa.select(orders.c.id, orders.c.created_at)).all()
    for order_id, created_at in rows:
        day = _business_date(created_at).date()
        connection.execute(orders.update().where(orders.c.id == order_id).values(business_date=day))
    op.execute(
        "UPDATE restaurant SET order_day = "
        "(SELECT MAX(orders.business_date) FROM orders WHERE orders.restaurant_id = restaurant.id)"
    )

    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.alter_column("business_date", existing_type=sa.Date(), nullable=False)
        batch_op.drop_constraint("uq_orders_restaurant_number", type_="unique")
        batch_op.create_unique_constraint(
            "uq_orders_restaurant_day_number", ["restaurant_id", "business_date", "number"]
        )


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_constraint("uq_orders_restaurant_day_number", type_="unique")
        batch_op.drop_column("business_date")
    # numbers were per day: renumber per restaurant in id order, as 0004 did, to meet its unique key
    op.execute(
        "UPDATE orders SET number = (SELECT numbered.n FROM (SELECT id, ROW_NUMBER() OVER "
        "(PARTITION BY restaurant_id ORDER BY id) AS n FROM orders) AS numbered WHERE numbered.id = orders.id)"
    )
    op.execute(
        "UPDATE restaurant SET order_seq = COALESCE("
        "(SELECT MAX(orders.number) FROM orders WHERE orders.restaurant_id = restaurant.id), 0)"
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_unique_constraint("uq_orders_restaurant_number", ["restaurant_id", "number"])
    with op.batch_alter_table("restaurant", schema=None) as batch_op:
        batch_op.drop_column("day_starts_at")
        batch_op.drop_column("timezone")
        batch_op.drop_column("order_day")
