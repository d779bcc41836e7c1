"""Tenants: the API consumers (apps, agents) that call /v1 with their keys."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from agentwatch.admin.catalog_refresh import refresh_routing_table
from agentwatch.admin.crud import apply_patch, flush_or_conflict, get_in_org, summary
from agentwatch.admin.deps import AdminContext, require
from agentwatch.admin.dlp import StoredPolicy, authorize_new_policy, patch_policy
from agentwatch.admin.fields import (
    Cursor,
    Id,
    IdPath,
    IdQuery,
    Limit,
    ModelName,
    Name,
    Search,
    Strict,
    like_pattern,
)
from agentwatch.admin.pages import Page, fetch_page
from agentwatch.admin.spend_fields import (
    CONTROL_FIELDS,
    StoredBudget,
    StoredLimits,
    new_controls,
    patch_controls,
)
from agentwatch.db.models import ApiKey, Team, Tenant
from agentwatch.dlp.policy import DlpPolicy
from agentwatch.spend.specs import BudgetSpec, LimitsSpec

router = APIRouter(prefix="/api/tenants", tags=["tenants"])

MAX_ALLOWED_MODELS = 500
# Alias names; null means every alias of the organisation.
ModelList = Annotated[list[ModelName], Field(max_length=MAX_ALLOWED_MODELS)]
_AUDITED = ("name", "team_id", "allowed_models", "is_active", "dlp_policy", "limits", "budget")


class TenantCreate(Strict):
    name: Name
    team_id: Id | None = None
    allowed_models: ModelList | None = None
    is_active: bool = True
    dlp_policy: DlpPolicy | None = None
    limits: LimitsSpec | None = None
    budget: BudgetSpec | None = None


class TenantUpdate(Strict):
    name: Name | None = None
    team_id: Id | None = None
    allowed_models: ModelList | None = None
    is_active: bool | None = None
    dlp_policy: DlpPolicy | None = None  # null: its team's, or the organisation's
    limits: LimitsSpec | None = None  # null: none at this level
    budget: BudgetSpec | None = None


class TenantOut(BaseModel):
    id: int
    name: str
    team_id: int | None
    allowed_models: list[str] | None
    is_active: bool
    dlp_policy: StoredPolicy
    limits: StoredLimits
    budget: StoredBudget
    created_at: datetime


TenantsRead = Annotated[AdminContext, require("tenants:read")]
TenantsWrite = Annotated[AdminContext, require("tenants:write")]


def unique_models(models: list[str] | None) -> list[str] | None:
    """The list without repeats, in the order given (None stays None: every alias)."""
    return None if models is None else list(dict.fromkeys(models))


@router.get("", response_model=Page[TenantOut])
async def list_tenants(
    ctx: TenantsRead,
    search: Search = None,
    team_id: IdQuery = None,
    is_active: Annotated[bool | None, Query()] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[TenantOut]:
    query = select(Tenant).where(Tenant.org_id == ctx.org_id)
    if search:
        query = query.where(func.lower(Tenant.name).like(like_pattern(search), escape="\\"))
    if team_id is not None:
        query = query.where(Tenant.team_id == team_id)
    if is_active is not None:
        query = query.where(Tenant.is_active == is_active)
    rows, next_cursor = await fetch_page(ctx.session, query, Tenant.id, limit, cursor)
    return Page[TenantOut](
        data=[TenantOut.model_validate(r, from_attributes=True) for r in rows],
        next_cursor=next_cursor,
    )


@router.post("", response_model=TenantOut, status_code=201)
async def create_tenant(body: TenantCreate, ctx: TenantsWrite) -> TenantOut:
    if body.team_id is not None:
        await get_in_org(ctx.session, Team, body.team_id, ctx.org_id)
    ctx.authorize("tenants:write", body.team_id)
    tenant = Tenant(
        org_id=ctx.org_id,
        name=body.name,
        team_id=body.team_id,
        allowed_models=unique_models(body.allowed_models),
        is_active=body.is_active,
        dlp_policy=authorize_new_policy(ctx, body.dlp_policy),
        **new_controls(ctx, body),
    )
    ctx.session.add(tenant)
    await flush_or_conflict(ctx.session, f"a tenant named {body.name!r} already exists")
    await ctx.audit("tenant.created", f"tenant:{tenant.id}", after=summary(tenant, _AUDITED))
    await ctx.session.commit()
    if any(getattr(tenant, f) is not None for f in ("dlp_policy", *CONTROL_FIELDS)):
        await refresh_routing_table(ctx)
    return TenantOut.model_validate(tenant, from_attributes=True)


@router.get("/{tenant_id}", response_model=TenantOut)
async def get_tenant(tenant_id: IdPath, ctx: TenantsRead) -> TenantOut:
    tenant = await get_in_org(ctx.session, Tenant, tenant_id, ctx.org_id)
    return TenantOut.model_validate(tenant, from_attributes=True)


@router.patch("/{tenant_id}", response_model=TenantOut)
async def update_tenant(tenant_id: IdPath, body: TenantUpdate, ctx: TenantsWrite) -> TenantOut:
    tenant = await get_in_org(ctx.session, Tenant, tenant_id, ctx.org_id)
    ctx.authorize("tenants:write", tenant.team_id)
    sent = body.model_fields_set
    for field in ("name", "is_active"):
        if field in sent and getattr(body, field) is None:
            raise HTTPException(422, f"{field} cannot be null")
    if "team_id" in sent and body.team_id != tenant.team_id:
        if body.team_id is not None:
            await get_in_org(ctx.session, Team, body.team_id, ctx.org_id)
        ctx.authorize("tenants:write", body.team_id)  # moving needs both teams
    if "allowed_models" in sent:
        body.allowed_models = unique_models(body.allowed_models)
    before, after = apply_patch(tenant, body, exclude={"dlp_policy", *CONTROL_FIELDS})
    policy_changed = "dlp_policy" in sent and patch_policy(
        ctx, tenant, body.dlp_policy, before, after
    )
    policy_changed |= patch_controls(ctx, tenant, body, before, after)
    await flush_or_conflict(ctx.session, f"a tenant named {tenant.name!r} already exists")
    await ctx.audit("tenant.updated", f"tenant:{tenant.id}", before=before, after=after)
    await ctx.session.commit()
    if policy_changed:
        await refresh_routing_table(ctx)
    ctx.state.authenticator.forget_tenant(tenant.id)
    return TenantOut.model_validate(tenant, from_attributes=True)


@router.delete("/{tenant_id}", status_code=204, response_class=Response)
async def delete_tenant(tenant_id: IdPath, ctx: TenantsWrite) -> Response:
    """Deletes the tenant and its API keys (usage records keep their tenant id)."""
    tenant = await get_in_org(ctx.session, Tenant, tenant_id, ctx.org_id)
    ctx.authorize("tenants:write", tenant.team_id)
    keys = await ctx.session.scalar(
        select(func.count()).select_from(ApiKey).where(ApiKey.tenant_id == tenant.id)
    )
    await ctx.audit(
        "tenant.deleted",
        f"tenant:{tenant.id}",
        before=summary(tenant, _AUDITED),
        details={"keys_deleted": keys or 0},
    )
    await ctx.session.delete(tenant)
    await ctx.session.commit()
    ctx.state.authenticator.forget_tenant(tenant.id)
    return Response(status_code=204)
