"""realms and pools

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pools",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("query_type", sa.String(length=16), nullable=False),
        sa.Column("members", sa.JSON(), nullable=False),
        sa.Column("strategy", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "realms",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("primary_for", sa.JSON(), nullable=False),
        sa.Column("backup_for", sa.JSON(), nullable=False),
        sa.Column("strategy", sa.String(length=16), nullable=False),
        sa.Column("max_queue_size", sa.Integer(), nullable=False),
        sa.Column("min_workers", sa.Integer(), nullable=False),
        sa.Column("max_workers", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    with op.batch_alter_table("queries", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("realm", sa.String(length=64), nullable=False, server_default="")
        )

    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("realm", sa.String(length=64), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("specializations", sa.JSON(), nullable=False, server_default="{}")
        )


def downgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_column("specializations")
        batch_op.drop_column("realm")

    with op.batch_alter_table("queries", schema=None) as batch_op:
        batch_op.drop_column("realm")

    op.drop_table("realms")
    op.drop_table("pools")
