"""cache-write tokens in the ledger and their price in the catalogue

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 01:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("cache_write_tokens", sa.Integer(), server_default="0", nullable=False)
        )
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cache_write_cost_per_mtok", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_column("cache_write_cost_per_mtok")
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.drop_column("cache_write_tokens")
