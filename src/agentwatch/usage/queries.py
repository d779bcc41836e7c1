"""Reading the usage ledger: filtered, newest first, with opaque keyset cursors."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from agentwatch.db.models import Tenant, UsageRecord
from agentwatch.pricing import nanos_to_usd


class BadCursor(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class UsageFilter:
    org_id: int
    tenant: str | None = None
    model: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    status: int | None = None
    endpoint: str | None = None
    request_id: str | None = None


def encode_cursor(created_at: datetime, row_id: int) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{row_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        stamp, _, row_id = text.partition("|")
        created_at, last_id = datetime.fromisoformat(stamp), int(row_id)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise BadCursor("cursor is not one this API returned") from exc
    if not 0 <= last_id < 2**63:
        raise BadCursor("cursor is not one this API returned")
    return created_at, last_id


async def list_usage_records(
    session: AsyncSession, where: UsageFilter, limit: int, cursor: str | None
) -> tuple[list[dict[str, object]], str | None]:
    query = (
        select(UsageRecord, Tenant.name)
        .outerjoin(Tenant, Tenant.id == UsageRecord.tenant_id)
        .where(UsageRecord.org_id == where.org_id)
    )
    if where.tenant is not None:
        query = query.where(Tenant.name == where.tenant)
    if where.model is not None:
        query = query.where(UsageRecord.model == where.model)
    if where.since is not None:
        query = query.where(UsageRecord.created_at >= where.since)
    if where.until is not None:
        query = query.where(UsageRecord.created_at < where.until)
    if where.status is not None:
        query = query.where(UsageRecord.status == where.status)
    if where.endpoint is not None:
        query = query.where(UsageRecord.endpoint == where.endpoint)
    if where.request_id is not None:
        query = query.where(UsageRecord.request_id == where.request_id)
    if cursor is not None:
        stamp, row_id = decode_cursor(cursor)
        query = query.where(
            or_(
                UsageRecord.created_at < stamp,
                and_(UsageRecord.created_at == stamp, UsageRecord.id < row_id),
            )
        )
    query = query.order_by(UsageRecord.created_at.desc(), UsageRecord.id.desc()).limit(limit + 1)
    rows = (await session.execute(query)).all()
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        last = page[-1][0]
        next_cursor = encode_cursor(last.created_at, last.id)
    return [_record_json(record, tenant) for record, tenant in page], next_cursor


def _record_json(record: UsageRecord, tenant: str | None) -> dict[str, object]:
    return {
        "id": record.id,
        "request_id": record.request_id,
        "created_at": record.created_at.isoformat(),
        "tenant": tenant,
        "tenant_id": record.tenant_id,
        "api_key_id": record.api_key_id,
        "model": record.model,
        "provider": record.provider,
        "upstream_model": record.upstream_model,
        "endpoint": record.endpoint,
        "stream": record.stream,
        "status": record.status,
        "error_type": record.error_type,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "cached_tokens": record.cached_tokens,
        "cache_write_tokens": record.cache_write_tokens,
        "attempts": record.attempts,
        "reasoning_tokens": record.reasoning_tokens,
        "team_id": record.team_id,
        "total_tokens": (
            None
            if record.prompt_tokens is None or record.completion_tokens is None
            else record.prompt_tokens + record.completion_tokens
        ),
        "cost_usd": None if record.cost_nanousd is None else nanos_to_usd(record.cost_nanousd),
        "latency_ms": record.latency_ms,
        "ttft_ms": record.ttft_ms,
        "cache_hit": record.cache_hit,
        "saved_usd": None if record.saved_nanousd is None else nanos_to_usd(record.saved_nanousd),
    }
