"""`GET /api/audit-logs`: the organisation's audit trail, filtered, newest first."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel
from sqlalchemy import select

from agentwatch.admin.deps import AdminContext, require
from agentwatch.admin.fields import MAX_ID, IdQuery, as_utc
from agentwatch.admin.pages import decode_cursor, encode_cursor
from agentwatch.db.models import AuditLog

router = APIRouter(prefix="/api/audit-logs", tags=["audit"])


class AuditLogOut(BaseModel):
    id: int
    seq: int
    created_at: datetime
    actor: str
    actor_id: int | None
    action: str
    target: str | None
    details: dict[str, Any]
    ip: str | None
    user_agent: str | None
    hash: str
    prev_hash: str


class AuditPage(BaseModel):
    data: list[AuditLogOut]
    next_cursor: str | None


@router.get("", response_model=AuditPage)
async def list_audit_logs(
    ctx: Annotated[AdminContext, require("audit:read")],
    action: Annotated[
        str | None, Query(max_length=100, description="exact, or a prefix ending in '.'")
    ] = None,
    actor: Annotated[str | None, Query(max_length=320)] = None,
    actor_id: IdQuery = None,
    target: Annotated[str | None, Query(max_length=400)] = None,
    since: Annotated[datetime | None, Query(description="ISO 8601, inclusive")] = None,
    until: Annotated[datetime | None, Query(description="ISO 8601, exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
) -> AuditPage:
    query = select(AuditLog).where(AuditLog.org_id == ctx.org_id)
    if action:
        if action.endswith("."):
            query = query.where(AuditLog.action.startswith(action, autoescape=True))
        else:
            query = query.where(AuditLog.action == action)
    if actor:
        query = query.where(AuditLog.actor == actor.strip().lower())
    if actor_id is not None:
        query = query.where(AuditLog.actor_id == actor_id)
    if target:
        query = query.where(AuditLog.target == target)
    if since is not None:
        query = query.where(AuditLog.created_at >= as_utc(since))
    if until is not None:
        query = query.where(AuditLog.created_at < as_utc(until))
    before = decode_cursor(cursor) or MAX_ID
    if cursor and before == 0:
        raise HTTPException(400, "cursor is not one this API returned")
    rows = (
        await ctx.session.scalars(
            query.where(AuditLog.id < before).order_by(AuditLog.id.desc()).limit(limit + 1)
        )
    ).all()
    next_cursor = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return AuditPage(
        data=[AuditLogOut.model_validate(r, from_attributes=True) for r in rows[:limit]],
        next_cursor=next_cursor,
    )
