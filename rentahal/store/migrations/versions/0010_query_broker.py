"""the broker that holds each unfinished query (a cluster takes over a dead broker's)

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("queries", sa.Column("broker_id", sa.String(32), nullable=True))
    op.create_index("ix_queries_broker_state", "queries", ["broker_id", "state"])


def downgrade() -> None:
    op.drop_index("ix_queries_broker_state", table_name="queries")
    with op.batch_alter_table("queries", schema=None) as batch_op:
        batch_op.drop_column("broker_id")
