"""The `usage_daily` rollup: the ledger summed per organisation, UTC day, team, tenant, key,
model and provider, recomputed for every day that gained rows and upserted (idempotent)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agentwatch.db.models import Organization, UsageDaily, UsageRecord

log = logging.getLogger(__name__)
ROLLUP_SECONDS = 60.0
# Ledger ids are handed out before the rows commit: with several writers a lower id can
# commit after a higher one was seen, so each pass looks this far below the last id it saw.
LATE_COMMIT_IDS = 10_000
# At start-up the last pass is unknown: the rows written most recently (a spool replayed
# while no gateway ran) are looked at again, whatever day they belong to.
STARTUP_LOOKBACK_IDS = 1_000_000
UPSERT_CHUNK = 500
_KEY = ("org_id", "day", "team_id", "tenant_id", "api_key_id", "model", "provider")
_SUMS = (
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
class RollupPass:
    days: int  # (organisation, day) pairs recomputed
    last_id: int  # the highest ledger id when the pass began


def utc_day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(), UTC)
    return start, start + timedelta(days=1)


def ledger_sums() -> tuple[Any, ...]:
    """The rollup's sums over usage_records rows, in `_SUMS` order (shared with the summary)."""
    record = UsageRecord
    return (
        func.count(),
        func.sum(case((record.status >= 400, 1), else_=0)),
        func.sum(func.coalesce(record.prompt_tokens, 0)),
        func.sum(func.coalesce(record.completion_tokens, 0)),
        func.sum(record.cached_tokens),
        func.sum(func.coalesce(record.reasoning_tokens, 0)),
        func.sum(func.coalesce(record.cost_nanousd, 0)),
        func.sum(case((record.cost_nanousd.is_(None), 1), else_=0)),
    )


async def refresh_rollups(
    sessions: async_sessionmaker[AsyncSession], since: datetime, after_id: int | None = None
) -> RollupPass:
    """Recompute usage_daily for every (organisation, UTC day) with ledger rows created at or
    after `since`, or written after ledger row `after_id` (late rows: a replayed spool, a call
    that ended after midnight). Each touched day is summed afresh and upserted, so running it
    twice, or on two replicas at once, gives the same table."""
    touched: set[tuple[int, date]] = set()
    async with sessions() as session:
        last_id = int(await session.scalar(select(func.max(UsageRecord.id))) or 0)
        for org_id in (await session.scalars(select(Organization.id))).all():
            first, last = (
                await session.execute(
                    select(func.min(UsageRecord.created_at), func.max(UsageRecord.created_at))
                    .where(UsageRecord.org_id == org_id)
                    .where(UsageRecord.created_at >= since)
                )
            ).one()
            touched.update(_days(org_id, first, last))
        if after_id is not None and after_id < last_id:
            spans = await session.execute(
                select(
                    UsageRecord.org_id,
                    func.min(UsageRecord.created_at),
                    func.max(UsageRecord.created_at),
                )
                .where(UsageRecord.id > after_id, UsageRecord.id <= last_id)
                .group_by(UsageRecord.org_id)
            )
            for org_id, first, last in spans:
                touched.update(_days(org_id, first, last))
    for org_id, day in sorted(touched):
        async with sessions.begin() as session:
            await _recompute_day(session, org_id, day)
    return RollupPass(days=len(touched), last_id=last_id)


def _days(org_id: int, first: datetime | None, last: datetime | None) -> Iterable[tuple[int, date]]:
    if first is None or last is None:
        return ()
    start, end = _utc(first).date(), _utc(last).date()
    return ((org_id, start + timedelta(days=n)) for n in range((end - start).days + 1))


def _utc(stamp: datetime) -> datetime:
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


async def _recompute_day(session: AsyncSession, org_id: int, day: date) -> None:
    start, end = utc_day_bounds(day)
    record = UsageRecord
    keys = (
        func.coalesce(record.team_id, 0),
        func.coalesce(record.tenant_id, 0),
        func.coalesce(record.api_key_id, 0),
        record.model,
        func.coalesce(record.provider, ""),
    )
    rows = await session.execute(
        select(*keys, *ledger_sums())
        .where(record.org_id == org_id, record.created_at >= start, record.created_at < end)
        .group_by(*keys)
    )
    values = [
        dict(zip(_KEY, (org_id, day, *row[:5]), strict=True))
        | {name: int(value or 0) for name, value in zip(_SUMS, row[5:], strict=True)}
        for row in rows
    ]
    for at in range(0, len(values), UPSERT_CHUNK):
        await _upsert(session, values[at : at + UPSERT_CHUNK])


async def _upsert(session: AsyncSession, values: Sequence[dict[str, Any]]) -> None:
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(UsageDaily).values(list(values))
    statement = statement.on_conflict_do_update(
        index_elements=list(_KEY),
        set_={name: statement.excluded[name] for name in _SUMS},
    )
    await session.execute(statement)


class RollupJob:
    """Runs `refresh_rollups` every ROLLUP_SECONDS: each pass covers today and yesterday
    (UTC) and every row written since the last pass; the first one backfills an empty table."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._last_id: int | None = None

    async def run_once(self) -> RollupPass:
        since = datetime.combine(self._clock().date() - timedelta(days=1), time(), UTC)
        if self._last_id is not None:
            after_id: int | None = max(0, self._last_id - LATE_COMMIT_IDS)
        elif await self._rollup_empty():
            since, after_id = datetime(1970, 1, 1, tzinfo=UTC), None
        else:
            after_id = await self._startup_after_id()
        done = await refresh_rollups(self._sessions, since, after_id)
        self._last_id = done.last_id
        return done

    async def run_forever(self, interval: float = ROLLUP_SECONDS) -> None:
        while True:
            try:
                done = await self.run_once()
                log.debug("usage rollup: %d organisation-days recomputed", done.days)
            except (SQLAlchemyError, OSError) as exc:
                log.warning("usage rollup failed, retried in %.0f s: %s", interval, exc)
            await asyncio.sleep(interval)

    async def _rollup_empty(self) -> bool:
        async with self._sessions() as session:
            return await session.scalar(select(UsageDaily.id).limit(1)) is None

    async def _startup_after_id(self) -> int:
        async with self._sessions() as session:
            last = await session.scalar(select(func.max(UsageRecord.id)))
        return max(0, int(last or 0) - STARTUP_LOOKBACK_IDS)
