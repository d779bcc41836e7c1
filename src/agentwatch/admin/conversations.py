"""The request log: the `conversations` table read through the admin API, newest (or riskiest)
first, with opaque keyset cursors. Rows exist for calls DLP found something in, and for every
call of an organisation that logs bodies (see docs/observability.md)."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field
from sqlalchemy import Select, and_, or_, select

from agentwatch.admin.deps import AdminContext, require
from agentwatch.admin.fields import MAX_ID, IdPath, as_utc
from agentwatch.db.models import Conversation

router = APIRouter(prefix="/api/conversations", tags=["conversations"])
DlpRead = Annotated[AdminContext, require("dlp:read")]
Sort = Literal["time", "risk"]
DlpAction = Literal["block", "redact", "log", "none"]


class ConversationSummary(BaseModel):
    id: int
    request_id: str
    created_at: datetime
    tenant_id: int | None
    api_key_id: int | None
    team_id: int | None
    model: str
    endpoint: str
    status: int
    dlp_action: str | None
    risk_score: float
    findings: int = Field(description="how many DLP events the call had")


class ConversationOut(ConversationSummary):
    dlp_events: list[dict[str, Any]] = Field(
        description="detector, category, severity, action, where and offsets; never the value"
    )
    messages: list[Any] = Field(
        description="the DLP-redacted request messages and a final assistant answer, when the "
        "organisation logs bodies; otherwise empty"
    )


class ConversationPage(BaseModel):
    data: list[ConversationSummary]
    next_cursor: str | None


@router.get("", response_model=ConversationPage)
async def list_conversations(
    ctx: DlpRead,
    tenant_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    model: Annotated[str | None, Query(max_length=200)] = None,
    status: Annotated[int | None, Query(ge=100, le=599)] = None,
    since: Annotated[
        datetime | None, Query(alias="from", description="ISO 8601, inclusive")
    ] = None,
    until: Annotated[datetime | None, Query(alias="to", description="ISO 8601, exclusive")] = None,
    min_risk: Annotated[float | None, Query(ge=0, le=100)] = None,
    dlp_action: Annotated[
        DlpAction | None, Query(description="the strongest action; none: calls without one")
    ] = None,
    sort: Annotated[Sort, Query(description="time: newest first; risk: riskiest first")] = "time",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> ConversationPage:
    query = select(Conversation).where(Conversation.org_id == ctx.org_id)
    if tenant_id is not None:
        query = query.where(Conversation.tenant_id == tenant_id)
    if model is not None:
        query = query.where(Conversation.model == model)
    if status is not None:
        query = query.where(Conversation.status == status)
    if since is not None:
        query = query.where(Conversation.created_at >= as_utc(since))
    if until is not None:
        query = query.where(Conversation.created_at < as_utc(until))
    if min_risk is not None:
        query = query.where(Conversation.risk_score >= min_risk)
    if dlp_action == "none":
        query = query.where(Conversation.dlp_action.is_(None))
    elif dlp_action is not None:
        query = query.where(Conversation.dlp_action == dlp_action)
    rows = (await ctx.session.scalars(_page(query, sort, cursor, limit))).all()
    next_cursor = _encode(sort, rows[limit - 1]) if len(rows) > limit else None
    return ConversationPage(data=[_summary(row) for row in rows[:limit]], next_cursor=next_cursor)


@router.get("/{conversation_id}", response_model=ConversationOut)
async def get_conversation(conversation_id: IdPath, ctx: DlpRead) -> ConversationOut:
    row = await ctx.session.get(Conversation, conversation_id)
    if row is None or row.org_id != ctx.org_id:
        raise HTTPException(404, "no such conversation")
    return ConversationOut(
        **_summary(row).model_dump(), dlp_events=row.dlp_events, messages=row.messages
    )


def _summary(row: Conversation) -> ConversationSummary:
    return ConversationSummary(
        id=row.id,
        request_id=row.request_id,
        created_at=row.created_at,
        tenant_id=row.tenant_id,
        api_key_id=row.api_key_id,
        team_id=row.team_id,
        model=row.model,
        endpoint=row.endpoint,
        status=row.status,
        dlp_action=row.dlp_action,
        risk_score=row.risk_score,
        findings=len(row.dlp_events),
    )


def _page(query: Select[Any], sort: Sort, cursor: str | None, limit: int) -> Select[Any]:
    """Keyset paging on (created_at, id) or (risk_score, id), both descending."""
    key = Conversation.created_at if sort == "time" else Conversation.risk_score
    if cursor is not None:
        value, last_id = _decode(sort, cursor)
        query = query.where(or_(key < value, and_(key == value, Conversation.id < last_id)))
    return query.order_by(key.desc(), Conversation.id.desc()).limit(limit + 1)


def _encode(sort: Sort, row: Conversation) -> str:
    value = row.created_at.isoformat() if sort == "time" else repr(row.risk_score)
    return base64.urlsafe_b64encode(f"{sort}|{value}|{row.id}".encode()).decode().rstrip("=")


def _decode(sort: Sort, cursor: str) -> tuple[Any, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, value, row_id = raw.split("|")
        last_id = int(row_id)
        key: Any = as_utc(datetime.fromisoformat(value)) if kind == "time" else float(value)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise HTTPException(400, "cursor is not one this API returned") from exc
    if kind != sort or not 0 <= last_id <= MAX_ID or key != key:  # key != key: NaN
        raise HTTPException(400, "cursor is not one this API returned")
    return key, last_id
