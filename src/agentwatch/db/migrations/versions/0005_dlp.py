"""DLP policy overrides per organisation, team and tenant; who and what a conversation was

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 09:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_POLICY_TABLES = ("organizations", "teams", "tenants")


def upgrade() -> None:
    for table in _POLICY_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("dlp_policy", sa.JSON(), nullable=True))

    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("api_key_id", BigId, nullable=True))
        batch_op.add_column(sa.Column("team_id", BigId, nullable=True))
        batch_op.add_column(
            sa.Column("model", sa.String(length=200), server_default="", nullable=False)
        )
        batch_op.add_column(
            sa.Column("endpoint", sa.String(length=64), server_default="", nullable=False)
        )
        batch_op.add_column(sa.Column("status", sa.Integer(), server_default="200", nullable=False))
        batch_op.add_column(sa.Column("dlp_action", sa.String(length=16), nullable=True))
        batch_op.create_index("ix_conversations_org_risk", ["org_id", "risk_score"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_index("ix_conversations_org_risk")
        for column in ("dlp_action", "status", "endpoint", "model", "team_id", "api_key_id"):
            batch_op.drop_column(column)
    for table in reversed(_POLICY_TABLES):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("dlp_policy")
