"""Test support for the ledger: a migrated database per backend, and ledger rows written
through the usage recorder's own insert."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from itertools import count
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agentwatch.db.engine import create_engine, session_factory
from agentwatch.db.migrate import upgrade_database
from agentwatch.db.models import Organization
from agentwatch.settings import normalise_database_url
from agentwatch.usage.recorder import UsageEvent, UsageRecorder
from tests.support import database

Sessions = async_sessionmaker[AsyncSession]
_ids = count(1)


@contextmanager
def database_url(backend: str, workdir: Path) -> Iterator[str]:
    """A fresh database (sync: PostgreSQL's is made with its own event loop)."""
    with database(backend, workdir) as url:
        yield normalise_database_url(url)


@asynccontextmanager
async def migrated(url: str) -> AsyncIterator[Sessions]:
    engine = create_engine(url)
    try:
        await upgrade_database(engine)
        yield session_factory(engine)
    finally:
        await engine.dispose()


async def new_org(sessions: Sessions, name: str, markup_pct: float | None = None) -> int:
    async with sessions.begin() as session:
        org = Organization(name=name, markup_pct=markup_pct)
        session.add(org)
        await session.flush()
        return org.id


def ledger_row(
    org_id: int,
    created_at: datetime,
    *,
    cost: int | None = 1_000,
    status: int = 200,
    tokens: tuple[int, int] | None = (10, 5),
    model: str = "fast",
    provider: str | None = "local",
    team_id: int | None = None,
    tenant_id: int | None = None,
    api_key_id: int | None = None,
    cached: int = 0,
    reasoning: int | None = None,
) -> UsageEvent:
    return UsageEvent(
        request_id=f"req-{next(_ids)}",
        created_at=created_at,
        org_id=org_id,
        tenant_id=tenant_id,
        api_key_id=api_key_id,
        model=model,
        provider=provider,
        upstream_model=model,
        endpoint="/v1/chat/completions",
        stream=False,
        status=status,
        error_type=None if status < 400 else "upstream_error",
        prompt_tokens=tokens[0] if tokens else None,
        completion_tokens=tokens[1] if tokens else None,
        cached_tokens=cached,
        cost_nanousd=cost,
        latency_ms=1.0,
        ttft_ms=None,
        team_id=team_id,
        reasoning_tokens=reasoning,
    )


async def write_rows(sessions: Sessions, rows: list[UsageEvent], workdir: Path) -> None:
    """Through the recorder, so rows are stored exactly as the gateway stores them."""
    recorder = UsageRecorder(sessions, workdir / "spill.jsonl")
    for row in rows:
        recorder.record(row)
    await recorder.flush()
