"""the idempotency key a forwarded query came with (a peer's repeat joins the first)

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("queries", sa.Column("idempotency_key", sa.String(160), nullable=True))
    op.create_index(
        "uq_queries_user_idempotency_key",
        "queries",
        ["user_id", "idempotency_key"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("uq_queries_user_idempotency_key", table_name="queries")
    with op.batch_alter_table("queries", schema=None) as batch_op:
        batch_op.drop_column("idempotency_key")
