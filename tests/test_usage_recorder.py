"""The usage recorder on a real database: batched writes, and no row lost when the DB is gone."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
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
from agentwatch.settings import SettingsError, load_settings, normalise_database_url
from agentwatch.usage.recorder import BATCH_SIZE, ConversationEvent, UsageEvent, UsageRecorder
from tests.conftest import BACKENDS
from tests.support import PG_ADMIN_DSN, database, pg_admin

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
    await recorder.start()  # the database is gone: the rows wait in the spill file
    assert (recorder.pending, recorder.spilled, recorder.backlog) == (0, 3, 3)
    await recorder.close()  # and stay there, once each
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


class Outage:
    """Takes a test database away and brings it back, as a stopped server would: PostgreSQL
    refuses connections to it, SQLite finds a directory where the file was."""

    def __init__(self, backend: str, engine: AsyncEngine) -> None:
        self.backend = backend
        self.engine = engine
        name = engine.url.database
        assert name is not None
        self.name = name

    async def begin(self) -> None:
        await self.engine.dispose()
        if self.backend == "postgres":
            await pg_admin(f'ALTER DATABASE "{self.name}" WITH ALLOW_CONNECTIONS false')
            await pg_admin(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{self.name}'"
            )
            return
        move_sqlite_away(Path(self.name))

    async def end(self) -> None:
        if self.backend == "postgres":
            await pg_admin(f'ALTER DATABASE "{self.name}" WITH ALLOW_CONNECTIONS true')
            return
        bring_sqlite_back(Path(self.name))


def move_sqlite_away(path: Path) -> None:
    for file in path.parent.glob(path.name + "*"):
        file.rename(file.with_name(file.name + ".away"))
    path.mkdir()


def bring_sqlite_back(path: Path) -> None:
    path.rmdir()
    for file in path.parent.glob(path.name + "*.away"):
        file.rename(file.with_name(file.name.removesuffix(".away")))


async def ledger_order(engine: AsyncEngine) -> list[str]:
    """Request ids in the order they were inserted."""
    async with session_factory(engine)() as session:
        ids = await session.scalars(select(UsageRecord.request_id).order_by(UsageRecord.id))
        return list(ids)


async def settled(condition: Callable[[], bool]) -> None:
    """Let the recorder's background tasks run until `condition` holds (bounded, not timed)."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the recorder did not settle")


def spilled_usage_ids(spill: Path) -> list[str]:
    rows = [orjson.loads(line) for line in spill.read_bytes().splitlines()]
    return [row["request_id"] for row in rows if "_conversation" not in row]


def tagged(i: int) -> ConversationEvent:
    return dataclasses.replace(conversation(i), request_id=f"conv-{i:04d}")


async def test_past_max_pending_the_oldest_rows_wait_on_disk_and_come_back_in_order(
    backend: str, engines: tuple[AsyncEngine, AsyncEngine], tmp_path: Path
) -> None:
    engine, _ = engines
    spill = tmp_path / "usage-spill.jsonl"
    outage = Outage(backend, engine)
    # The writer sleeps (60 s, and no batch fills up): only the spiller moves rows here.
    recorder = UsageRecorder(session_factory(engine), spill, flush_interval=60, max_pending=10)
    await recorder.start()
    events = [event(i) for i in range(47)]
    talks = [tagged(i) for i in range(0, len(events), 6)]
    await outage.begin()
    try:
        for n, start in enumerate(range(0, len(events), 6)):
            for item in events[start : start + 6]:
                recorder.record(item)
            recorder.record_conversation(talks[n])
            await settled(lambda: recorder.pending <= 10)
        assert recorder.backlog == len(events) + len(talks)
        assert recorder.spilled == len(spill.read_bytes().splitlines()) > 0
        on_disk = spilled_usage_ids(spill)
        assert on_disk == [e.request_id for e in events[: len(on_disk)]]  # the oldest, in order
    finally:
        await outage.end()
    await recorder.flush()
    assert (recorder.backlog, spill.exists()) == (0, False)
    assert await ledger_order(engine) == [e.request_id for e in events]
    assert await stored(engine) == events
    assert [c[0] for c in await stored_conversations(engine)] == [t.request_id for t in talks]
    await recorder.close()
    assert len(await stored(engine)) == len(events)


async def test_the_running_writer_catches_up_once_the_database_returns(
    backend: str, engines: tuple[AsyncEngine, AsyncEngine], tmp_path: Path
) -> None:
    engine, _ = engines
    spill = tmp_path / "usage-spill.jsonl"
    outage = Outage(backend, engine)
    recorder = UsageRecorder(session_factory(engine), spill, flush_interval=0.01, max_pending=25)
    await recorder.start()
    events = [event(i) for i in range(1200)]
    await outage.begin()
    try:
        for start in range(0, len(events), 40):
            for item in events[start : start + 40]:
                recorder.record(item)
            # Memory stays bounded however long the outage lasts; the rest is on disk.
            await settled(lambda: recorder.pending <= 25)
        assert recorder.backlog == len(events)
        # In memory: at most the limit, plus the one batch the writer keeps retrying.
        assert recorder.backlog - recorder.spilled <= 25 + BATCH_SIZE
    finally:
        await outage.end()
    # No flush from the test: the background writer finds the database back by itself.
    await settled(lambda: recorder.backlog == 0)
    await settled(lambda: not spill.exists())
    assert await ledger_order(engine) == [e.request_id for e in events]
    await recorder.close()
    assert await stored(engine) == events


async def test_a_write_that_may_have_committed_is_checked_before_it_is_retried(
    backend: str, engines: tuple[AsyncEngine, AsyncEngine], tmp_path: Path
) -> None:
    engine, _ = engines
    outage = Outage(backend, engine)
    recorder = UsageRecorder(session_factory(engine), tmp_path / "spill.jsonl", flush_interval=60)
    await recorder.start()
    events = [event(i) for i in range(4)]
    for item in events:
        recorder.record(item)
    await outage.begin()
    try:
        with pytest.raises(SQLAlchemyError):
            await recorder.flush()
    finally:
        await outage.end()
    # As if the failed attempt's commit had landed before its connection broke: two of its
    # rows are in the ledger, and the recorder cannot know.
    helper = UsageRecorder(session_factory(engine), tmp_path / "other.jsonl")
    for item in events[1:3]:
        helper.record(item)
    await helper.flush()
    await recorder.flush()
    assert await stored(engine) == events
    recorder.record(event(9))  # a batch after a clean write is not checked, but written once
    await recorder.close()
    assert await stored(engine) == [*events, event(9)]


async def test_replaying_a_spill_file_skips_rows_a_crashed_process_had_written(
    engines: tuple[AsyncEngine, AsyncEngine], tmp_path: Path
) -> None:
    engine, _ = engines
    spill = tmp_path / "usage-spill.jsonl"
    events = [event(i) for i in range(12)]
    first = UsageRecorder(session_factory(engine), tmp_path / "first.jsonl")
    for item in events[:8]:
        first.record(item)
    first.record_conversation(conversation(2))
    await first.flush()
    # It crashed after writing those rows and before it could remove them from the file.
    lines = [orjson.dumps(dataclasses.asdict(e)) + b"\n" for e in events]
    lines.insert(3, orjson.dumps({**conversation(2).as_row(), "_conversation": True}) + b"\n")
    lines.append(orjson.dumps({**conversation(11).as_row(), "_conversation": True}) + b"\n")
    spill.write_bytes(b"".join(lines))
    successor = UsageRecorder(session_factory(engine), spill)
    await successor.start()
    await successor.close()
    assert await stored(engine) == events
    assert [c[0] for c in await stored_conversations(engine)] == ["req-0002", "req-0011"]
    assert not spill.exists()


async def test_torn_and_unreadable_spill_lines_are_set_aside(
    engines: tuple[AsyncEngine, AsyncEngine], tmp_path: Path
) -> None:
    engine, _ = engines
    spill = tmp_path / "usage-spill.jsonl"
    good = [orjson.dumps(dataclasses.asdict(event(i))) + b"\n" for i in range(4)]
    garbage = b'{"request_id": "half a row"}\n'
    torn = orjson.dumps(dataclasses.asdict(event(5)))[:40]  # a crash mid-append
    spill.write_bytes(b"".join([*good[:2], garbage, *good[2:], torn]))
    recorder = UsageRecorder(session_factory(engine), spill)
    await recorder.start()
    await recorder.close()
    assert await stored(engine) == [event(i) for i in range(4)]
    assert not spill.exists()
    rejected = (tmp_path / "usage-spill.jsonl.rejected").read_bytes().splitlines()
    assert sorted(rejected) == sorted([torn, garbage.rstrip()])


async def test_a_spill_file_left_behind_gets_new_rows_on_a_line_of_their_own(
    backend: str, engines: tuple[AsyncEngine, AsyncEngine], tmp_path: Path
) -> None:
    engine, _ = engines
    spill = tmp_path / "usage-spill.jsonl"
    torn = orjson.dumps(dataclasses.asdict(event(0)))[:25]
    spill.write_bytes(orjson.dumps(dataclasses.asdict(event(1))) + b"\n" + torn)
    outage = Outage(backend, engine)
    await outage.begin()
    try:
        recorder = UsageRecorder(session_factory(engine), spill, max_pending=1)
        await recorder.start()
        for i in (2, 3, 4):
            recorder.record(event(i))
        await settled(lambda: recorder.spilled == 4)  # past the limit of one: all three
        assert spilled_usage_ids(spill) == [f"req-{i:04d}" for i in (1, 2, 3, 4)]
    finally:
        await outage.end()
    await recorder.close()
    assert [e.request_id for e in await stored(engine)] == [f"req-{i:04d}" for i in (1, 2, 3, 4)]


class LedgerLock:
    """Another connection holding the ledger's write lock, so inserts wait behind it."""

    def __init__(self, backend: str, engine: AsyncEngine) -> None:
        self.backend = backend
        name = engine.url.database
        assert name is not None
        self.name = name
        self.pg: asyncpg.Connection | None = None
        self.sqlite: sqlite3.Connection | None = None

    async def take(self) -> None:
        if self.backend == "postgres":
            self.pg = await asyncpg.connect(f"{PG_ADMIN_DSN.rsplit('/', 1)[0]}/{self.name}")
            await self.pg.execute("BEGIN")
            await self.pg.execute("LOCK TABLE usage_records IN EXCLUSIVE MODE")
            return
        self.sqlite = sqlite3.connect(self.name, isolation_level=None)
        self.sqlite.execute("BEGIN EXCLUSIVE")

    async def waiting_writers(self) -> list[int]:
        """PostgreSQL backends blocked on the lock."""
        assert self.pg is not None
        rows = await self.pg.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
            self.name,
        )
        return [row["pid"] for row in rows]

    async def release(self) -> None:
        if self.pg is not None:
            await self.pg.execute("ROLLBACK")
            await self.pg.close()
        if self.sqlite is not None:
            self.sqlite.execute("ROLLBACK")
            self.sqlite.close()


async def test_a_batch_spilled_while_its_write_waits_is_written_once(
    backend: str, engines: tuple[AsyncEngine, AsyncEngine], tmp_path: Path
) -> None:
    engine, _ = engines
    spill = tmp_path / "usage-spill.jsonl"
    recorder = UsageRecorder(session_factory(engine), spill, flush_interval=60, max_pending=10)
    await recorder.start()
    events = [event(i) for i in range(30)]
    lock = LedgerLock(backend, engine)
    await lock.take()
    try:
        for item in events[:8]:
            recorder.record(item)
        writing = asyncio.create_task(recorder.flush())
        await settled(lambda: recorder.pending == 0)  # the batch is taken: its INSERT waits
        for item in events[8:]:
            recorder.record(item)
        # The waiting batch is older than the rest: it goes to the file first.
        await settled(lambda: recorder.spilled == len(events))
        assert spilled_usage_ids(spill) == [e.request_id for e in events]
    finally:
        await lock.release()
    await writing  # its write succeeds after all; the replay then skips those 8 rows
    assert (recorder.backlog, spill.exists()) == (0, False)
    assert await ledger_order(engine) == [e.request_id for e in events]
    await recorder.close()
    assert await stored(engine) == events


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    with database("postgres", tmp_path) as url:
        yield normalise_database_url(url)


# PostgreSQL only: a waiting SQLite writer cannot be made to fail short of its 30 s busy timeout.
async def test_a_batch_spilled_while_its_write_waits_survives_the_write_failing(
    postgres_url: str, tmp_path: Path
) -> None:
    engine = create_engine(postgres_url)
    try:
        await upgrade_database(engine)
        await spilled_batch_whose_write_fails(engine, tmp_path)
    finally:
        await engine.dispose()


async def spilled_batch_whose_write_fails(engine: AsyncEngine, tmp_path: Path) -> None:
    spill = tmp_path / "usage-spill.jsonl"
    recorder = UsageRecorder(session_factory(engine), spill, flush_interval=60, max_pending=10)
    await recorder.start()
    events = [event(i) for i in range(30)]
    lock = LedgerLock("postgres", engine)
    await lock.take()
    try:
        for item in events[:8]:
            recorder.record(item)
        writing = asyncio.create_task(recorder.flush())
        await settled(lambda: recorder.pending == 0)
        for item in events[8:]:
            recorder.record(item)
        await settled(lambda: recorder.spilled == len(events))
        waiting: list[int] = []
        for _ in range(2000):
            waiting = await lock.waiting_writers()
            if waiting:
                break
            await asyncio.sleep(0.005)
        assert len(waiting) == 1
        await pg_admin(f"SELECT pg_terminate_backend({waiting[0]})")
        with pytest.raises(SQLAlchemyError):
            await writing
        # The failed batch is not requeued: its copy in the spill file stands for it.
        assert (recorder.pending, recorder.backlog) == (0, len(events))
    finally:
        await lock.release()
    await recorder.flush()
    assert await ledger_order(engine) == [e.request_id for e in events]
    await recorder.close()
    assert await stored(engine) == events


def test_the_memory_limit_is_a_setting(tmp_path: Path) -> None:
    base = {"AGENTWATCH_DATA_DIR": str(tmp_path), "JWT_SECRET": "j", "ENCRYPTION_KEY": "k"}
    assert load_settings(base).usage_max_pending == 50_000
    assert load_settings({**base, "AGENTWATCH_USAGE_MAX_PENDING": "7"}).usage_max_pending == 7
    for bad in ("0", "-3", "many"):
        with pytest.raises(SettingsError, match="AGENTWATCH_USAGE_MAX_PENDING"):
            load_settings({**base, "AGENTWATCH_USAGE_MAX_PENDING": bad})
