"""Usage totals grouped by day, model, provider, team, tenant or key: whole past days from the
`usage_daily` rollup, today (UTC) from the ledger itself, so the answer is exact and fresh."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Literal

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from agentwatch.db.models import UsageDaily, UsageRecord
from agentwatch.pricing import nanos_to_usd
from agentwatch.usage.rollup import ledger_sums, utc_day_bounds

GroupKey = Literal["day", "model", "provider", "team", "tenant", "key"]
GROUP_KEYS: tuple[GroupKey, ...] = ("day", "model", "provider", "team", "tenant", "key")
# Each group key as it appears in a row: the rollup stores "none" as 0 and "".
_OUTPUT = {
    "day": "day",
    "model": "model",
    "provider": "provider",
    "team": "team_id",
    "tenant": "tenant_id",
    "key": "api_key_id",
}
METRICS = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_nanousd",
    "unknown_cost_requests",
)


@dataclass(frozen=True, slots=True)
class SummaryQuery:
    org_id: int
    group_by: tuple[GroupKey, ...]
    first_day: date
    last_day: date  # inclusive
    today: date  # UTC: served from the ledger; earlier days from the rollup
    tenant_id: int | None = None
    team_id: int | None = None
    model: str | None = None
    provider: str | None = None


async def usage_summary(session: AsyncSession, query: SummaryQuery) -> list[dict[str, Any]]:
    totals: dict[tuple[Any, ...], list[int]] = {}
    rolled_last = min(query.last_day, query.today - timedelta(days=1))
    if query.first_day <= rolled_last:
        for row in await session.execute(_from_rollup(query, rolled_last)):
            _add(totals, tuple(row[: len(query.group_by)]), row[len(query.group_by) :])
    if query.first_day <= query.today <= query.last_day:
        keys = [key for key in query.group_by if key != "day"]
        for row in await session.execute(_from_ledger(query, keys)):
            found = dict(zip(keys, row[: len(keys)], strict=True)) | {"day": query.today}
            group = tuple(found[key] for key in query.group_by)
            _add(totals, group, row[len(keys) :])
    return [_row(query.group_by, group, sums) for group, sums in sorted(totals.items(), key=_order)]


def _from_rollup(query: SummaryQuery, last_day: date) -> Select[*tuple[Any, ...]]:
    daily = UsageDaily
    columns = {
        "day": daily.day,
        "model": daily.model,
        "provider": daily.provider,
        "team": daily.team_id,
        "tenant": daily.tenant_id,
        "key": daily.api_key_id,
    }
    keys = [columns[key] for key in query.group_by]
    statement: Select[*tuple[Any, ...]] = (
        select(*keys, *(func.sum(getattr(daily, name)) for name in METRICS))
        .where(daily.org_id == query.org_id, daily.day >= query.first_day, daily.day <= last_day)
        .group_by(*keys)
    )
    if query.tenant_id is not None:
        statement = statement.where(daily.tenant_id == query.tenant_id)
    if query.team_id is not None:
        statement = statement.where(daily.team_id == query.team_id)
    if query.model is not None:
        statement = statement.where(daily.model == query.model)
    if query.provider is not None:
        statement = statement.where(daily.provider == query.provider)
    return statement


def _from_ledger(query: SummaryQuery, group_by: Sequence[GroupKey]) -> Select[*tuple[Any, ...]]:
    record = UsageRecord
    columns = {
        "model": record.model,
        "provider": func.coalesce(record.provider, ""),
        "team": func.coalesce(record.team_id, 0),
        "tenant": func.coalesce(record.tenant_id, 0),
        "key": func.coalesce(record.api_key_id, 0),
    }
    keys = [columns[key] for key in group_by]
    start, end = utc_day_bounds(query.today)
    statement: Select[*tuple[Any, ...]] = (
        select(*keys, *ledger_sums())
        .where(record.org_id == query.org_id, record.created_at >= start, record.created_at < end)
        .group_by(*keys)
    )
    if query.tenant_id is not None:
        statement = statement.where(record.tenant_id == query.tenant_id)
    if query.team_id is not None:
        statement = statement.where(record.team_id == query.team_id)
    if query.model is not None:
        statement = statement.where(record.model == query.model)
    if query.provider is not None:
        statement = statement.where(record.provider == query.provider)
    return statement


def _add(totals: dict[tuple[Any, ...], list[int]], group: tuple[Any, ...], sums: Any) -> None:
    if not sums[0]:
        return  # no group keys: SQL answers one row of nothing when nothing matches
    into = totals.setdefault(group, [0] * len(METRICS))
    for index, value in enumerate(sums):
        into[index] += int(value or 0)


def _order(item: tuple[tuple[Any, ...], list[int]]) -> tuple[Any, ...]:
    # None-like keys (0, "") first, then by value; days ascending.
    return tuple((value is not None, value) for value in item[0])


def _row(group_by: Sequence[GroupKey], group: tuple[Any, ...], sums: list[int]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key, value in zip(group_by, group, strict=True):
        row[_OUTPUT[key]] = value if value not in (0, "") or key == "day" else None
    row.update(zip(METRICS, sums, strict=True))
    row["cost_usd"] = nanos_to_usd(row["cost_nanousd"])
    return row
