"""Batched, off-request writes to the usage ledger; nothing lost while the database is away.

Rows wait in memory up to `max_pending`; past that the oldest go to the spill file, which is
written back first, in order, as soon as the database answers again (or at the next start if
the process stops first). Spilled rows, and a batch whose write broke off (it may have
committed before the connection went), are checked against the ledger before they are
written, so no row is written twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import orjson
from sqlalchemy import insert, select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from agentwatch.db.models import Conversation, UsageRecord
from agentwatch.usage.spool import SpillFile

log = logging.getLogger(__name__)
BATCH_SIZE = 500
FLUSH_INTERVAL_SECONDS = 0.2
SHUTDOWN_ATTEMPTS = 5
MAX_PENDING = 50_000  # rows kept in memory before the oldest go to the spill file
MAX_BACKOFF_SECONDS = 10.0
SPILL_RETRY_SECONDS = 1.0


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
    cache_hit: bool = False  # answered from the response cache: cost 0
    saved_nanousd: int | None = None  # a cache hit's cost had it gone upstream

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
    # Request and answer text, only for organisations that log bodies (after DLP redaction).
    messages: list[dict[str, object]] = dataclasses.field(default_factory=list)

    def as_row(self) -> dict[str, object]:
        return dataclasses.asdict(self)


_FIELDS = tuple(field.name for field in dataclasses.fields(UsageEvent))
_CREATED_AT = _FIELDS.index("created_at")
WRITE_CHUNK = 100
_CONVERSATION_MARK = "_conversation"  # marks a conversation row in the spill file


_Row = TypeVar("_Row")
_Event = TypeVar("_Event", UsageEvent, ConversationEvent)


def _take(queue: deque[_Row], limit: int = BATCH_SIZE) -> list[_Row]:
    return [queue.popleft() for _ in range(min(limit, len(queue)))]


@dataclass(slots=True)
class _Batch:
    """Rows taken from memory for one write. If the spiller needs room meanwhile it copies
    them into the spill file ahead of newer rows, so a failed write keeps its place in line."""

    usage: list[UsageEvent]
    conversations: list[ConversationEvent]
    copied: bool = False  # in the spill file too: a failed write need not requeue them
    finished: bool = False
    written: bool = False

    def __len__(self) -> int:
        return len(self.usage) + len(self.conversations)


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
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._sessions = sessions
        self._engine: AsyncEngine = sessions.kw["bind"]
        self._flush_interval = flush_interval
        self._spool = SpillFile(spill_path)
        self._max_pending = max(1, max_pending)
        # Spill in whole batches (one fsync each), not a row at a time.
        self._spill_to = max(0, self._max_pending - BATCH_SIZE)
        self._pending: deque[UsageEvent] = deque()
        self._conversations: deque[ConversationEvent] = deque()
        self._writing: _Batch | None = None
        self._spilling = 0  # rows on their way to the spill file
        self._unsure = False  # the last write broke off: it may have committed all the same
        self._wake = asyncio.Event()
        self._overflow = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._spiller: asyncio.Task[None] | None = None
        self._closing = False
        self._write_lock = asyncio.Lock()
        # Held while rows move to the spill file: they are older than what stays queued.
        self._spill_lock = asyncio.Lock()

    def record(self, event: UsageEvent) -> None:
        self._pending.append(event)
        self._queued(len(self._pending))

    def record_conversation(self, event: ConversationEvent) -> None:
        self._conversations.append(event)
        self._queued(len(self._conversations))

    @property
    def pending(self) -> int:
        """Rows waiting in memory."""
        return len(self._pending) + len(self._conversations)

    @property
    def spilled(self) -> int:
        """Rows waiting in the spill file."""
        return self._spool.rows

    @property
    def backlog(self) -> int:
        """Rows recorded but not yet in the database: in memory, being moved, or spilled."""
        writing = self._writing
        in_flight = len(writing) if writing is not None and not writing.copied else 0
        return self.pending + in_flight + self._spilling + self._spool.rows

    async def start(self) -> None:
        """Adopt a spill file left by an earlier process and try to write it, then run."""
        spilled = await asyncio.to_thread(self._spool.open)
        if spilled:
            log.info("replaying %d usage rows from %s", spilled, self._spool.path)
            try:
                await self.flush()
            except (SQLAlchemyError, OSError) as exc:
                log.warning("replay deferred, %d rows kept for retry: %s", self.backlog, exc)
        self._task = asyncio.create_task(self._run(), name="usage-recorder")
        self._spiller = asyncio.create_task(self._spill_overflow(), name="usage-spiller")

    async def flush(self) -> None:
        """Write everything recorded so far, spilled rows first; raises if the database refuses."""
        async with self._write_lock:
            while await self._write_oldest():
                pass

    async def close(self) -> None:
        self._closing = True
        self._stopping.set()
        self._wake.set()
        self._overflow.set()
        for task in (self._task, self._spiller):
            if task is None:
                continue
            # Let the writer finish the flush it is in (it stops after it): cancelling it
            # mid-INSERT would leave SQLite's write lock with a connection nobody rolls back,
            # and every later write, the shutdown flush included, would find the file locked.
            try:
                await task
            except Exception:
                # The rows it held are back in the queue; the flushes below still try them.
                log.exception("the usage %s stopped with an error", task.get_name())
        for attempt in range(SHUTDOWN_ATTEMPTS):
            try:
                await self.flush()
                return
            except (SQLAlchemyError, OSError) as exc:
                log.warning("usage flush failed at shutdown (attempt %d): %s", attempt + 1, exc)
                await asyncio.sleep(0.2 * 2**attempt)
        await self._spill_down_to(0)
        log.error(
            "database unavailable: %d usage rows wait in %s for the next start",
            self._spool.rows,
            self._spool.path,
        )

    def _queued(self, length: int) -> None:
        if length >= BATCH_SIZE:
            self._wake.set()
        if self.pending > self._max_pending:
            self._overflow.set()

    async def _run(self) -> None:
        backoff = self._flush_interval
        while not self._closing:
            if backoff > self._flush_interval:
                # Failing: a full queue must not turn the back-off into a retry per request.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=backoff)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=backoff)
            self._wake.clear()
            try:
                await self.flush()
                backoff = self._flush_interval
            except (SQLAlchemyError, OSError) as exc:
                backoff = min(backoff * 2, max(MAX_BACKOFF_SECONDS, self._flush_interval))
                log.warning("usage flush failed, %d rows kept for retry: %s", self.backlog, exc)
            except Exception:
                # Whatever it was, the rows are still queued or spilled: retry, never stop.
                backoff = min(backoff * 2, max(MAX_BACKOFF_SECONDS, self._flush_interval))
                log.exception("usage flush failed, %d rows kept for retry", self.backlog)

    async def _write_oldest(self) -> bool:
        """Write the oldest batch, spilled rows before queued ones; False once nothing is left."""
        batch = await self._take_batch()
        if batch is None:
            await self._replay_spilled()
            return True
        if not batch:
            return False
        try:
            await self._write(batch.usage, batch.conversations, check_ledger=self._unsure)
            batch.written = True
        except BaseException:
            self._unsure = True
            if not batch.copied:
                self._requeue(batch)
            raise
        finally:
            batch.finished = True
            self._writing = None
        self._unsure = False
        return True

    async def _take_batch(self) -> _Batch | None:
        """The oldest queued rows, marked as being written; None while older ones are spilled."""
        async with self._spill_lock:
            if self._spool.rows:
                return None
            batch = _Batch(_take(self._pending), _take(self._conversations))
            if batch:
                self._writing = batch
            return batch

    def _requeue(self, batch: _Batch) -> None:
        """Put rows back at the head of the queue (they are older than everything in it)."""
        self._pending.extendleft(reversed(batch.usage))
        self._conversations.extendleft(reversed(batch.conversations))

    async def _replay_spilled(self) -> None:
        lines, end = await asyncio.to_thread(self._spool.read, BATCH_SIZE)
        usage, conversations, unreadable = _decode(lines)
        # Any of these may be in the ledger already: a crash (or a broken connection) can come
        # between the write and the spill file's note of it.
        await self._write(usage, conversations, check_ledger=True)
        if unreadable:
            await asyncio.to_thread(self._spool.reject, unreadable)
        await asyncio.to_thread(self._spool.consumed, end, len(lines))
        if not self._spool.rows:
            log.info("usage spill file %s written back to the database", self._spool.path)

    async def _write(
        self,
        batch: list[UsageEvent],
        conversations: list[ConversationEvent],
        *,
        check_ledger: bool,
    ) -> None:
        async with self._engine.begin() as connection:
            if check_ledger:
                batch = await _not_in_ledger(connection, UsageRecord, batch)
                conversations = await _not_in_ledger(connection, Conversation, conversations)
            statement, stamp = _driver_insert(connection.dialect)
            rows = [event.as_tuple(stamp) for event in batch]
            # Small executemany calls let requests run between them.
            for start in range(0, len(rows), WRITE_CHUNK):
                await connection.exec_driver_sql(statement, rows[start : start + WRITE_CHUNK])
            if conversations:
                await connection.execute(
                    insert(Conversation), [event.as_row() for event in conversations]
                )

    async def _spill_overflow(self) -> None:
        """Keep memory bounded: past `max_pending` queued rows, the oldest go to the spill file."""
        while True:
            await self._overflow.wait()
            self._overflow.clear()
            if self._closing:
                return
            try:
                await self._spill_down_to(self._spill_to)
            except OSError as exc:
                log.error(
                    "cannot spill usage rows to %s, %d kept in memory: %s",
                    self._spool.path,
                    self.pending,
                    exc,
                )
                # The next row recorded past the limit tries again, but not in a tight loop.
                await asyncio.sleep(SPILL_RETRY_SECONDS)

    async def _spill_down_to(self, limit: int) -> None:
        while self.pending > limit:
            if not self._spool.rows:
                log.warning(
                    "usage rows are waiting for the database: the oldest go to %s",
                    self._spool.path,
                )
            async with self._spill_lock:
                await self._spill_batch(min(BATCH_SIZE, self.pending - limit))

    async def _spill_batch(self, count: int) -> None:
        # A batch being written is older than anything queued: it goes first, and the replay
        # drops it again if its write succeeds after all.
        writing = self._writing
        if writing is not None and (writing.copied or writing.finished):
            writing = None
        taken = _Batch(_take(self._pending, count), _take(self._conversations, count))
        lines = _encode(writing) if writing is not None else []
        lines += _encode(taken)
        if writing is not None:
            writing.copied = True
        self._spilling += len(lines)
        try:
            await asyncio.to_thread(self._spool.append, lines)
        except OSError:
            self._requeue(taken)
            if writing is not None:
                writing.copied = False
                if writing.finished and not writing.written:
                    self._requeue(writing)  # its write failed meanwhile, relying on the copy
            raise
        finally:
            self._spilling -= len(lines)


async def _not_in_ledger(
    connection: AsyncConnection,
    table: type[UsageRecord] | type[Conversation],
    events: list[_Event],
) -> list[_Event]:
    """The events not written yet; one already in the ledger has its request id and time."""
    if not events:
        return events
    ids = {event.request_id for event in events}
    found = await connection.execute(
        select(table.request_id, table.created_at).where(table.request_id.in_(ids))
    )
    stored = Counter((request_id, created_at) for request_id, created_at in found)
    fresh: list[_Event] = []
    for event in events:
        key = (event.request_id, event.created_at)
        if stored[key]:
            stored[key] -= 1
        else:
            fresh.append(event)
    if len(fresh) < len(events):
        log.info(
            "%d usage rows were in the ledger already, not written again", len(events) - len(fresh)
        )
    return fresh


def _encode(batch: _Batch) -> list[bytes]:
    lines = [orjson.dumps(event.as_row()) + b"\n" for event in batch.usage]
    for conversation in batch.conversations:
        row = {**conversation.as_row(), _CONVERSATION_MARK: True}
        lines.append(orjson.dumps(row) + b"\n")
    return lines


def _decode(
    lines: list[bytes],
) -> tuple[list[UsageEvent], list[ConversationEvent], list[bytes]]:
    usage: list[UsageEvent] = []
    conversations: list[ConversationEvent] = []
    unreadable: list[bytes] = []
    for line in lines:
        try:
            row = orjson.loads(line)
            row["created_at"] = datetime.fromisoformat(row["created_at"])
            if row.pop(_CONVERSATION_MARK, False):
                conversations.append(ConversationEvent(**row))
            else:
                usage.append(UsageEvent(**row))
        except (ValueError, TypeError, KeyError):
            unreadable.append(line)
    return usage, conversations, unreadable
