"""The usage_daily rollup and the ledger reconciliation, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from agentwatch.db.models import UsageDaily
from agentwatch.usage.reconcile import LedgerScope, ledger_spent, reconcile
from agentwatch.usage.recorder import UsageEvent
from agentwatch.usage.rollup import RollupJob, refresh_rollups
from tests.conftest import BACKENDS
from tests.ledger_support import Sessions, database_url, ledger_row, migrated, new_org, write_rows

NOW = datetime(2026, 5, 20, 15, 30, tzinfo=UTC)
TODAY = NOW.date()


def at(days_ago: int, hour: int = 12) -> datetime:
    return datetime.combine(TODAY - timedelta(days=days_ago), datetime.min.time(), UTC).replace(
        hour=hour
    )


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database_url(str(request.param), tmp_path) as url:
        yield url


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[Sessions]:
    async with migrated(db_url) as made:
        yield made


def expected_rollup(rows: list[UsageEvent]) -> dict[tuple[Any, ...], dict[str, int]]:
    """The rollup computed by hand from the rows."""
    out: dict[tuple[Any, ...], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        key = (
            row.org_id,
            row.created_at.astimezone(UTC).date(),
            row.team_id or 0,
            row.tenant_id or 0,
            row.api_key_id or 0,
            row.model,
            row.provider or "",
        )
        sums = out[key]
        sums["requests"] += 1
        sums["errors"] += row.status >= 400
        sums["prompt_tokens"] += row.prompt_tokens or 0
        sums["completion_tokens"] += row.completion_tokens or 0
        sums["cached_tokens"] += row.cached_tokens
        sums["reasoning_tokens"] += row.reasoning_tokens or 0
        sums["cost_nanousd"] += row.cost_nanousd or 0
        sums["unknown_cost_requests"] += row.cost_nanousd is None
    return {key: dict(sums) for key, sums in out.items()}


async def stored_rollup(sessions: Sessions) -> dict[tuple[Any, ...], dict[str, int]]:
    async with sessions() as session:
        rows = (await session.scalars(select(UsageDaily))).all()
    return {
        (r.org_id, r.day, r.team_id, r.tenant_id, r.api_key_id, r.model, r.provider): {
            "requests": r.requests,
            "errors": r.errors,
            "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens,
            "cached_tokens": r.cached_tokens,
            "reasoning_tokens": r.reasoning_tokens,
            "cost_nanousd": r.cost_nanousd,
            "unknown_cost_requests": r.unknown_cost_requests,
        }
        for r in rows
    }


def mixed_rows(org: int, other: int) -> list[UsageEvent]:
    return [
        ledger_row(org, at(2), team_id=3, tenant_id=4, api_key_id=5, reasoning=2, cached=1),
        ledger_row(org, at(2, 23), team_id=3, tenant_id=4, api_key_id=5, cost=None, tokens=None),
        ledger_row(org, at(2), status=502, cost=None, tokens=None, provider=None),
        ledger_row(org, at(1, 0), model="other", cost=7_000_000_000_000),  # beyond 32 bits
        ledger_row(org, at(0), status=429, cost=0, tokens=(0, 0)),
        ledger_row(org, at(0, 1)),
        ledger_row(other, at(2)),
    ]


async def test_rollup_sums_each_day_and_is_idempotent(sessions: Sessions, tmp_path: Path) -> None:
    org, other = await new_org(sessions, "a"), await new_org(sessions, "b")
    rows = mixed_rows(org, other)
    await write_rows(sessions, rows, tmp_path)
    done = await refresh_rollups(sessions, since=at(10))
    assert done.days == 4  # org a: three days, org b: one
    assert await stored_rollup(sessions) == expected_rollup(rows)
    again = await refresh_rollups(sessions, since=at(10))
    assert again.days == 4
    assert await stored_rollup(sessions) == expected_rollup(rows)


async def test_late_rows_are_found_by_ledger_id(sessions: Sessions, tmp_path: Path) -> None:
    """A spool replayed days later: rows of an old day, written after the last pass."""
    org = await new_org(sessions, "a")
    rows = [ledger_row(org, at(0)), ledger_row(org, at(6))]
    await write_rows(sessions, rows, tmp_path)
    first = await refresh_rollups(sessions, since=at(10))
    late = [ledger_row(org, at(6, 3), cost=5), ledger_row(org, at(9), cost=6)]
    await write_rows(sessions, late, tmp_path)
    # Only today by date: the old days are reached through the ids written since.
    since_today = datetime.combine(TODAY, datetime.min.time(), UTC)
    assert (await refresh_rollups(sessions, since=since_today)).days == 1
    assert await stored_rollup(sessions) != expected_rollup(rows + late)
    second = await refresh_rollups(sessions, since=since_today, after_id=first.last_id)
    # Today, and the span of the late rows (9 to 6 days ago, the days between included).
    assert second.days == 5 and second.last_id > first.last_id
    assert await stored_rollup(sessions) == expected_rollup(rows + late)


async def test_the_job_backfills_then_follows_the_ledger(
    sessions: Sessions, tmp_path: Path
) -> None:
    org = await new_org(sessions, "a")
    rows = [ledger_row(org, at(30)), ledger_row(org, at(0))]
    await write_rows(sessions, rows, tmp_path)
    job = RollupJob(sessions, clock=lambda: NOW)
    assert (await job.run_once()).days == 31  # empty table: every day since the first row
    assert await stored_rollup(sessions) == expected_rollup(rows)
    late = [ledger_row(org, at(20)), ledger_row(org, at(0, 14))]
    await write_rows(sessions, late, tmp_path)
    await job.run_once()
    assert await stored_rollup(sessions) == expected_rollup(rows + late)
    restarted = RollupJob(sessions, clock=lambda: NOW)
    newest = [ledger_row(org, at(25))]
    await write_rows(sessions, newest, tmp_path)
    await restarted.run_once()  # not empty: yesterday, today and the recent ids
    assert await stored_rollup(sessions) == expected_rollup(rows + late + newest)


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_replicas_rolling_up_at_once_agree(sessions: Sessions, tmp_path: Path) -> None:
    org = await new_org(sessions, "a")
    rows = [ledger_row(org, at(day % 3), api_key_id=day % 5) for day in range(60)]
    await write_rows(sessions, rows, tmp_path)
    await asyncio.gather(*(refresh_rollups(sessions, since=at(5)) for _ in range(4)))
    assert await stored_rollup(sessions) == expected_rollup(rows)


async def test_ledger_spent_per_scope_and_period(sessions: Sessions, tmp_path: Path) -> None:
    org, other = await new_org(sessions, "a"), await new_org(sessions, "b")
    start, end = at(2, 0), at(0, 0)
    rows = [
        ledger_row(org, start, cost=1, team_id=1, tenant_id=2, api_key_id=3),  # first instant
        ledger_row(org, at(1), cost=10, team_id=1, tenant_id=2, api_key_id=4),
        ledger_row(org, at(1), cost=None, team_id=1, tenant_id=2, api_key_id=3, tokens=None),
        ledger_row(org, at(1), cost=100, team_id=9),
        ledger_row(org, end, cost=1000, team_id=1, tenant_id=2, api_key_id=3),  # excluded
        ledger_row(org, start - timedelta(microseconds=1), cost=10_000, api_key_id=3),
        ledger_row(other, at(1), cost=100_000, team_id=1),
    ]
    await write_rows(sessions, rows, tmp_path)
    async with sessions() as session:
        spent = {
            scope: await ledger_spent(session, scope, scope_id, start, end)
            for scope, scope_id in (("org", org), ("team", 1), ("tenant", 2), ("key", 3))
        }
    assert spent == {"org": 111, "team": 100_011, "tenant": 11, "key": 1}


async def test_reconcile_reports_every_counter_and_warns_on_drift(
    sessions: Sessions, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    org = await new_org(sessions, "a")
    await write_rows(sessions, [ledger_row(org, at(1), cost=500, tenant_id=2)], tmp_path)
    period = (at(3, 0), at(0, 0))
    scopes = [
        LedgerScope("budget:org:exact", "org", org, *period),
        LedgerScope("budget:tenant:over", "tenant", 2, *period),
        LedgerScope("budget:tenant:missing", "tenant", 99, *period),
    ]
    counters = {"budget:org:exact": 500, "budget:tenant:over": 650}

    async def live(key: str) -> int | None:
        return counters.get(key)

    with caplog.at_level(logging.WARNING, "agentwatch.usage.reconcile"):
        async with sessions() as session:
            report = await reconcile(session, scopes, live)
    assert [(d.key, d.live_nanousd, d.ledger_nanousd, d.nanousd) for d in report] == [
        ("budget:org:exact", 500, 500, 0),
        ("budget:tenant:over", 650, 500, 150),
        ("budget:tenant:missing", None, 0, 0),
    ]
    assert "budget:tenant:over" in caplog.text and "+150" in caplog.text
    assert "budget:org:exact" not in caplog.text
    caplog.clear()
    async with sessions() as session:
        quiet = await reconcile(session, scopes, counters.get, tolerance_nanousd=150)
    assert [d.nanousd for d in quiet] == [0, 150, 0] and not caplog.text


def test_day_helper() -> None:
    assert at(1, 0).date() == date(2026, 5, 19)
