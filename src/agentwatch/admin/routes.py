"""Admin endpoints: login and the usage ledger."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field
from sqlalchemy import select

from agentwatch.admin.deps import CurrentAdmin, SessionDep, StateDep
from agentwatch.admin.tokens import AdminIdentity, issue_access_token
from agentwatch.crypto import verify_password
from agentwatch.db.models import User
from agentwatch.usage.queries import BadCursor, UsageFilter, list_usage_records

router = APIRouter(prefix="/api")


class LoginRequest(BaseModel):
    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"


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
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    attempts: int
    total_tokens: int
    cost_usd: float
    latency_ms: float
    ttft_ms: float | None


class UsagePage(BaseModel):
    data: list[UsageRecordOut]
    next_cursor: str | None


@router.post("/auth/login", response_model=TokenResponse, tags=["auth"])
async def login(body: LoginRequest, session: SessionDep, state: StateDep) -> TokenResponse:
    user = await session.scalar(select(User).where(User.email == body.email.strip().lower()))
    if user is None or not user.is_active or not verify_password(user.password_hash, body.password):
        raise HTTPException(401, "wrong email or password")
    identity = AdminIdentity(user.id, user.org_id, user.email, user.is_super_admin)
    return TokenResponse(access_token=issue_access_token(identity, state.settings.jwt_secret))


@router.get("/usage/records", response_model=UsagePage, tags=["usage"])
async def usage_records(
    admin: CurrentAdmin,
    session: SessionDep,
    tenant: str | None = None,
    model: str | None = None,
    since: Annotated[datetime | None, Query(description="ISO 8601, inclusive")] = None,
    until: Annotated[datetime | None, Query(description="ISO 8601, exclusive")] = None,
    status: int | None = None,
    endpoint: str | None = None,
    request_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> UsagePage:
    where = UsageFilter(
        org_id=admin.org_id,
        tenant=tenant,
        model=model,
        since=_utc(since),
        until=_utc(until),
        status=status,
        endpoint=endpoint,
        request_id=request_id,
    )
    try:
        rows, next_cursor = await list_usage_records(session, where, limit, cursor)
    except BadCursor as exc:
        raise HTTPException(400, str(exc)) from exc
    return UsagePage.model_validate({"data": rows, "next_cursor": next_cursor})


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
