"""Admin users of the organisation: create, change roles, reset passwords, disable, delete.

Guards: nobody grants a role carrying permissions they lack, or manages a user who holds more
than they do (a super admin only by a super admin); the organisation keeps an active org admin
and the installation an active super admin. Password hashes never leave this module.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import BaseModel
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from agentwatch.admin.accounts import set_password
from agentwatch.admin.crud import flush_or_conflict, get_in_org, summary
from agentwatch.admin.deps import AdminContext, require
from agentwatch.admin.fields import (
    Cursor,
    Email,
    Id,
    IdPath,
    IdQuery,
    Limit,
    Name,
    Password,
    Strict,
    like_pattern,
)
from agentwatch.admin.pages import Page, fetch_page
from agentwatch.admin.rbac import Role, Scope, grants_for
from agentwatch.admin.roles import ensure_within, role_permissions
from agentwatch.db.models import TeamMembership, User, utcnow

router = APIRouter(prefix="/api/users", tags=["users"])

AssignableRole = Literal["org_admin", "team_admin", "member", "viewer"]
DUPLICATE_EMAIL = "that email is already registered"
_AUDITED = ("email", "name", "role", "role_id", "is_active")


class UserCreate(Strict):
    email: Email
    password: Password
    name: Name | None = None
    role: AssignableRole = "member"
    role_id: Id | None = None  # a custom role of this organisation


class UserUpdate(Strict):
    name: Name | None = None
    role: AssignableRole | None = None
    role_id: Id | None = None  # null removes the custom role
    is_active: bool | None = None
    password: Password | None = None  # an admin reset: the user's tokens are revoked


class SuperAdminSet(Strict):
    enabled: bool


class UserOut(BaseModel):
    id: int
    email: str
    name: str | None
    role: str
    role_id: int | None
    is_super_admin: bool
    is_active: bool
    team_ids: list[int]
    created_at: datetime
    locked: bool  # locked out after failed logins, until the lock expires


UsersRead = Annotated[AdminContext, require("users:read")]
UsersWrite = Annotated[AdminContext, require("users:write")]
OrgsAdmin = Annotated[AdminContext, require("orgs:admin")]


@router.get("", response_model=Page[UserOut])
async def list_users(
    ctx: UsersRead,
    search: Annotated[str | None, Query(max_length=200, description="part of the email")] = None,
    role: Annotated[AssignableRole | None, Query()] = None,
    role_id: IdQuery = None,
    is_active: bool | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[UserOut]:
    query = select(User).where(User.org_id == ctx.org_id)
    if search:
        query = query.where(func.lower(User.email).like(like_pattern(search), escape="\\"))
    if role is not None:
        query = query.where(User.role == role)
    if role_id is not None:
        query = query.where(User.role_id == role_id)
    if is_active is not None:
        query = query.where(User.is_active == is_active)
    rows, next_cursor = await fetch_page(ctx.session, query, User.id, limit, cursor)
    return Page[UserOut](data=await _out(ctx.session, rows), next_cursor=next_cursor)


@router.post("", response_model=UserOut, status_code=201)
async def create_user(body: UserCreate, ctx: UsersWrite) -> UserOut:
    custom = await role_permissions(ctx.session, ctx.org_id, body.role_id)
    ensure_within(ctx.principal, grants_for(Role(body.role), custom), "grant this role")
    user = User(
        org_id=ctx.org_id,
        email=body.email,
        name=body.name,
        role=body.role,
        role_id=body.role_id,
        is_super_admin=False,
        is_active=True,
    )
    await set_password(user, body.password)
    ctx.session.add(user)
    await flush_or_conflict(ctx.session, DUPLICATE_EMAIL)
    await ctx.audit("user.created", f"user:{user.id}", after=summary(user, _AUDITED))
    await ctx.session.commit()
    return (await _out(ctx.session, [user]))[0]


@router.get("/{user_id}", response_model=UserOut)
async def get_user(user_id: IdPath, ctx: UsersRead) -> UserOut:
    user = await get_in_org(ctx.session, User, user_id, ctx.org_id)
    return (await _out(ctx.session, [user]))[0]


@router.patch("/{user_id}", response_model=UserOut)
async def update_user(user_id: IdPath, body: UserUpdate, ctx: UsersWrite) -> UserOut:
    user = await get_in_org(ctx.session, User, user_id, ctx.org_id)
    await _ensure_may_manage(ctx, user)
    sent = body.model_fields_set
    for field in ("role", "is_active", "password"):
        if field in sent and getattr(body, field) is None:
            raise HTTPException(422, f"{field} cannot be null")
    role = body.role if body.role is not None else user.role
    role_id = body.role_id if "role_id" in sent else user.role_id
    role_changed = (role, role_id) != (user.role, user.role_id)
    if role_changed:
        custom = await role_permissions(ctx.session, ctx.org_id, role_id)
        ensure_within(ctx.principal, grants_for(_role(role), custom), "grant this role")
    if role != Role.ORG_ADMIN or body.is_active is False:
        await _keep_an_org_admin(ctx.session, user)
    if body.is_active is False:
        await _keep_a_super_admin(ctx.session, user)
    if body.password is not None:
        await set_password(user, body.password)
        user.tokens_valid_after = utcnow()  # whoever held the old password is signed out
        # A reset is how an admin lets a locked-out user back in.
        user.failed_logins, user.locked_until = 0, None
        ctx.state.login_throttle.succeeded(user.email)
    old_role = {"role": user.role, "role_id": user.role_id}
    new_role = {"role": role, "role_id": role_id}
    profile = {k: v for k, v in body.model_dump(include={"name", "is_active"}).items() if k in sent}
    profile_before = summary(user, tuple(profile))
    for field, value in {**profile, **new_role}.items():
        setattr(user, field, value)
    await flush_or_conflict(ctx.session, "the user changed meanwhile; try again")
    target = f"user:{user.id}"
    if role_changed:
        await ctx.audit("user.role_changed", target, before=old_role, after=new_role)
    if profile != profile_before:
        await ctx.audit("user.updated", target, before=profile_before, after=profile)
    if body.password is not None:
        await ctx.audit("user.password_reset", target, details={"tokens_revoked": True})
    await ctx.session.commit()
    return (await _out(ctx.session, [user]))[0]


@router.delete("/{user_id}", status_code=204, response_class=Response)
async def delete_user(user_id: IdPath, ctx: UsersWrite) -> Response:
    """Deletes the account and its team memberships; the audit trail keeps its email and id.
    To keep the account but stop it signing in, PATCH `is_active` to false instead."""
    user = await get_in_org(ctx.session, User, user_id, ctx.org_id)
    await _ensure_may_manage(ctx, user)
    await _keep_an_org_admin(ctx.session, user)
    await _keep_a_super_admin(ctx.session, user)
    await ctx.audit("user.deleted", f"user:{user.id}", before=summary(user, _AUDITED))
    await ctx.session.delete(user)
    await ctx.session.commit()
    return Response(status_code=204)


@router.post("/{user_id}/super-admin", response_model=UserOut)
async def set_super_admin(user_id: IdPath, body: SuperAdminSet, ctx: OrgsAdmin) -> UserOut:
    """Grants or revokes super admin (every organisation, through X-AgentWatch-Org)."""
    user = await get_in_org(ctx.session, User, user_id, ctx.org_id)
    if user.is_super_admin != body.enabled:
        if not body.enabled:
            await _keep_a_super_admin(ctx.session, user)
        before = {"is_super_admin": user.is_super_admin}
        user.is_super_admin = body.enabled
        await flush_or_conflict(ctx.session, "the user changed meanwhile; try again")
        await ctx.audit(
            "user.role_changed",
            f"user:{user.id}",
            before=before,
            after={"is_super_admin": body.enabled},
        )
        await ctx.session.commit()
    return (await _out(ctx.session, [user]))[0]


async def _ensure_may_manage(ctx: AdminContext, user: User) -> None:
    """403 unless the caller holds everything `user` holds: no taking over a stronger account."""
    if user.is_super_admin and not ctx.principal.is_super_admin:
        raise HTTPException(403, "only a super admin may change a super admin")
    ensure_within(ctx.principal, await _grants_of(ctx.session, user), "manage this user")


async def _grants_of(session: AsyncSession, user: User) -> dict[str, Scope]:
    return grants_for(_role(user.role), await _held_custom(session, user))


async def _held_custom(session: AsyncSession, user: User) -> list[str]:
    try:
        return await role_permissions(session, user.org_id, user.role_id)
    except HTTPException:
        return []  # the role was deleted meanwhile: it grants nothing


def _role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        return Role.VIEWER  # as the principal does: an unknown stored role grants the least


async def _keep_an_org_admin(session: AsyncSession, user: User) -> None:
    """409 when `user` is the organisation's last active org admin (about to stop being one)."""
    if user.role == Role.ORG_ADMIN and user.is_active:
        org_admins = select(User.id).where(
            User.org_id == user.org_id, User.role == Role.ORG_ADMIN.value
        )
        if await _only_one(session, org_admins, user):
            raise HTTPException(
                409,
                "this is the organisation's last active org_admin; make another user "
                "org_admin first",
            )


async def _keep_a_super_admin(session: AsyncSession, user: User) -> None:
    """409 when `user` is the last active super admin of the installation."""
    if (
        user.is_super_admin
        and user.is_active
        and await _only_one(session, select(User.id).where(User.is_super_admin), user)
    ):
        raise HTTPException(409, "this is the last active super admin; grant another one first")


async def _only_one(session: AsyncSession, ids: Select[int], user: User) -> bool:
    """Whether `user` is the only active one among `ids`. FOR UPDATE (PostgreSQL): two
    concurrent demotions cannot each count the other admin and both succeed."""
    found = await session.scalars(ids.where(User.is_active).with_for_update())
    return set(found) <= {user.id}


async def _out(session: AsyncSession, users: Sequence[User]) -> list[UserOut]:
    teams: dict[int, list[int]] = defaultdict(list)
    if users:
        rows = await session.execute(
            select(TeamMembership.user_id, TeamMembership.team_id)
            .where(TeamMembership.user_id.in_([u.id for u in users]))
            .order_by(TeamMembership.team_id)
        )
        for user_id, team_id in rows.all():
            teams[user_id].append(team_id)
    now = utcnow()
    return [
        UserOut(
            id=u.id,
            email=u.email,
            name=u.name,
            role=u.role,
            role_id=u.role_id,
            is_super_admin=u.is_super_admin,
            is_active=u.is_active,
            team_ids=teams[u.id],
            created_at=u.created_at,
            locked=u.locked_until is not None and u.locked_until > now,
        )
        for u in users
    ]
