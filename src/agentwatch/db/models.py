"""The SQLAlchemy schema: one set of typed models for SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only autoincrements INTEGER PRIMARY KEY, so big ids are plain integers there.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


class Organization(Base):
    __tablename__ = "organizations"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    plan_id: Mapped[int | None] = mapped_column(ForeignKey("subscription_plans.id"))
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # DLP policy override (agentwatch.dlp.policy.DlpPolicy, as JSON); None: the built-in one.
    dlp_policy: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    # Spend controls (agentwatch.limits: `limits` rpm/tpm/max_parallel, `budget` money/period).
    limits: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    budget: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    markup_pct: Mapped[float | None] = mapped_column(Float)  # +10: 10 % on top; -5: discount
    alert_webhook_url: Mapped[str | None] = mapped_column(String(2000))
    alert_webhook_secret: Mapped[bytes | None] = mapped_column(LargeBinary)  # AES-GCM, as keys
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SubscriptionPlan(Base):
    __tablename__ = "subscription_plans"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    monthly_price_usd: Mapped[float] = mapped_column(Float, default=0.0)
    limits: Mapped[dict[str, Any]] = mapped_column(default=dict)
    stripe_price_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Team(Base):
    __tablename__ = "teams"
    __table_args__ = (UniqueConstraint("org_id", "name"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(String(1000))
    # Budget settings; spend is derived from the ledger, never stored here.
    max_budget_usd: Mapped[float | None] = mapped_column(Float)
    soft_budget_usd: Mapped[float | None] = mapped_column(Float)
    budget_duration: Mapped[str | None] = mapped_column(String(20))
    rpm_limit: Mapped[int | None] = mapped_column(Integer)
    tpm_limit: Mapped[int | None] = mapped_column(BigInteger)
    # DLP policy override of the organisation's for the team's tenants; None: inherit.
    dlp_policy: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    limits: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    budget: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TeamMembership(Base):
    __tablename__ = "team_memberships"
    __table_args__ = (UniqueConstraint("team_id", "user_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # "member" or "team_admin": a team admin manages the team, its members, tenants and keys.
    role: Mapped[str] = mapped_column(String(40), default="member")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class OrgRole(Base):
    __tablename__ = "org_roles"
    __table_args__ = (UniqueConstraint("org_id", "name"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    permissions: Mapped[list[Any]] = mapped_column(default=list)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    # A built-in role (agentwatch.admin.rbac.Role); `role_id` adds a custom role's permissions.
    role: Mapped[str] = mapped_column(String(40), default="member", server_default="member")
    role_id: Mapped[int | None] = mapped_column(ForeignKey("org_roles.id", ondelete="SET NULL"))
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(200))
    # The last few earlier hashes, so a password is not reused.
    password_history: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")
    failed_logins: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    locked_until: Mapped[datetime | None] = mapped_column()
    # Tokens issued before this instant are void (logout everywhere, password change).
    tokens_valid_after: Mapped[datetime | None] = mapped_column()
    is_super_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RevokedToken(Base):
    """Admin access tokens logged out before they expire (kept until they would have)."""

    __tablename__ = "revoked_tokens"
    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class Tenant(Base):
    """An API consumer: an app or agent that calls /v1 with its keys."""

    __tablename__ = "tenants"
    __table_args__ = (UniqueConstraint("org_id", "name"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(200))
    allowed_models: Mapped[list[Any] | None] = mapped_column(JSON, default=None)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    # DLP policy override of its team's (or organisation's); None: inherit.
    dlp_policy: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    limits: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    budget: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(String(200))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    expires_at: Mapped[datetime | None] = mapped_column()
    # Narrows the tenant's allowed models; None: whatever the tenant may use.
    allowed_models: Mapped[list[Any] | None] = mapped_column(JSON, default=None)
    rpm_limit: Mapped[int | None] = mapped_column(Integer)
    tpm_limit: Mapped[int | None] = mapped_column(BigInteger)
    revoked_at: Mapped[datetime | None] = mapped_column()
    limits: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    budget: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Provider(Base):
    __tablename__ = "providers"
    __table_args__ = (UniqueConstraint("org_id", "name"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(40))
    base_url: Mapped[str | None] = mapped_column(String(2000))
    timeout_seconds: Mapped[float | None] = mapped_column(Float)
    extra: Mapped[dict[str, Any]] = mapped_column(default=dict)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProviderKey(Base):
    """An upstream credential, AES-256-GCM encrypted with ENCRYPTION_KEY."""

    __tablename__ = "provider_keys"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    provider_id: Mapped[int] = mapped_column(
        ForeignKey("providers.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200), default="default")
    encrypted_key: Mapped[bytes] = mapped_column(LargeBinary)
    # What the API shows instead of the key: its first and last few characters.
    masked: Mapped[str] = mapped_column(String(40), default="", server_default="")
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Model(Base):
    """A catalogue entry: a model alias with its routes, or a priced upstream model."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("org_id", "name"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    routes: Mapped[list[Any]] = mapped_column(default=list)
    # strategy, retries, circuit: how the routes are used (see agentwatch.routing)
    routing: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    input_cost_per_mtok: Mapped[float | None] = mapped_column(Float)
    output_cost_per_mtok: Mapped[float | None] = mapped_column(Float)
    cached_input_cost_per_mtok: Mapped[float | None] = mapped_column(Float)
    cache_write_cost_per_mtok: Mapped[float | None] = mapped_column(Float)
    reasoning_cost_per_mtok: Mapped[float | None] = mapped_column(Float)
    context_window: Mapped[int | None] = mapped_column(Integer)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class UsageRecord(Base):
    """The append-only ledger: one row per request that reached the gateway's router."""

    __tablename__ = "usage_records"
    __table_args__ = (
        Index("ix_usage_records_org_created", "org_id", "created_at", "id"),
        Index("ix_usage_records_tenant_created", "tenant_id", "created_at"),
        Index("ix_usage_records_model_created", "org_id", "model", "created_at"),
        Index("ix_usage_records_team_created", "team_id", "created_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column()
    org_id: Mapped[int] = mapped_column(BigId)
    tenant_id: Mapped[int | None] = mapped_column(BigId)
    api_key_id: Mapped[int | None] = mapped_column(BigId)
    model: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str | None] = mapped_column(String(200))
    upstream_model: Mapped[str | None] = mapped_column(String(200))
    endpoint: Mapped[str] = mapped_column(String(64))
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[int] = mapped_column(Integer)
    error_type: Mapped[str | None] = mapped_column(String(64))
    # NULL: the upstream reported no usage, so the count (and the cost) is unknown, not zero.
    prompt_tokens: Mapped[int | None] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int | None] = mapped_column(Integer, default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cache_write_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    reasoning_tokens: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    team_id: Mapped[int | None] = mapped_column(BigId)
    # Nano-dollars: exact integer sums on every backend.
    cost_nanousd: Mapped[int | None] = mapped_column(BigInteger, default=0)
    latency_ms: Mapped[float] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    # Answered from the response cache (cost_nanousd 0); saved_nanousd: what it would have cost.
    cache_hit: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    saved_nanousd: Mapped[int | None] = mapped_column(BigInteger)


class AuditLog(Base):
    """Append-only and hash-chained per organisation: each row's hash covers the previous
    row's hash; org 0 holds events of no organisation (a failed login of an unknown email)."""

    __tablename__ = "audit_logs"
    __table_args__ = (
        UniqueConstraint("org_id", "seq"),
        Index("ix_audit_logs_org_created", "org_id", "created_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId)
    seq: Mapped[int] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(320))
    actor_id: Mapped[int | None] = mapped_column(BigId)
    action: Mapped[str] = mapped_column(String(100))
    target: Mapped[str | None] = mapped_column(String(400))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(400))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditHead(Base):
    """The newest row of each organisation's chain: locked to append, so appends queue, and
    compared by verification, so deleting the newest rows is caught too."""

    __tablename__ = "audit_heads"
    org_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    hash: Mapped[str] = mapped_column(String(64))


class Conversation(Base):
    """A call the DLP stage acted on or recorded: who sent it, what was found, what was done."""

    __tablename__ = "conversations"
    __table_args__ = (
        Index("ix_conversations_org_created", "org_id", "created_at"),
        Index("ix_conversations_org_risk", "org_id", "risk_score"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId)
    tenant_id: Mapped[int | None] = mapped_column(BigId)
    api_key_id: Mapped[int | None] = mapped_column(BigId)
    team_id: Mapped[int | None] = mapped_column(BigId)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    model: Mapped[str] = mapped_column(String(200), default="", server_default="")
    endpoint: Mapped[str] = mapped_column(String(64), default="", server_default="")
    status: Mapped[int] = mapped_column(Integer, default=200, server_default="200")
    messages: Mapped[list[Any]] = mapped_column(default=list)
    dlp_events: Mapped[list[Any]] = mapped_column(default=list)
    # The strongest action taken on the call (block > redact > log); None when none was.
    dlp_action: Mapped[str | None] = mapped_column(String(16))
    risk_score: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class UsageDaily(Base):
    """Rollup of the ledger per day and who/what, refreshed in the background for dashboards;
    0 and "" stand for "none" so the natural key is unique on every backend."""

    __tablename__ = "usage_daily"
    __table_args__ = (
        UniqueConstraint(
            "org_id", "day", "team_id", "tenant_id", "api_key_id", "model", "provider",
            name="uq_usage_daily_key",
        ),
    )  # fmt: skip
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    day: Mapped[date] = mapped_column(Date)
    org_id: Mapped[int] = mapped_column(BigId)
    team_id: Mapped[int] = mapped_column(BigId)
    tenant_id: Mapped[int] = mapped_column(BigId)
    api_key_id: Mapped[int] = mapped_column(BigId)
    model: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str] = mapped_column(String(200))
    requests: Mapped[int] = mapped_column(BigInteger)
    errors: Mapped[int] = mapped_column(BigInteger)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger)
    completion_tokens: Mapped[int] = mapped_column(BigInteger)
    cached_tokens: Mapped[int] = mapped_column(BigInteger)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger)
    cost_nanousd: Mapped[int] = mapped_column(BigInteger)
    unknown_cost_requests: Mapped[int] = mapped_column(BigInteger)


class BudgetAlert(Base):
    """One row per budget threshold crossed per period: the unique key makes the alert fire
    once across every replica."""

    __tablename__ = "budget_alerts"
    __table_args__ = (
        UniqueConstraint(
            "scope", "scope_id", "period_start", "threshold", name="uq_budget_alerts_once"
        ),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(BigId)
    scope: Mapped[str] = mapped_column(String(16))  # org | team | tenant | key
    scope_id: Mapped[int] = mapped_column(BigId)
    period_start: Mapped[datetime] = mapped_column()
    threshold: Mapped[str] = mapped_column(String(16))  # soft | 80 | 100
    spent_nanousd: Mapped[int] = mapped_column(BigInteger)
    limit_nanousd: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
