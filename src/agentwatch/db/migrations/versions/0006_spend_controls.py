"""Spend controls: limits and budgets per organisation, team, tenant and key; the ledger
records teams, reasoning tokens and unknown usage (NULL); daily rollups; budget alerts

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_CONTROLLED = ("organizations", "teams", "tenants", "api_keys")


def upgrade() -> None:
    for table in _CONTROLLED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("limits", sa.JSON(), nullable=True))
            batch_op.add_column(sa.Column("budget", sa.JSON(), nullable=True))
    with op.batch_alter_table("organizations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("markup_pct", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("alert_webhook_url", sa.String(2000), nullable=True))
        batch_op.add_column(sa.Column("alert_webhook_secret", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reasoning_cost_per_mtok", sa.Float(), nullable=True))
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("team_id", BigId, nullable=True))
        batch_op.add_column(sa.Column("reasoning_tokens", sa.Integer(), nullable=True))
        for column in ("prompt_tokens", "completion_tokens"):
            batch_op.alter_column(column, existing_type=sa.Integer(), nullable=True)
        batch_op.alter_column("cost_nanousd", existing_type=sa.BigInteger(), nullable=True)
        batch_op.create_index("ix_usage_records_team_created", ["team_id", "created_at"])
    op.create_table(
        "usage_daily",
        sa.Column("id", BigId, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("org_id", BigId, nullable=False),
        # 0 / "" stand for "none", so the natural key can be unique on every backend.
        sa.Column("team_id", BigId, nullable=False),
        sa.Column("tenant_id", BigId, nullable=False),
        sa.Column("api_key_id", BigId, nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("provider", sa.String(200), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cached_tokens", sa.BigInteger(), nullable=False),
        sa.Column("reasoning_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_nanousd", sa.BigInteger(), nullable=False),
        sa.Column("unknown_cost_requests", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_daily")),
        sa.UniqueConstraint(
            "org_id",
            "day",
            "team_id",
            "tenant_id",
            "api_key_id",
            "model",
            "provider",
            name=op.f("uq_usage_daily_key"),
        ),
    )
    op.create_table(
        "budget_alerts",
        sa.Column("id", BigId, nullable=False),
        sa.Column("org_id", BigId, nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("scope_id", BigId, nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("threshold", sa.String(16), nullable=False),
        sa.Column("spent_nanousd", sa.BigInteger(), nullable=False),
        sa.Column("limit_nanousd", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budget_alerts")),
        sa.UniqueConstraint(
            "scope", "scope_id", "period_start", "threshold", name=op.f("uq_budget_alerts_once")
        ),
    )


def downgrade() -> None:
    op.drop_table("budget_alerts")
    op.drop_table("usage_daily")
    for column in ("cost_nanousd", "prompt_tokens", "completion_tokens"):
        op.execute(f"UPDATE usage_records SET {column} = 0 WHERE {column} IS NULL")
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_records_team_created")
        batch_op.alter_column("cost_nanousd", existing_type=sa.BigInteger(), nullable=False)
        for column in ("completion_tokens", "prompt_tokens"):
            batch_op.alter_column(column, existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column("reasoning_tokens")
        batch_op.drop_column("team_id")
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_column("reasoning_cost_per_mtok")
    with op.batch_alter_table("organizations", schema=None) as batch_op:
        for column in ("alert_webhook_secret", "alert_webhook_url", "markup_pct"):
            batch_op.drop_column(column)
    for table in reversed(_CONTROLLED):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("budget")
            batch_op.drop_column("limits")
