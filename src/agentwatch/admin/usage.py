"""The usage ledger, read through the admin API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel

from agentwatch.admin.deps import AdminContext, require
from agentwatch.admin.fields import as_utc
from agentwatch.usage.queries import BadCursor, UsageFilter, list_usage_records

router = APIRouter(prefix="/api/usage", tags=["usage"])
_Text = Annotated[str | None, Query(max_length=200)]


class UsageRecordOut(BaseModel):
    id: int
    request_id: str
    created_at: datetime
    tenant: str | None
    tenant_id: int | None
    api_key_id: int | None
    model: str
    provider: str | None
    upstream_model: str | None
    endpoint: str
    stream: bool
    status: int
    error_type: str | None
    # None: the upstream reported no usage, so the count and the cost are unknown.
    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int | None
    team_id: int | None
    attempts: int
    total_tokens: int | None
    cost_usd: float | None
    latency_ms: float
    ttft_ms: float | None


class UsagePage(BaseModel):
    data: list[UsageRecordOut]
    next_cursor: str | None


@router.get("/records", response_model=UsagePage)
async def usage_records(
    ctx: Annotated[AdminContext, require("usage:read")],
    tenant: _Text = None,
    model: _Text = None,
    since: Annotated[datetime | None, Query(description="ISO 8601, inclusive")] = None,
    until: Annotated[datetime | None, Query(description="ISO 8601, exclusive")] = None,
    status: Annotated[int | None, Query(ge=100, le=599)] = None,
    endpoint: Annotated[str | None, Query(max_length=64)] = None,
    request_id: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> UsagePage:
    where = UsageFilter(
        org_id=ctx.org_id,
        tenant=tenant,
        model=model,
        since=as_utc(since) if since is not None else None,
        until=as_utc(until) if until is not None else None,
        status=status,
        endpoint=endpoint,
        request_id=request_id,
    )
    try:
        rows, next_cursor = await list_usage_records(ctx.session, where, limit, cursor)
    except BadCursor as exc:
        raise HTTPException(400, str(exc)) from exc
    return UsagePage.model_validate({"data": rows, "next_cursor": next_cursor})
