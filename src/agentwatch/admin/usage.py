"""The usage ledger, read through the admin API."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from agentwatch.admin.deps import AdminContext, require
from agentwatch.admin.fields import as_utc
from agentwatch.usage.queries import BadCursor, UsageFilter, list_usage_records
from agentwatch.usage.summary import GROUP_KEYS, GroupKey, SummaryQuery, usage_summary

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
    cache_hit: bool = Field(description="answered from the response cache (cost 0)")
    saved_usd: float | None = Field(description="a cache hit's cost, had it gone upstream")


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


DEFAULT_SUMMARY_DAYS = 30
MAX_SUMMARY_DAYS = 3660


class UsageSummaryRow(BaseModel):
    """The group keys asked for (only those), then the totals. A null team, tenant, key or
    provider groups the calls that had none."""

    day: date | None = None
    model: str | None = None
    provider: str | None = None
    team_id: int | None = None
    tenant_id: int | None = None
    api_key_id: int | None = None
    requests: int
    errors: int = Field(description="calls answered with a status of 400 or more")
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cost_usd: float
    cost_nanousd: int
    unknown_cost_requests: int = Field(
        description="calls whose cost is unknown (no usage reported, or no price): not in cost"
    )


class UsageSummary(BaseModel):
    group_by: list[GroupKey]
    from_: date = Field(alias="from")
    to: date
    data: list[UsageSummaryRow]


@router.get("/summary", response_model=UsageSummary, response_model_exclude_unset=True)
async def usage_summary_route(
    ctx: Annotated[AdminContext, require("usage:read")],
    group_by: Annotated[
        list[str],
        Query(
            max_length=6,
            description="one or more of day, model, provider, team, tenant, key; repeated or "
            "comma-separated; none: one row of totals",
        ),
    ] = [],  # noqa: B006 (FastAPI copies query defaults)
    start: Annotated[
        date | None, Query(alias="from", description="first UTC day (default: 29 days before to)")
    ] = None,
    to: Annotated[
        date | None, Query(description="last UTC day, inclusive (default: today)")
    ] = None,
    tenant_id: Annotated[int | None, Query(ge=1, lt=2**63)] = None,
    team_id: Annotated[int | None, Query(ge=1, lt=2**63)] = None,
    model: Annotated[str | None, Query(max_length=200)] = None,
    provider: Annotated[str | None, Query(max_length=200)] = None,
) -> UsageSummary:
    keys = _group_keys(group_by)
    today = datetime.now(UTC).date()
    last = to or today
    first = start or last - timedelta(days=DEFAULT_SUMMARY_DAYS - 1)
    if first > last:
        raise HTTPException(422, "'from' is after 'to'")
    if (last - first).days >= MAX_SUMMARY_DAYS:
        raise HTTPException(422, f"a summary spans at most {MAX_SUMMARY_DAYS} days")
    query = SummaryQuery(
        org_id=ctx.org_id,
        group_by=keys,
        first_day=first,
        last_day=last,
        today=today,
        tenant_id=tenant_id,
        team_id=team_id,
        model=model,
        provider=provider,
    )
    rows = await usage_summary(ctx.session, query)
    return UsageSummary.model_validate(
        {"group_by": list(keys), "from": first, "to": last, "data": rows}
    )


def _group_keys(values: list[str]) -> tuple[GroupKey, ...]:
    keys: list[GroupKey] = []
    for value in values:
        for name in (part.strip() for part in value.split(",")):
            if name not in GROUP_KEYS:
                raise HTTPException(
                    422, f"cannot group by '{name[:40]}': use {', '.join(GROUP_KEYS)}"
                )
            if name not in keys:
                keys.append(name)
    return tuple(keys)
