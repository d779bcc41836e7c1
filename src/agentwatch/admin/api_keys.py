"""Tenant API keys: issue (the secret is shown once), list, change, revoke, rotate.

A key row belongs to a tenant; the organisation is reached through it, so every lookup joins
the tenant and filters on the caller's organisation. After a change, this process's key cache
drops the key at once (other replicas within its TTL).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Body, HTTPException, Query
from pydantic import BaseModel, Field, model_validator
from sqlalchemy import ColumnElement, and_, not_, or_, select

from agentwatch.admin.catalog_refresh import refresh_routing_table
from agentwatch.admin.crud import apply_patch, flush_or_conflict, get_in_org, summary
from agentwatch.admin.deps import AdminContext, require
from agentwatch.admin.fields import Cursor, IdPath, Limit, Name, PerMinute, Strict
from agentwatch.admin.pages import Page, fetch_page
from agentwatch.admin.spend_fields import (
    CONTROL_FIELDS,
    StoredBudget,
    StoredLimits,
    new_controls,
    patch_controls,
)
from agentwatch.admin.tenants import ModelList, unique_models
from agentwatch.crypto import hash_tenant_key, key_prefix, new_tenant_key
from agentwatch.db.models import ApiKey, Tenant, utcnow
from agentwatch.spend.specs import BudgetSpec, LimitsSpec

router = APIRouter(tags=["api keys"])

KeyStatus = Literal["active", "expired", "revoked"]
MAX_LIFETIME_DAYS = 36_500  # far enough for anyone, near enough to stay a valid datetime
MAX_GRACE_SECONDS = 7 * 24 * 3600
_AUDITED = (
    "tenant_id",
    "name",
    "prefix",
    "allowed_models",
    "rpm_limit",
    "tpm_limit",
    "limits",
    "budget",
    "expires_at",
)


class KeyCreate(Strict):
    name: Name | None = None
    expires_at: datetime | None = Field(None, description="ISO 8601, in the future; UTC if naive")
    expires_in_days: Annotated[int, Field(ge=1, le=MAX_LIFETIME_DAYS)] | None = None
    allowed_models: ModelList | None = None
    rpm_limit: PerMinute | None = None
    tpm_limit: PerMinute | None = None
    limits: LimitsSpec | None = None
    budget: BudgetSpec | None = None

    @model_validator(mode="after")
    def one_expiry(self) -> KeyCreate:
        if self.expires_at is not None and self.expires_in_days is not None:
            raise ValueError("send expires_at or expires_in_days, not both")
        return self


class KeyUpdate(Strict):
    name: Name | None = None
    expires_at: datetime | None = None
    allowed_models: ModelList | None = None
    rpm_limit: PerMinute | None = None
    tpm_limit: PerMinute | None = None
    limits: LimitsSpec | None = None  # null: none at this level
    budget: BudgetSpec | None = None


class KeyRotate(Strict):
    grace_seconds: Annotated[int, Field(ge=0, le=MAX_GRACE_SECONDS)] = 3600


class KeyOut(BaseModel):
    id: int
    tenant_id: int
    name: str | None
    prefix: str
    allowed_models: list[str] | None
    rpm_limit: int | None
    tpm_limit: int | None
    limits: StoredLimits
    budget: StoredBudget
    expires_at: datetime | None
    revoked_at: datetime | None
    is_active: bool
    created_at: datetime
    status: KeyStatus


class KeyCreated(KeyOut):
    key: str = Field(description="the secret: shown in this response only, never again")


KeysRead = Annotated[AdminContext, require("keys:read")]
KeysWrite = Annotated[AdminContext, require("keys:write")]


def key_status(key: ApiKey, now: datetime) -> KeyStatus:
    if key.revoked_at is not None or not key.is_active:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"


def _has_controls(key: ApiKey) -> bool:
    fields = ("limits", "budget", "rpm_limit", "tpm_limit")
    return any(getattr(key, name) is not None for name in fields)


def key_out(key: ApiKey) -> KeyOut:
    fields = {name: getattr(key, name) for name in KeyOut.model_fields if name != "status"}
    return KeyOut(**fields, status=key_status(key, utcnow()))


def _created(key: ApiKey, secret: str) -> KeyCreated:
    return KeyCreated(**key_out(key).model_dump(), key=secret)


def _status_filter(status: KeyStatus, now: datetime) -> ColumnElement[bool]:
    revoked = or_(ApiKey.revoked_at.is_not(None), not_(ApiKey.is_active))
    expired = and_(ApiKey.expires_at.is_not(None), ApiKey.expires_at <= now)
    if status == "revoked":
        return revoked
    if status == "expired":
        return and_(not_(revoked), expired)
    return and_(not_(revoked), not_(expired))


def _future(value: datetime) -> datetime:
    # Compared before converting: near year 1 or 9999 the conversion to UTC would overflow.
    when = value.replace(tzinfo=UTC) if value.tzinfo is None else value
    now = utcnow()
    if when <= now:
        raise HTTPException(422, "expires_at must be in the future")
    if when > now + timedelta(days=MAX_LIFETIME_DAYS):
        raise HTTPException(422, f"expires_at must be within {MAX_LIFETIME_DAYS} days")
    return when.astimezone(UTC)


def _narrowing(tenant: Tenant, models: list[str] | None) -> list[str] | None:
    """A key's own list, which may only name aliases its tenant may use."""
    models = unique_models(models)
    if models is not None and tenant.allowed_models is not None:
        outside = [m for m in models if m not in tenant.allowed_models]
        if outside:
            raise HTTPException(
                422, f"allowed_models names aliases the tenant may not use: {outside[:10]}"
            )
    return models


async def _key_in_org(ctx: AdminContext, key_id: int) -> tuple[ApiKey, Tenant]:
    row = (
        await ctx.session.execute(
            select(ApiKey, Tenant)
            .join(Tenant, Tenant.id == ApiKey.tenant_id)
            .where(ApiKey.id == key_id, Tenant.org_id == ctx.org_id)
        )
    ).first()
    if row is None:
        raise HTTPException(404, "no such API key")
    return row[0], row[1]


def _issue(tenant_id: int, **settings: object) -> tuple[ApiKey, str]:
    secret = new_tenant_key()
    key = ApiKey(
        tenant_id=tenant_id,
        key_hash=hash_tenant_key(secret),
        prefix=key_prefix(secret),
        is_active=True,
        **settings,
    )
    return key, secret


@router.get("/api/tenants/{tenant_id}/keys", response_model=Page[KeyOut])
async def list_keys(
    tenant_id: IdPath,
    ctx: KeysRead,
    status: Annotated[KeyStatus | None, Query()] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[KeyOut]:
    tenant = await get_in_org(ctx.session, Tenant, tenant_id, ctx.org_id)
    query = select(ApiKey).where(ApiKey.tenant_id == tenant.id)
    if status is not None:
        query = query.where(_status_filter(status, utcnow()))
    rows, next_cursor = await fetch_page(ctx.session, query, ApiKey.id, limit, cursor)
    return Page[KeyOut](data=[key_out(r) for r in rows], next_cursor=next_cursor)


@router.post("/api/tenants/{tenant_id}/keys", response_model=KeyCreated, status_code=201)
async def create_key(tenant_id: IdPath, body: KeyCreate, ctx: KeysWrite) -> KeyCreated:
    tenant = await get_in_org(ctx.session, Tenant, tenant_id, ctx.org_id)
    ctx.authorize("keys:write", tenant.team_id)
    expires_at = _future(body.expires_at) if body.expires_at is not None else None
    if body.expires_in_days is not None:
        expires_at = utcnow() + timedelta(days=body.expires_in_days)
    key, secret = _issue(
        tenant.id,
        name=body.name,
        expires_at=expires_at,
        allowed_models=_narrowing(tenant, body.allowed_models),
        rpm_limit=body.rpm_limit,
        tpm_limit=body.tpm_limit,
        **new_controls(ctx, body),
    )
    ctx.session.add(key)
    await flush_or_conflict(ctx.session, "key collision; try again")
    await ctx.audit("key.created", f"key:{key.id}", after=summary(key, _AUDITED))
    await ctx.session.commit()
    if _has_controls(key):
        await refresh_routing_table(ctx)
    return _created(key, secret)


@router.get("/api/keys/{key_id}", response_model=KeyOut)
async def get_key(key_id: IdPath, ctx: KeysRead) -> KeyOut:
    key, _ = await _key_in_org(ctx, key_id)
    return key_out(key)


@router.patch("/api/keys/{key_id}", response_model=KeyOut)
async def update_key(key_id: IdPath, body: KeyUpdate, ctx: KeysWrite) -> KeyOut:
    key, tenant = await _key_in_org(ctx, key_id)
    ctx.authorize("keys:write", tenant.team_id)
    sent = body.model_fields_set
    if "expires_at" in sent and body.expires_at is not None:
        body.expires_at = _future(body.expires_at)
    if "allowed_models" in sent:
        body.allowed_models = _narrowing(tenant, body.allowed_models)
    before, after = apply_patch(key, body, exclude=set(CONTROL_FIELDS))
    changed = patch_controls(ctx, key, body, before, after)
    changed |= bool(sent & {"rpm_limit", "tpm_limit"})
    await flush_or_conflict(ctx.session, "the key changed meanwhile; try again")
    await ctx.audit("key.updated", f"key:{key.id}", before=before, after=after)
    await ctx.session.commit()
    ctx.state.authenticator.forget(key.key_hash)
    if changed:
        await refresh_routing_table(ctx)
    return key_out(key)


@router.post("/api/keys/{key_id}/revoke", response_model=KeyOut)
async def revoke_key(key_id: IdPath, ctx: KeysWrite) -> KeyOut:
    """Refuses the key from now on; revoking a revoked key changes nothing."""
    key, tenant = await _key_in_org(ctx, key_id)
    ctx.authorize("keys:write", tenant.team_id)
    if key_status(key, utcnow()) != "revoked":
        before = summary(key, ("is_active", "revoked_at"))
        key.is_active, key.revoked_at = False, utcnow()
        await flush_or_conflict(ctx.session, "the key changed meanwhile; try again")
        after = summary(key, ("is_active", "revoked_at"))
        await ctx.audit("key.revoked", f"key:{key.id}", before=before, after=after)
        await ctx.session.commit()
    ctx.state.authenticator.forget(key.key_hash)
    return key_out(key)


@router.post("/api/keys/{key_id}/rotate", response_model=KeyCreated, status_code=201)
async def rotate_key(
    key_id: IdPath, ctx: KeysWrite, body: Annotated[KeyRotate | None, Body()] = None
) -> KeyCreated:
    """A new key with the old one's settings (shown once); the old one lives `grace_seconds`
    more (0: revoked at once), never longer than it would have."""
    old, tenant = await _key_in_org(ctx, key_id)
    ctx.authorize("keys:write", tenant.team_id)
    grace = (body or KeyRotate()).grace_seconds
    now = utcnow()
    status = key_status(old, now)
    if status != "active":
        raise HTTPException(409, f"the key is {status}; create a new key instead")
    new, secret = _issue(
        tenant.id,
        name=old.name,
        expires_at=old.expires_at,
        allowed_models=old.allowed_models,
        rpm_limit=old.rpm_limit,
        tpm_limit=old.tpm_limit,
        limits=old.limits,
        budget=old.budget,
    )
    ctx.session.add(new)
    before = summary(old, ("is_active", "revoked_at", "expires_at"))
    if grace == 0:
        old.is_active, old.revoked_at = False, now
    else:
        ends = now + timedelta(seconds=grace)
        old.expires_at = ends if old.expires_at is None else min(old.expires_at, ends)
    await flush_or_conflict(ctx.session, "key collision; try again")
    await ctx.audit(
        "key.rotated",
        f"key:{old.id}",
        before=before,
        after=summary(old, ("is_active", "revoked_at", "expires_at")),
        details={"grace_seconds": grace, "new_key": summary(new, ("id", *_AUDITED))},
    )
    await ctx.session.commit()
    ctx.state.authenticator.forget(old.key_hash)
    if _has_controls(new):
        await refresh_routing_table(ctx)
    return _created(new, secret)
