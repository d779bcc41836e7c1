"""The audit log: append-only rows, hash-chained per organisation, and their verification.

Each row's hash covers its contents and the previous row's hash; `audit_heads` keeps the
newest (seq, hash) of every chain. Appending locks the head row, so concurrent writers queue
instead of forking the chain, and verification compares the head, so a deleted newest row is
caught as surely as an edited or deleted middle one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from agentwatch.db.models import AuditHead, AuditLog, utcnow

GENESIS = "0" * 64
NO_ORG = 0  # the chain of events that belong to no organisation
_VERIFY_BATCH = 1000


@dataclass(frozen=True, slots=True)
class AuditEvent:
    org_id: int
    actor: str
    action: str
    target: str | None = None
    details: Mapping[str, Any] | None = None
    actor_id: int | None = None
    ip: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True, slots=True)
class ChainBreak:
    org_id: int
    row_id: int | None
    seq: int
    reason: str

    def describe(self) -> str:
        where = f"row {self.row_id} (seq {self.seq})" if self.row_id else f"seq {self.seq}"
        return f"audit chain of organisation {self.org_id} breaks at {where}: {self.reason}"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    rows: int
    chains: int
    first_break: ChainBreak | None


def row_hash(row: AuditLog) -> str:
    payload = [
        row.org_id,
        row.seq,
        row.actor,
        row.actor_id,
        row.action,
        row.target,
        row.details,
        row.ip,
        row.user_agent,
        _timestamp(row.created_at),
        row.prev_hash,
    ]
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


async def append_audit(session: AsyncSession, event: AuditEvent) -> AuditLog:
    """Add `event` to its organisation's chain inside the caller's transaction."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    await session.execute(
        insert(AuditHead)
        .values(org_id=event.org_id, seq=0, hash=GENESIS)
        .on_conflict_do_nothing(index_elements=["org_id"])
    )
    # The UPDATE takes the head's row lock (PostgreSQL) or the write lock (SQLite) first, so
    # the (seq, hash) read next is the newest and stays so until this transaction ends.
    await session.execute(
        update(AuditHead).where(AuditHead.org_id == event.org_id).values(seq=AuditHead.seq + 1)
    )
    seq, prev_hash = (
        await session.execute(
            select(AuditHead.seq, AuditHead.hash).where(AuditHead.org_id == event.org_id)
        )
    ).one()
    row = AuditLog(
        org_id=event.org_id,
        seq=seq,
        actor=event.actor[:320],
        actor_id=event.actor_id,
        action=event.action,
        target=event.target[:400] if event.target is not None else None,
        details=_json_safe(dict(event.details or {})),
        ip=event.ip[:64] if event.ip else None,
        user_agent=event.user_agent[:400] if event.user_agent else None,
        prev_hash=prev_hash,
        created_at=utcnow(),
    )
    row.hash = row_hash(row)
    session.add(row)
    await session.flush()
    await session.execute(
        update(AuditHead).where(AuditHead.org_id == event.org_id).values(hash=row.hash)
    )
    return row


async def verify_audit_chains(session: AsyncSession) -> VerifyReport:
    heads = {h.org_id: h for h in (await session.scalars(select(AuditHead))).all()}
    row_orgs = set(await session.scalars(select(AuditLog.org_id).distinct()))
    rows = 0
    for org_id in sorted(row_orgs | set(heads)):
        checked, broken = await _verify_chain(session, org_id, heads.get(org_id))
        rows += checked
        if broken is not None:
            return VerifyReport(rows, len(heads), broken)
    return VerifyReport(rows, len(heads), None)


async def _verify_chain(
    session: AsyncSession, org_id: int, head: AuditHead | None
) -> tuple[int, ChainBreak | None]:
    expected_seq, expected_prev, checked, last_id = 1, GENESIS, 0, 0
    while True:
        batch = (
            await session.scalars(
                select(AuditLog)
                .where(AuditLog.org_id == org_id, AuditLog.seq >= expected_seq)
                .order_by(AuditLog.seq)
                .limit(_VERIFY_BATCH)
            )
        ).all()
        for row in batch:
            if row.seq != expected_seq:
                return checked, ChainBreak(
                    org_id, row.id, row.seq, f"rows {expected_seq}..{row.seq - 1} are missing"
                )
            if row.prev_hash != expected_prev:
                return checked, ChainBreak(
                    org_id, row.id, row.seq, "its previous-hash does not match the row before"
                )
            if row_hash(row) != row.hash:
                return checked, ChainBreak(
                    org_id, row.id, row.seq, "its contents do not match its hash (edited)"
                )
            expected_seq, expected_prev, last_id = row.seq + 1, row.hash, row.id
            checked += 1
        if len(batch) < _VERIFY_BATCH:
            break
    if head is None:
        return checked, ChainBreak(org_id, last_id or None, expected_seq - 1, "chain head missing")
    if head.seq != expected_seq - 1 or head.hash != expected_prev:
        return checked, ChainBreak(
            org_id,
            None,
            expected_seq,
            f"the chain head records {head.seq} rows; rows after {expected_seq - 1} are missing",
        )
    return checked, None


def _timestamp(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f")


def _json_safe(details: dict[str, Any]) -> dict[str, Any]:
    """What the JSON column will give back, so the hash computed now matches the one read later."""
    loaded: dict[str, Any] = orjson.loads(
        orjson.dumps(details, option=orjson.OPT_NON_STR_KEYS, default=str)
    )
    return loaded
