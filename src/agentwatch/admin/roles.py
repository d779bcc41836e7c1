"""Custom org roles: named sets of permissions, and the rule that nobody grants what they lack.

A custom role widens a user's built-in role (see `rbac.grants_for`). Whoever creates, edits or
assigns one must already hold each permission it carries, org-wide: otherwise anyone allowed to
edit roles or users could hand themselves the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated

from fastapi import APIRouter, HTTPException, Response
from pydantic import BaseModel, Field, StringConstraints
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from agentwatch.admin.crud import flush_or_conflict, get_in_org, summary
from agentwatch.admin.deps import AdminContext, require
from agentwatch.admin.fields import (
    NO_CONTROL_CHARACTERS,
    Cursor,
    IdPath,
    Limit,
    Search,
    Strict,
    like_pattern,
)
from agentwatch.admin.pages import Page, fetch_page
from agentwatch.admin.rbac import CUSTOM_ROLE_PERMISSIONS, PERMISSIONS, Principal, Scope
from agentwatch.db.models import OrgRole, User

router = APIRouter(prefix="/api/roles", tags=["roles"])

RoleName = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=100, pattern=NO_CONTROL_CHARACTERS
    ),
]
PermissionName = Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)]
Permissions = Annotated[list[PermissionName], Field(max_length=4 * len(PERMISSIONS))]
_AUDITED = ("name", "permissions")


class RoleCreate(Strict):
    name: RoleName
    permissions: Permissions


class RoleUpdate(Strict):
    name: RoleName | None = None
    permissions: Permissions | None = None


class RoleOut(BaseModel):
    id: int
    name: str
    permissions: list[str]


RolesRead = Annotated[AdminContext, require("roles:read")]
RolesWrite = Annotated[AdminContext, require("roles:write")]


@router.get("", response_model=Page[RoleOut])
async def list_roles(
    ctx: RolesRead, search: Search = None, limit: Limit = 100, cursor: Cursor = None
) -> Page[RoleOut]:
    query = select(OrgRole).where(OrgRole.org_id == ctx.org_id)
    if search:
        query = query.where(func.lower(OrgRole.name).like(like_pattern(search), escape="\\"))
    rows, next_cursor = await fetch_page(ctx.session, query, OrgRole.id, limit, cursor)
    return Page[RoleOut](data=[_out(r) for r in rows], next_cursor=next_cursor)


@router.post("", response_model=RoleOut, status_code=201)
async def create_role(body: RoleCreate, ctx: RolesWrite) -> RoleOut:
    permissions = checked_permissions(body.permissions)
    ensure_within(ctx.principal, org_wide(permissions), "create this role")
    role = OrgRole(org_id=ctx.org_id, name=body.name, permissions=permissions)
    ctx.session.add(role)
    await flush_or_conflict(ctx.session, f"a role named {body.name!r} already exists")
    await ctx.audit("role.created", f"role:{role.id}", after=summary(role, _AUDITED))
    await ctx.session.commit()
    return _out(role)


@router.get("/{role_id}", response_model=RoleOut)
async def get_role(role_id: IdPath, ctx: RolesRead) -> RoleOut:
    return _out(await get_in_org(ctx.session, OrgRole, role_id, ctx.org_id))


@router.patch("/{role_id}", response_model=RoleOut)
async def update_role(role_id: IdPath, body: RoleUpdate, ctx: RolesWrite) -> RoleOut:
    role = await get_in_org(ctx.session, OrgRole, role_id, ctx.org_id)
    ensure_within(ctx.principal, org_wide(_stored(role)), "change this role")
    sent = body.model_fields_set
    for field in ("name", "permissions"):
        if field in sent and getattr(body, field) is None:
            raise HTTPException(422, f"{field} cannot be null")
    before = summary(role, tuple(f for f in _AUDITED if f in sent))
    if body.name is not None:
        role.name = body.name
    if body.permissions is not None:
        role.permissions = checked_permissions(body.permissions)
        ensure_within(ctx.principal, org_wide(role.permissions), "grant these permissions")
    after = summary(role, tuple(before))
    await flush_or_conflict(ctx.session, f"a role named {role.name!r} already exists")
    await ctx.audit("role.updated", f"role:{role.id}", before=before, after=after)
    await ctx.session.commit()
    return _out(role)


@router.delete("/{role_id}", status_code=204, response_class=Response)
async def delete_role(role_id: IdPath, ctx: RolesWrite) -> Response:
    """Deletes the role; its users keep their built-in role and lose the custom one."""
    role = await get_in_org(ctx.session, OrgRole, role_id, ctx.org_id)
    ensure_within(ctx.principal, org_wide(_stored(role)), "delete this role")
    holders = list(
        await ctx.session.scalars(
            select(User.id).where(User.org_id == ctx.org_id, User.role_id == role.id)
        )
    )
    await ctx.audit(
        "role.deleted",
        f"role:{role.id}",
        before=summary(role, _AUDITED),
        details={"unassigned_user_ids": holders},
    )
    await ctx.session.delete(role)  # the foreign key sets the holders' role_id to NULL
    await ctx.session.commit()
    return Response(status_code=204)


def checked_permissions(names: Iterable[str]) -> list[str]:
    """The distinct permission names, sorted; 422 naming the first one a role cannot carry."""
    unique = sorted(set(names))
    for name in unique:
        if name in PERMISSIONS and name not in CUSTOM_ROLE_PERMISSIONS:
            raise HTTPException(422, f"permission {name!r} cannot be granted by a custom role")
        if name not in CUSTOM_ROLE_PERMISSIONS:
            known = ", ".join(sorted(CUSTOM_ROLE_PERMISSIONS))
            raise HTTPException(422, f"unknown permission {name!r}; known permissions: {known}")
    return unique


def org_wide(permissions: Iterable[str]) -> dict[str, Scope]:
    return {permission: Scope.ORG for permission in permissions}


def ensure_within(principal: Principal, grants: Mapping[str, Scope], doing: str) -> None:
    """403 unless the caller holds every one of `grants` at least as widely (super admins do)."""
    if principal.is_super_admin:
        return
    missing = sorted(
        permission
        for permission, scope in grants.items()
        if principal.grants.get(permission) not in (Scope.ORG, scope)
    )
    if missing:
        raise HTTPException(
            403, f"you cannot {doing}: it carries permissions you lack ({', '.join(missing)})"
        )


async def role_permissions(session: AsyncSession, org_id: int, role_id: int | None) -> list[str]:
    """The permissions of custom role `role_id` of the organisation; 404 for another org's."""
    if role_id is None:
        return []
    return _stored(await get_in_org(session, OrgRole, role_id, org_id))


def _stored(role: OrgRole) -> list[str]:
    return [p for p in role.permissions if isinstance(p, str) and p in CUSTOM_ROLE_PERMISSIONS]


def _out(role: OrgRole) -> RoleOut:
    return RoleOut(id=role.id, name=role.name, permissions=_stored(role))
