"""Organisations: the caller's own, or every one for a super admin.

This is the one resource addressed by an organisation id in the path: anyone but a super admin
reaches only the organisation of their token there, and any other id answers 404.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Response
from pydantic import BaseModel, BeforeValidator, Field, JsonValue, ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from agentwatch.admin.audit import AuditEvent, append_audit
from agentwatch.admin.catalog_refresh import refresh_routing_table
from agentwatch.admin.crud import flush_or_conflict, summary
from agentwatch.admin.deps import AdminContext, require
from agentwatch.admin.dlp import StoredPolicy, authorize_new_policy, patch_policy
from agentwatch.admin.fields import Cursor, IdPath, Limit, Name, Search, Strict, like_pattern
from agentwatch.admin.pages import Page, fetch_page
from agentwatch.admin.spend_fields import (
    CONTROL_FIELDS,
    StoredBudget,
    StoredLimits,
    new_controls,
    patch_controls,
)
from agentwatch.crypto import Keyring, encrypt_secret
from agentwatch.db.models import (
    AuditHead,
    Conversation,
    Organization,
    Tenant,
    UsageRecord,
)
from agentwatch.dlp.policy import DlpPolicy
from agentwatch.observe.bodies import BodyLogging
from agentwatch.spend.specs import BudgetSpec, LimitsSpec

router = APIRouter(prefix="/api/organizations", tags=["organizations"])

MAX_SETTINGS_BYTES = 16 * 1024
_AUDITED = (
    "name",
    "plan_id",
    "settings",
    "dlp_policy",
    "limits",
    "budget",
    "markup_pct",
    "alert_webhook_url",
)
# Spend-control fields: changing them needs billing:write on top of orgs:write.
_BILLING = {"markup_pct"}
WebhookUrl = Annotated[str, Field(max_length=2000, pattern=r"^https?://[^\s]+$")]
WebhookSecret = Annotated[str, Field(min_length=16, max_length=256)]
MarkupPct = Annotated[float, Field(ge=-100, le=1000, allow_inf_nan=False)]


def _bounded_settings(value: object) -> object:
    try:
        size = len(orjson.dumps(value))
    except (orjson.JSONEncodeError, TypeError) as exc:
        raise ValueError("settings must be a JSON object") from exc
    if size > MAX_SETTINGS_BYTES:
        raise ValueError(f"settings must be at most {MAX_SETTINGS_BYTES} bytes of JSON")
    if isinstance(value, dict) and {"log_bodies", "log_retention_days"} & value.keys():
        try:
            BodyLogging.model_validate(value)
        except ValidationError as exc:
            problems = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"settings: {problems}") from None
    return value


OrgSettings = Annotated[dict[str, JsonValue], BeforeValidator(_bounded_settings)]


class OrgCreate(Strict):
    name: Name
    settings: OrgSettings | None = None
    dlp_policy: DlpPolicy | None = None
    limits: LimitsSpec | None = None
    budget: BudgetSpec | None = None
    markup_pct: MarkupPct | None = None
    alert_webhook_url: WebhookUrl | None = None
    alert_webhook_secret: WebhookSecret | None = None  # write-only: signs alert webhooks


class OrgUpdate(Strict):
    name: Name | None = None
    settings: OrgSettings | None = None  # null: back to {}
    dlp_policy: DlpPolicy | None = None  # null: the built-in policy (or the config file's)
    limits: LimitsSpec | None = None  # null: none at this level
    budget: BudgetSpec | None = None
    markup_pct: MarkupPct | None = None  # +10: 10 % on top of list prices; -5: a discount
    alert_webhook_url: WebhookUrl | None = None
    alert_webhook_secret: WebhookSecret | None = None


class OrgOut(BaseModel):
    id: int
    name: str
    plan_id: int | None
    settings: dict[str, JsonValue]
    dlp_policy: StoredPolicy
    limits: StoredLimits
    budget: StoredBudget
    markup_pct: float | None
    alert_webhook_url: str | None
    alert_webhook_secret_set: bool
    created_at: datetime


def org_out(org: Organization) -> OrgOut:
    fields = {
        name: getattr(org, name)
        for name in OrgOut.model_fields
        if name != "alert_webhook_secret_set"
    }
    return OrgOut(**fields, alert_webhook_secret_set=org.alert_webhook_secret is not None)


def _sealed(ctx: AdminContext, secret: str | None) -> bytes | None:
    if secret is None:
        return None
    return encrypt_secret(secret, Keyring.from_settings(ctx.state.settings))


OrgsRead = Annotated[AdminContext, require("orgs:read")]
OrgsWrite = Annotated[AdminContext, require("orgs:write")]
OrgsAdmin = Annotated[AdminContext, require("orgs:admin")]


@router.get("", response_model=Page[OrgOut])
async def list_organizations(
    ctx: OrgsRead, search: Search = None, limit: Limit = 100, cursor: Cursor = None
) -> Page[OrgOut]:
    """Every organisation for a super admin; the caller's own for anyone else."""
    query = select(Organization)
    if not ctx.principal.is_super_admin:
        query = query.where(Organization.id == ctx.org_id)
    if search:
        query = query.where(func.lower(Organization.name).like(like_pattern(search), escape="\\"))
    rows, next_cursor = await fetch_page(ctx.session, query, Organization.id, limit, cursor)
    return Page[OrgOut](
        data=[org_out(r) for r in rows],
        next_cursor=next_cursor,
    )


@router.post("", response_model=OrgOut, status_code=201)
async def create_organization(body: OrgCreate, ctx: OrgsAdmin) -> OrgOut:
    """An empty organisation: no users, teams or models; add an org admin with `/api/users`."""
    if body.markup_pct is not None:
        ctx.authorize("billing:write")
    org = Organization(
        name=body.name,
        settings=body.settings or {},
        dlp_policy=authorize_new_policy(ctx, body.dlp_policy),
        markup_pct=body.markup_pct,
        alert_webhook_url=body.alert_webhook_url,
        alert_webhook_secret=_sealed(ctx, body.alert_webhook_secret),
        **new_controls(ctx, body),
    )
    if ctx.session.get_bind().dialect.name == "sqlite":
        org.id = await _unused_org_id(ctx.session)
    ctx.session.add(org)
    await flush_or_conflict(ctx.session, f"an organisation named {body.name!r} already exists")
    await _audit(ctx, org.id, "org.created", f"org:{org.id}", after=summary(org, _AUDITED))
    await ctx.session.commit()
    await refresh_routing_table(ctx)
    return org_out(org)


@router.get("/{org_id}", response_model=OrgOut)
async def get_organization(org_id: IdPath, ctx: OrgsRead) -> OrgOut:
    org = await _visible(ctx, org_id)
    return org_out(org)


@router.patch("/{org_id}", response_model=OrgOut)
async def update_organization(org_id: IdPath, body: OrgUpdate, ctx: OrgsWrite) -> OrgOut:
    org = await _visible(ctx, org_id)
    ctx.authorize("orgs:write")
    sent = body.model_fields_set
    if "name" in sent and body.name is None:
        raise HTTPException(422, "name cannot be null")
    own = {"dlp_policy", "alert_webhook_secret", *CONTROL_FIELDS}
    changes: dict[str, Any] = body.model_dump(include=sent - own)
    if "settings" in changes and changes["settings"] is None:
        changes["settings"] = {}
    if any(changes[f] != getattr(org, f) for f in _BILLING & changes.keys()):
        ctx.authorize("billing:write")
    before = summary(org, tuple(changes))
    for field, value in changes.items():
        setattr(org, field, value)
    policy_changed = "dlp_policy" in sent and patch_policy(
        ctx, org, body.dlp_policy, before, changes
    )
    policy_changed |= patch_controls(ctx, org, body, before, changes)
    if "alert_webhook_secret" in sent:
        org.alert_webhook_secret = _sealed(ctx, body.alert_webhook_secret)
        changes["alert_webhook_secret"] = "(set)" if body.alert_webhook_secret else None
    # `settings` holds the response cache's switch: it takes effect at once too.
    policy_changed |= bool(
        sent & {"markup_pct", "alert_webhook_url", "alert_webhook_secret", "settings"}
    )
    await flush_or_conflict(ctx.session, f"an organisation named {org.name!r} already exists")
    await _audit(ctx, org.id, "org.updated", f"org:{org.id}", before=before, after=changes)
    await ctx.session.commit()
    if policy_changed:
        await refresh_routing_table(ctx)
    return org_out(org)


@router.delete("/{org_id}", status_code=204, response_class=Response)
async def delete_organization(org_id: IdPath, ctx: OrgsAdmin) -> Response:
    """Deletes the organisation with everything it owns; its audit chain and usage ledger stay.

    The event is recorded in the caller's own organisation, whose chain outlives this one.
    """
    org = await _visible(ctx, org_id)
    if org.id == ctx.principal.home_org_id:
        raise HTTPException(409, "you cannot delete the organisation your own account belongs to")
    tenant_ids = list(await ctx.session.scalars(select(Tenant.id).where(Tenant.org_id == org.id)))
    home = ctx.principal.home_org_id
    await _audit(ctx, home, "org.deleted", f"org:{org.id}", before=summary(org, _AUDITED))
    await ctx.session.delete(org)
    await ctx.session.commit()
    for tenant_id in tenant_ids:  # its API keys stop working in this process at once
        ctx.state.authenticator.forget_tenant(tenant_id)
    return Response(status_code=204)


async def _visible(ctx: AdminContext, org_id: int) -> Organization:
    """The organisation, if the caller may see it: their acting one, or any for a super admin."""
    org = None
    if ctx.principal.is_super_admin or org_id == ctx.org_id:
        org = await ctx.session.get(Organization, org_id)
    if org is None:
        raise HTTPException(404, "no such organisation")
    return org


async def _unused_org_id(session: AsyncSession) -> int:
    """An id no organisation ever had. SQLite hands a deleted highest id out again, and the
    audit chain, usage ledger and conversations of a deleted organisation outlive it (no
    foreign key), so reusing its id would show them to the new organisation."""
    highest = 0
    for column in (Organization.id, AuditHead.org_id, UsageRecord.org_id, Conversation.org_id):
        highest = max(highest, await session.scalar(select(func.max(column))) or 0)
    return highest + 1


async def _audit(
    ctx: AdminContext,
    org_id: int,
    action: str,
    target: str,
    *,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
) -> None:
    """Like `ctx.audit`, in the chain of `org_id`: the organisation the event is about, so its
    own admins see who changed it, or the caller's own when it is being deleted."""
    details: dict[str, Any] = {}
    if before is not None:
        details["before"] = dict(before)
    if after is not None:
        details["after"] = dict(after)
    if org_id != ctx.principal.home_org_id:
        details["acting_from_org"] = ctx.principal.home_org_id
    await append_audit(
        ctx.session,
        AuditEvent(
            org_id=org_id,
            actor=ctx.principal.email,
            actor_id=ctx.principal.user_id,
            action=action,
            target=target,
            details=details,
            ip=ctx.client.ip,
            user_agent=ctx.client.user_agent,
        ),
    )
