"""The usage recorder on a real database: batched writes, and no row lost when the DB is gone."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from agentwatch.db.engine import create_engine, session_factory
from agentwatch.db.migrate import upgrade_database
from agentwatch.db.models import Conversation, UsageRecord
from agentwatch.settings import normalise_database_url
from agentwatch.usage.recorder import ConversationEvent, UsageEvent, UsageRecorder
from tests.conftest import BACKENDS
from tests.support import PG_ADMIN_DSN, database

START = datetime(2025, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)


def event(i: int) -> UsageEvent:
    return UsageEvent(
        request_id=f"req-{i:04d}",
        created_at=START + timedelta(seconds=i),
        org_id=1,
        tenant_id=7 if i % 2 else None,
        api_key_id=70 + i,
        model="fast",
        provider="local",
        upstream_model="gpt-4o-mini",
        endpoint="/v1/chat/completions",
        stream=bool(i % 3),
        status=200 if i % 4 else 502,
        error_type=None if i % 4 else "upstream_error",
        prompt_tokens=11 + i,
        completion_tokens=6,
        cached_tokens=3,
        cost_nanousd=5_000_000_000_000 + i,  # beyond 32 bits: the ledger is a BigInteger
        latency_ms=12.5 + i,
        ttft_ms=None if i % 2 else 3.25,
    )


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def urls(backend: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two fresh databases: the one that fails, and the one the next process starts on."""
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    with (
        database(backend, tmp_path / "first") as first,
        database(backend, tmp_path / "second") as second,
    ):
        yield normalise_database_url(first), normalise_database_url(second)


@pytest.fixture
async def engines(urls: tuple[str, str]) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    first, second = create_engine(urls[0]), create_engine(urls[1])
    try:
        for engine in (first, second):
            await upgrade_database(engine)
        yield first, second
    finally:
        await first.dispose()
        await second.dispose()


async def stored(engine: AsyncEngine) -> list[UsageEvent]:
    async with session_factory(engine)() as session:
        rows = (await session.scalars(select(UsageRecord).order_by(UsageRecord.request_id))).all()
    fields = UsageEvent.__dataclass_fields__
    return [UsageEvent(**{name: getattr(row, name) for name in fields}) for row in rows]


async def lose_database(backend: str, engine: AsyncEngine) -> None:
    """Make every later write fail, as when the database goes away during shutdown."""
    await engine.dispose()
    database_name = engine.url.database
    assert database_name is not None
    if backend == "postgres":
        connection = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await connection.execute(f'DROP DATABASE "{database_name}" WITH (FORCE)')
        finally:
            await connection.close()
        return
    replace_with_directory(Path(database_name))


def replace_with_directory(path: Path) -> None:
    """SQLite cannot open a directory, whoever runs the tests (root ignores file modes)."""
    for leftover in path.parent.glob(path.name + "*"):
        leftover.unlink()
    path.mkdir()


async def test_recorded_events_are_written_on_flush(
    engines: tuple[AsyncEngine, AsyncEngine], tmp_path: Path
) -> None:
    engine, _ = engines
    recorder = UsageRecorder(session_factory(engine), tmp_path / "spill.jsonl", flush_interval=60)
    await recorder.start()
    events = [event(i) for i in range(1203)]  # more than two batches
    for item in events:
        recorder.record(item)
    await recorder.flush()
    assert recorder.pending == 0
    assert await stored(engine) == events
    recorder.record(event(5000))
    await recorder.close()
    assert len(await stored(engine)) == len(events) + 1
    assert not (tmp_path / "spill.jsonl").exists()


async def test_rows_survive_a_lost_database_through_the_spill_file(
    backend: str, engines: tuple[AsyncEngine, AsyncEngine], tmp_path: Path
) -> None:
    failing, working = engines
    spill = tmp_path / "data" / "usage-spill.jsonl"
    recorder = UsageRecorder(session_factory(failing), spill, flush_interval=0.05)
    await recorder.start()
    events = [event(i) for i in range(25)]
    await lose_database(backend, failing)
    for item in events:
        recorder.record(item)
    with pytest.raises(SQLAlchemyError):
        await recorder.flush()
    assert recorder.pending == len(events)  # a refused flush keeps every row

    await recorder.close()
    assert recorder.pending == 0
    lines = spill.read_bytes().splitlines()
    assert [orjson.loads(line)["request_id"] for line in lines] == [e.request_id for e in events]

    successor = UsageRecorder(session_factory(working), spill)
    await successor.start()
    try:
        assert not spill.exists()
        assert await stored(working) == events
    finally:
        await successor.close()
    assert await stored(working) == events


async def test_a_spill_that_cannot_be_replayed_yet_is_kept(
    backend: str, engines: tuple[AsyncEngine, AsyncEngine], tmp_path: Path
) -> None:
    failing, _ = engines
    spill = tmp_path / "usage-spill.jsonl"
    content = b"".join(orjson.dumps(dataclasses.asdict(event(i))) + b"\n" for i in range(3))
    spill.write_bytes(content)
    await lose_database(backend, failing)
    recorder = UsageRecorder(session_factory(failing), spill)
    await recorder.start()  # the database is gone: the rows wait in the queue
    assert recorder.pending == 3
    await recorder.close()  # and go back to the spill file, once each
    assert spill.read_bytes() == content


def conversation(i: int) -> ConversationEvent:
    return ConversationEvent(
        request_id=f"req-{i:04d}",
        created_at=START + timedelta(seconds=i),
        org_id=1,
        tenant_id=7,
        api_key_id=70,
        team_id=None,
        model="fast",
        endpoint="/v1/chat/completions",
        status=400,
        dlp_action="block",
        dlp_events=[
            {"detector": "aws_access_key_id", "action": "block", "path": "messages[0].content"}
        ],
        risk_score=95.0,
    )


async def stored_conversations(engine: AsyncEngine) -> list[tuple[str, list[object], float]]:
    async with session_factory(engine)() as session:
        rows = (await session.scalars(select(Conversation).order_by(Conversation.id))).all()
    return [(row.request_id, row.dlp_events, row.risk_score) for row in rows]


async def test_conversation_rows_are_written_and_survive_a_lost_database(
    backend: str, engines: tuple[AsyncEngine, AsyncEngine], tmp_path: Path
) -> None:
    failing, working = engines
    spill = tmp_path / "usage-spill.jsonl"
    recorder = UsageRecorder(session_factory(failing), spill, flush_interval=60)
    await recorder.start()
    recorder.record(event(1))
    recorder.record_conversation(conversation(1))
    await recorder.flush()
    assert [r[0] for r in await stored_conversations(failing)] == ["req-0001"]

    await lose_database(backend, failing)
    recorder.record(event(2))
    recorder.record_conversation(conversation(2))
    await recorder.close()
    assert recorder.pending == 0 and spill.exists()

    successor = UsageRecorder(session_factory(working), spill)
    await successor.start()
    await successor.close()
    assert await stored_conversations(working) == [("req-0002", conversation(2).dlp_events, 95.0)]
    assert [e.request_id for e in await stored(working)] == ["req-0002"]
