"""Batched, off-request writes to the usage ledger; nothing lost on shutdown or a DB blip."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import orjson
from sqlalchemy import insert
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from agentwatch.db.models import Conversation, UsageRecord

log = logging.getLogger(__name__)
BATCH_SIZE = 500
FLUSH_INTERVAL_SECONDS = 0.2
SHUTDOWN_ATTEMPTS = 5


@dataclass(slots=True)
class UsageEvent:
    request_id: str
    created_at: datetime
    org_id: int
    tenant_id: int | None
    api_key_id: int | None
    model: str
    provider: str | None
    upstream_model: str | None
    endpoint: str
    stream: bool
    status: int
    error_type: str | None
    prompt_tokens: int | None  # None: the upstream reported no usage (unknown, not zero)
    completion_tokens: int | None
    cached_tokens: int
    cost_nanousd: int | None  # None when the usage or the price is unknown
    latency_ms: float
    ttft_ms: float | None
    cache_write_tokens: int = 0  # defaulted, so spill files written before them still load
    attempts: int = 1
    team_id: int | None = None
    reasoning_tokens: int | None = None

    def as_row(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in _FIELDS}

    def as_tuple(self, stamp: Callable[[datetime], object]) -> tuple[object, ...]:
        row = [getattr(self, name) for name in _FIELDS]
        row[_CREATED_AT] = stamp(self.created_at)
        return tuple(row)


@dataclass(slots=True)
class ConversationEvent:
    """A `conversations` row: a call's DLP events and risk (never the matched values)."""

    request_id: str
    created_at: datetime
    org_id: int
    tenant_id: int | None
    api_key_id: int | None
    team_id: int | None
    model: str
    endpoint: str
    status: int
    dlp_action: str | None
    dlp_events: list[dict[str, object]]
    risk_score: float

    def as_row(self) -> dict[str, object]:
        row = dataclasses.asdict(self)
        row["messages"] = []
        return row


_FIELDS = tuple(field.name for field in dataclasses.fields(UsageEvent))
_CREATED_AT = _FIELDS.index("created_at")
WRITE_CHUNK = 100
_CONVERSATION_MARK = "_conversation"  # marks a conversation row in the spill file


_Row = TypeVar("_Row")


def _take(queue: deque[_Row]) -> list[_Row]:
    return [queue.popleft() for _ in range(min(BATCH_SIZE, len(queue)))]


def _driver_insert(dialect: Dialect) -> tuple[str, Callable[[datetime], object]]:
    """A plain driver-level INSERT: SQLAlchemy's per-row bind processing stalled the event
    loop for milliseconds per batch, and the ledger's columns need none of it."""
    columns = ", ".join(_FIELDS)
    if dialect.paramstyle == "numeric_dollar":
        marks = ", ".join(f"${i}" for i in range(1, len(_FIELDS) + 1))
    elif dialect.paramstyle == "qmark":
        marks = ", ".join("?" * len(_FIELDS))
    else:
        marks = ", ".join(["%s"] * len(_FIELDS))
    statement = f"INSERT INTO {UsageRecord.__tablename__} ({columns}) VALUES ({marks})"
    if dialect.name == "sqlite":
        # The text form SQLAlchemy's SQLite DateTime reads back, in UTC.
        return statement, lambda stamp: stamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return statement, lambda stamp: stamp


class UsageRecorder:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        spill_path: Path,
        flush_interval: float = FLUSH_INTERVAL_SECONDS,
    ) -> None:
        self._sessions = sessions
        self._engine: AsyncEngine = sessions.kw["bind"]
        self._flush_interval = flush_interval
        self._spill_path = spill_path
        self._pending: deque[UsageEvent] = deque()
        self._conversations: deque[ConversationEvent] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._write_lock = asyncio.Lock()

    def record(self, event: UsageEvent) -> None:
        self._pending.append(event)
        if len(self._pending) >= BATCH_SIZE:
            self._wake.set()

    def record_conversation(self, event: ConversationEvent) -> None:
        self._conversations.append(event)
        if len(self._conversations) >= BATCH_SIZE:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending) + len(self._conversations)

    async def start(self) -> None:
        await self._replay_spill()
        self._task = asyncio.create_task(self._run(), name="usage-recorder")

    async def flush(self) -> None:
        """Write everything recorded so far; raises if the database refuses."""
        async with self._write_lock:
            while self._pending or self._conversations:
                batch = _take(self._pending)
                conversations = _take(self._conversations)
                try:
                    await self._write(batch, conversations)
                except BaseException:
                    self._pending.extendleft(reversed(batch))
                    self._conversations.extendleft(reversed(conversations))
                    raise

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            # Let the writer finish the flush it is in (it stops after it): cancelling it
            # mid-INSERT would leave SQLite's write lock with a connection nobody rolls back,
            # and every later write, the shutdown flush included, would find the file locked.
            try:
                await self._task
            except Exception:
                # The rows it held are back in the queue; the flushes below still try them.
                log.exception("the usage writer stopped with an error")
        for attempt in range(SHUTDOWN_ATTEMPTS):
            try:
                await self.flush()
                return
            except (SQLAlchemyError, OSError) as exc:
                log.warning("usage flush failed at shutdown (attempt %d): %s", attempt + 1, exc)
                await asyncio.sleep(0.2 * 2**attempt)
        self._spill()

    async def _run(self) -> None:
        backoff = self._flush_interval
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=backoff)
            self._wake.clear()
            try:
                await self.flush()
                backoff = self._flush_interval
            except (SQLAlchemyError, OSError) as exc:
                backoff = min(backoff * 2, max(10.0, self._flush_interval))
                log.warning("usage flush failed, %d rows kept for retry: %s", self.pending, exc)

    async def _write(self, batch: list[UsageEvent], conversations: list[ConversationEvent]) -> None:
        async with self._engine.begin() as connection:
            statement, stamp = _driver_insert(connection.dialect)
            rows = [event.as_tuple(stamp) for event in batch]
            # Small executemany calls let requests run between them.
            for start in range(0, len(rows), WRITE_CHUNK):
                await connection.exec_driver_sql(statement, rows[start : start + WRITE_CHUNK])
            if conversations:
                await connection.execute(
                    insert(Conversation), [event.as_row() for event in conversations]
                )

    def _spill(self) -> None:
        if not self._pending and not self._conversations:
            return
        self._spill_path.parent.mkdir(parents=True, exist_ok=True)
        with self._spill_path.open("ab") as handle:
            for event in self._pending:
                handle.write(orjson.dumps(event.as_row()) + b"\n")
            for conversation in self._conversations:
                row = {**conversation.as_row(), _CONVERSATION_MARK: True}
                handle.write(orjson.dumps(row) + b"\n")
        log.error("database unavailable: kept %d rows in %s", self.pending, self._spill_path)
        self._pending.clear()
        self._conversations.clear()

    async def _replay_spill(self) -> None:
        if not self._spill_path.exists():
            return
        rows = [orjson.loads(line) for line in self._spill_path.read_bytes().splitlines() if line]
        for row in rows:
            row["created_at"] = datetime.fromisoformat(row["created_at"])
            if row.pop(_CONVERSATION_MARK, False):
                row.pop("messages", None)
                self._conversations.append(ConversationEvent(**row))
            else:
                self._pending.append(UsageEvent(**row))
        # The rows now live in the queue: whatever is not written goes back to the spill file
        # at shutdown, so deleting the file first can neither lose nor duplicate a row.
        self._spill_path.unlink()
        log.info("replaying %d usage rows from %s", len(rows), self._spill_path)
        try:
            await self.flush()
        except (SQLAlchemyError, OSError) as exc:
            log.warning("replay deferred, %d rows kept for retry: %s", self.pending, exc)
