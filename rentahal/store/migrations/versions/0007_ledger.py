"""the credit ledger, and budget enforcement per user

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN (SQLite has it): batch mode would reflect the table, which loses
    # the expression index on lower(nickname).
    op.add_column(
        "users",
        sa.Column("budget_enforced", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "ledger",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("user_id", sa.String(length=32), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("query_id", sa.String(length=32), nullable=True),
        sa.Column("worker_name", sa.String(length=64), nullable=True),
        sa.Column("actor_id", sa.String(length=32), nullable=True),
        sa.Column("memo", sa.String(length=256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_ledger_user", "ledger", ["user_id", "id"])
    op.create_index("ix_ledger_query_id", "ledger", ["query_id"])


def downgrade() -> None:
    op.drop_index("ix_ledger_query_id", table_name="ledger")
    op.drop_index("ix_ledger_user", table_name="ledger")
    op.drop_table("ledger")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("budget_enforced")
