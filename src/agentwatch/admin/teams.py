"""Teams (with their budget settings) and team memberships."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Response
from pydantic import BaseModel
from sqlalchemy import func, select

from agentwatch.admin.catalog_refresh import refresh_routing_table
from agentwatch.admin.crud import apply_patch, flush_or_conflict, get_in_org, summary
from agentwatch.admin.deps import AdminContext, require
from agentwatch.admin.dlp import StoredPolicy, authorize_new_policy, patch_policy
from agentwatch.admin.fields import (
    Cursor,
    Description,
    IdPath,
    Limit,
    Name,
    PerMinute,
    Search,
    Strict,
    Usd,
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
from agentwatch.db.models import Team, TeamMembership, User
from agentwatch.dlp.policy import DlpPolicy
from agentwatch.spend.specs import BudgetSpec, LimitsSpec

router = APIRouter(prefix="/api/teams", tags=["teams"])

BudgetDuration = Literal["1d", "7d", "30d", "monthly"]
TeamRole = Literal["member", "team_admin"]
_AUDITED = (
    "name",
    "description",
    "max_budget_usd",
    "soft_budget_usd",
    "budget_duration",
    "rpm_limit",
    "tpm_limit",
    "dlp_policy",
    "limits",
    "budget",
)


_LEGACY_CONTROLS = {
    "max_budget_usd",
    "soft_budget_usd",
    "budget_duration",
    "rpm_limit",
    "tpm_limit",
}


class TeamCreate(Strict):
    name: Name
    description: Description | None = None
    max_budget_usd: Usd | None = None
    soft_budget_usd: Usd | None = None
    budget_duration: BudgetDuration | None = None
    rpm_limit: PerMinute | None = None
    tpm_limit: PerMinute | None = None
    dlp_policy: DlpPolicy | None = None
    limits: LimitsSpec | None = None
    budget: BudgetSpec | None = None


class TeamUpdate(Strict):
    name: Name | None = None
    description: Description | None = None
    max_budget_usd: Usd | None = None
    soft_budget_usd: Usd | None = None
    budget_duration: BudgetDuration | None = None
    rpm_limit: PerMinute | None = None
    tpm_limit: PerMinute | None = None
    dlp_policy: DlpPolicy | None = None  # null: the organisation's
    limits: LimitsSpec | None = None  # null: none at this level
    budget: BudgetSpec | None = None


class TeamOut(BaseModel):
    id: int
    name: str
    description: str | None
    max_budget_usd: float | None
    soft_budget_usd: float | None
    budget_duration: str | None
    rpm_limit: int | None
    tpm_limit: int | None
    dlp_policy: StoredPolicy
    limits: StoredLimits
    budget: StoredBudget
    created_at: datetime


class MembershipSet(Strict):
    role: TeamRole = "member"


class MemberOut(BaseModel):
    user_id: int
    email: str
    role: str
    created_at: datetime


TeamsRead = Annotated[AdminContext, require("teams:read")]
TeamsWrite = Annotated[AdminContext, require("teams:write")]
MembersWrite = Annotated[AdminContext, require("members:write")]


@router.get("", response_model=Page[TeamOut])
async def list_teams(
    ctx: TeamsRead, search: Search = None, limit: Limit = 100, cursor: Cursor = None
) -> Page[TeamOut]:
    query = select(Team).where(Team.org_id == ctx.org_id)
    if search:
        query = query.where(func.lower(Team.name).like(like_pattern(search), escape="\\"))
    rows, next_cursor = await fetch_page(ctx.session, query, Team.id, limit, cursor)
    return Page[TeamOut](
        data=[TeamOut.model_validate(r, from_attributes=True) for r in rows],
        next_cursor=next_cursor,
    )


@router.post("", response_model=TeamOut, status_code=201)
async def create_team(body: TeamCreate, ctx: TeamsWrite) -> TeamOut:
    ctx.authorize("teams:write")
    team = Team(
        org_id=ctx.org_id,
        **body.model_dump(exclude={"dlp_policy", *CONTROL_FIELDS}),
        dlp_policy=authorize_new_policy(ctx, body.dlp_policy),
        **new_controls(ctx, body),
    )
    ctx.session.add(team)
    await flush_or_conflict(ctx.session, f"a team named {body.name!r} already exists")
    await ctx.audit("team.created", f"team:{team.id}", after=summary(team, _AUDITED))
    await ctx.session.commit()
    # Legacy budget/limit columns count as controls too (agentwatch.spend.book).
    await refresh_routing_table(ctx)
    return TeamOut.model_validate(team, from_attributes=True)


@router.get("/{team_id}", response_model=TeamOut)
async def get_team(team_id: IdPath, ctx: TeamsRead) -> TeamOut:
    team = await get_in_org(ctx.session, Team, team_id, ctx.org_id)
    return TeamOut.model_validate(team, from_attributes=True)


@router.patch("/{team_id}", response_model=TeamOut)
async def update_team(team_id: IdPath, body: TeamUpdate, ctx: TeamsWrite) -> TeamOut:
    team = await get_in_org(ctx.session, Team, team_id, ctx.org_id)
    ctx.authorize("teams:write", team.id)
    if "name" in body.model_fields_set and body.name is None:
        raise HTTPException(422, "name cannot be null")
    before, after = apply_patch(team, body, exclude={"dlp_policy", *CONTROL_FIELDS})
    sent = body.model_fields_set
    policy_changed = "dlp_policy" in sent and patch_policy(
        ctx, team, body.dlp_policy, before, after
    )
    policy_changed |= patch_controls(ctx, team, body, before, after)
    policy_changed |= bool(sent & _LEGACY_CONTROLS)
    await flush_or_conflict(ctx.session, f"a team named {team.name!r} already exists")
    await ctx.audit("team.updated", f"team:{team.id}", before=before, after=after)
    await ctx.session.commit()
    if policy_changed:
        await refresh_routing_table(ctx)
    return TeamOut.model_validate(team, from_attributes=True)


@router.delete("/{team_id}", status_code=204, response_class=Response)
async def delete_team(team_id: IdPath, ctx: TeamsWrite) -> Response:
    team = await get_in_org(ctx.session, Team, team_id, ctx.org_id)
    ctx.authorize("teams:write", team.id)
    had_policy = any(getattr(team, f) is not None for f in ("dlp_policy", *CONTROL_FIELDS))
    await ctx.audit("team.deleted", f"team:{team.id}", before=summary(team, _AUDITED))
    await ctx.session.delete(team)
    await ctx.session.commit()
    if had_policy:  # its tenants fall back to the organisation's policy and controls
        await refresh_routing_table(ctx)
    return Response(status_code=204)


@router.get("/{team_id}/members", response_model=list[MemberOut])
async def list_members(team_id: IdPath, ctx: TeamsRead) -> list[MemberOut]:
    await get_in_org(ctx.session, Team, team_id, ctx.org_id)
    rows = await ctx.session.execute(
        select(TeamMembership, User.email)
        .join(User, User.id == TeamMembership.user_id)
        .where(TeamMembership.team_id == team_id)
        .order_by(TeamMembership.id)
    )
    return [
        MemberOut(user_id=m.user_id, email=email, role=m.role, created_at=m.created_at)
        for m, email in rows.all()
    ]


@router.put("/{team_id}/members/{user_id}", response_model=MemberOut)
async def set_member(
    team_id: IdPath, user_id: IdPath, body: MembershipSet, ctx: MembersWrite
) -> MemberOut:
    """Adds the user to the team, or changes their role in it."""
    team = await get_in_org(ctx.session, Team, team_id, ctx.org_id)
    ctx.authorize("members:write", team.id)
    user = await get_in_org(ctx.session, User, user_id, ctx.org_id)
    membership = await ctx.session.scalar(
        select(TeamMembership).where(
            TeamMembership.team_id == team.id, TeamMembership.user_id == user.id
        )
    )
    if membership is None:
        membership = TeamMembership(team_id=team.id, user_id=user.id, role=body.role)
        ctx.session.add(membership)
        await flush_or_conflict(ctx.session, "the membership changed meanwhile; try again")
        await ctx.audit(
            "membership.added", f"team:{team.id}/user:{user.id}", after={"role": body.role}
        )
    elif membership.role != body.role:
        await ctx.audit(
            "membership.role_changed",
            f"team:{team.id}/user:{user.id}",
            before={"role": membership.role},
            after={"role": body.role},
        )
        membership.role = body.role
    await ctx.session.commit()
    return MemberOut(
        user_id=user.id, email=user.email, role=membership.role, created_at=membership.created_at
    )


@router.delete("/{team_id}/members/{user_id}", status_code=204, response_class=Response)
async def remove_member(team_id: IdPath, user_id: IdPath, ctx: MembersWrite) -> Response:
    team = await get_in_org(ctx.session, Team, team_id, ctx.org_id)
    ctx.authorize("members:write", team.id)
    membership = await ctx.session.scalar(
        select(TeamMembership).where(
            TeamMembership.team_id == team.id, TeamMembership.user_id == user_id
        )
    )
    if membership is None:
        raise HTTPException(404, "no such membership")
    await ctx.audit(
        "membership.removed", f"team:{team.id}/user:{user_id}", before={"role": membership.role}
    )
    await ctx.session.delete(membership)
    await ctx.session.commit()
    return Response(status_code=204)
