"""GET /api/usage/summary: past days from the rollup, today from the ledger; grouped and
filtered; org-scoped. The query on both backends with a fixed "today", then over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import update

from agentwatch.db.models import UsageDaily
from agentwatch.usage.rollup import refresh_rollups
from agentwatch.usage.summary import GroupKey, SummaryQuery, usage_summary
from tests.admin_support import bearer
from tests.conftest import BACKENDS
from tests.ledger_support import Sessions, database_url, ledger_row, migrated, new_org, write_rows
from tests.support import Gateway

TODAY = date(2026, 5, 20)


def at(days_ago: int, hour: int = 12) -> datetime:
    day = TODAY - timedelta(days=days_ago)
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database_url(str(request.param), tmp_path) as url:
        yield url


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[Sessions]:
    async with migrated(db_url) as made:
        yield made


async def summary(
    sessions: Sessions, org: int, *group_by: GroupKey, first: int = 10, **filters: Any
) -> list[dict[str, Any]]:
    query = SummaryQuery(
        org_id=org,
        group_by=group_by,
        first_day=TODAY - timedelta(days=first),
        last_day=filters.pop("last_day", TODAY),
        today=TODAY,
        **filters,
    )
    async with sessions() as session:
        return await usage_summary(session, query)


async def test_past_days_come_from_the_rollup_and_today_from_the_ledger(
    sessions: Sessions, tmp_path: Path
) -> None:
    org, other = await new_org(sessions, "a"), await new_org(sessions, "b")
    await write_rows(
        sessions,
        [
            ledger_row(org, at(3), cost=1, tokens=(10, 1)),
            ledger_row(org, at(2), cost=20, tokens=(20, 2), reasoning=1, cached=5),
            ledger_row(org, at(2), cost=None, tokens=None, status=502),
            ledger_row(other, at(2), cost=999),
        ],
        tmp_path,
    )
    await refresh_rollups(sessions, since=at(30))
    # Written after the last pass: today's shows at once, yesterday's waits for the rollup.
    await write_rows(
        sessions,
        [ledger_row(org, at(0), cost=300, tokens=(30, 3)), ledger_row(org, at(1), cost=4000)],
        tmp_path,
    )
    rows = await summary(sessions, org, "day")
    assert [(r["day"], r["requests"], r["cost_nanousd"]) for r in rows] == [
        (TODAY - timedelta(days=3), 1, 1),
        (TODAY - timedelta(days=2), 2, 20),
        (TODAY, 1, 300),
    ]
    two_days_ago = rows[1]
    assert two_days_ago == {
        "day": TODAY - timedelta(days=2),
        "requests": 2,
        "errors": 1,
        "prompt_tokens": 20,
        "completion_tokens": 2,
        "cached_tokens": 5,
        "reasoning_tokens": 1,
        "cost_nanousd": 20,
        "cost_usd": 20e-9,
        "unknown_cost_requests": 1,
    }
    # The rollup is what answers for a past day: change it and the answer follows.
    async with sessions.begin() as session:
        await session.execute(
            update(UsageDaily)
            .where(UsageDaily.org_id == org, UsageDaily.day == TODAY - timedelta(days=3))
            .values(requests=77)
        )
    (only,) = await summary(sessions, org, "day", first=3, last_day=TODAY - timedelta(days=3))
    assert only["requests"] == 77
    await refresh_rollups(sessions, since=at(30))
    totals = await summary(sessions, org)
    assert [(t["requests"], t["cost_nanousd"], t["unknown_cost_requests"]) for t in totals] == [
        (5, 4321, 1)
    ]


async def test_groups_and_filters(sessions: Sessions, tmp_path: Path) -> None:
    org = await new_org(sessions, "a")
    await write_rows(
        sessions,
        [
            ledger_row(org, at(1), model="m1", team_id=1, tenant_id=10, api_key_id=100, cost=1),
            ledger_row(org, at(1), model="m1", team_id=1, tenant_id=10, api_key_id=101, cost=2),
            ledger_row(org, at(1), model="m2", team_id=2, tenant_id=20, api_key_id=200, cost=4),
            ledger_row(org, at(0), model="m2", provider=None, cost=8),
            ledger_row(org, at(0), model="m1", team_id=1, tenant_id=10, api_key_id=100, cost=16),
        ],
        tmp_path,
    )
    await refresh_rollups(sessions, since=at(30))
    by_model = await summary(sessions, org, "model")
    assert [(r["model"], r["requests"], r["cost_nanousd"]) for r in by_model] == [
        ("m1", 3, 19),
        ("m2", 2, 12),
    ]
    assert set(by_model[0]) == {"model", *METRICS}
    by_team = await summary(sessions, org, "team", "tenant")
    assert [(r["team_id"], r["tenant_id"], r["cost_nanousd"]) for r in by_team] == [
        (None, None, 8),  # no team, no tenant: shown as null
        (1, 10, 19),
        (2, 20, 4),
    ]
    by_key = await summary(sessions, org, "key", "provider", "day", team_id=1)
    assert [(r["api_key_id"], r["day"], r["cost_nanousd"]) for r in by_key] == [
        (100, TODAY - timedelta(days=1), 1),
        (100, TODAY, 16),
        (101, TODAY - timedelta(days=1), 2),
    ]
    assert {r["provider"] for r in by_key} == {"local"}
    unrouted = await summary(sessions, org, "provider", model="m2")
    assert [(r["provider"], r["cost_nanousd"]) for r in unrouted] == [(None, 8), ("local", 4)]
    assert (await summary(sessions, org, tenant_id=20))[0]["cost_nanousd"] == 4
    assert (await summary(sessions, org, provider="local"))[0]["cost_nanousd"] == 23
    assert await summary(sessions, org, first=0, model="m1", team_id=2) == []
    only_yesterday = await summary(sessions, org, first=1, last_day=TODAY - timedelta(days=1))
    assert only_yesterday[0]["cost_nanousd"] == 7


METRICS = {
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_nanousd",
    "cost_usd",
    "unknown_cost_requests",
}


def get_summary(gateway: Gateway, **params: Any) -> httpx.Response:
    return httpx.get(
        f"{gateway.url}/api/usage/summary",
        params=params,
        headers=bearer(gateway.admin_token()),
    )


def test_the_summary_over_http_matches_the_ledger(gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.tenant_key, max_retries=0)
    ids = [
        client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": "hi"}]
        ).headers["x-request-id"]
        for model in ("gpt-4o-mini", "gpt-4o-mini", "embedder")
    ]
    for request_id in ids:
        gateway.wait_for_usage(1, request_id=request_id)
    today = datetime.now(UTC).date()
    records = gateway.usage(limit=1000, since=f"{today.isoformat()}T00:00:00Z")["data"]
    response = get_summary(gateway, group_by="model,day", **{"from": today.isoformat()})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["group_by"] == ["model", "day"] and body["from"] == body["to"] == str(today)
    by_model = {row["model"]: row for row in body["data"]}
    for model in ("gpt-4o-mini", "embedder"):
        mine = [r for r in records if r["model"] == model]
        row = by_model[model]
        assert row["day"] == str(today)
        assert row["requests"] == len(mine)
        assert row["prompt_tokens"] == sum(r["prompt_tokens"] or 0 for r in mine)
        assert row["cost_usd"] == pytest.approx(sum(r["cost_usd"] or 0 for r in mine), abs=1e-12)
    # Repeated parameters work too, and every row carries only the keys asked for.
    repeated = get_summary(gateway, group_by=["tenant", "key"]).json()
    assert {frozenset(row) - METRICS for row in repeated["data"]} == {
        frozenset({"tenant_id", "api_key_id"})
    }
    # Another organisation (a super admin acting there) sees none of it.
    org = httpx.post(
        f"{gateway.url}/api/organizations",
        json={"name": f"other-{today.isoformat()}-{len(records)}"},
        headers=bearer(gateway.admin_token()),
    )
    assert org.status_code == 201, org.text
    elsewhere = httpx.get(
        f"{gateway.url}/api/usage/summary",
        headers=bearer(gateway.admin_token(), **{"X-AgentWatch-Org": str(org.json()["id"])}),
    )
    assert elsewhere.status_code == 200 and elsewhere.json()["data"] == []


@pytest.mark.parametrize(
    "params",
    [
        {"group_by": "week"},
        {"group_by": "day,nope"},
        {"from": "2026-05-02", "to": "2026-05-01"},
        {"from": "2000-01-01", "to": "2026-01-01"},
        {"from": "yesterday"},
    ],
)
def test_bad_parameters_are_422(gateway: Gateway, params: dict[str, str]) -> None:
    response = get_summary(gateway, **params)
    assert response.status_code == 422, response.text
    assert "detail" in response.json()


def test_the_summary_needs_an_admin_token(gateway: Gateway) -> None:
    assert httpx.get(f"{gateway.url}/api/usage/summary").status_code == 401
    tenant = httpx.get(f"{gateway.url}/api/usage/summary", headers=bearer(gateway.tenant_key))
    assert tenant.status_code == 401
