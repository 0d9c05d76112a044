"""each user's balance kept beside their ledger rows (it was summed from them on every query)

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "users", sa.Column("balance", sa.BigInteger(), nullable=False, server_default="0")
    )
    op.execute(
        "UPDATE users SET balance = "
        "(SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE user_id = users.id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("balance")
