"""Spend from the ledger, and the reconciliation of live budget counters against it: the
ledger is the truth, a counter that disagrees has drifted (a lost settle, a crashed replica)."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from agentwatch.db.models import UsageRecord

log = logging.getLogger(__name__)
Scope = Literal["org", "team", "tenant", "key"]
_COLUMNS = {
    "org": UsageRecord.org_id,
    "team": UsageRecord.team_id,
    "tenant": UsageRecord.tenant_id,
    "key": UsageRecord.api_key_id,
}
LiveCounter = Callable[[str], "int | Awaitable[int | None] | None"]


async def ledger_spent(
    session: AsyncSession,
    scope: Scope,
    scope_id: int,
    period_start: datetime,
    period_end: datetime,
) -> int:
    """Nano-dollars the ledger holds for the organisation, team, tenant or key in
    [period_start, period_end). Calls of unknown cost (NULL) add nothing: they are counted
    apart (`unknown_cost_requests` in the summary), not guessed."""
    total = await session.scalar(
        select(func.coalesce(func.sum(UsageRecord.cost_nanousd), 0)).where(
            _COLUMNS[scope] == scope_id,
            UsageRecord.created_at >= period_start,
            UsageRecord.created_at < period_end,
        )
    )
    return int(total or 0)


@dataclass(frozen=True, slots=True)
class LedgerScope:
    """One live counter and the ledger slice it should equal."""

    key: str  # the counter's name in the live store
    scope: Scope
    scope_id: int
    period_start: datetime
    period_end: datetime


@dataclass(frozen=True, slots=True)
class Drift:
    key: str
    live_nanousd: int | None  # None: the store has no counter (never seeded, or expired)
    ledger_nanousd: int

    @property
    def nanousd(self) -> int:
        """Live minus ledger: above 0 the counter over-counts (blocks too early), below 0 it
        under-counts (lets spend through)."""
        return 0 if self.live_nanousd is None else self.live_nanousd - self.ledger_nanousd


async def reconcile(
    session: AsyncSession,
    scopes: Iterable[LedgerScope],
    live: LiveCounter,
    *,
    tolerance_nanousd: int = 0,
) -> list[Drift]:
    """Each counter beside its ledger total, every one reported; a drift beyond the tolerance
    is logged as a warning. Calls still in flight (reserved, not yet settled) and rows not yet
    flushed by the recorder show as drift too: reconcile on a quiet period, or allow for them."""
    report: list[Drift] = []
    for item in scopes:
        counted = live(item.key)
        value = await counted if inspect.isawaitable(counted) else counted
        spent = await ledger_spent(
            session, item.scope, item.scope_id, item.period_start, item.period_end
        )
        drift = Drift(item.key, value, spent)
        if abs(drift.nanousd) > tolerance_nanousd:
            log.warning(
                "budget counter %s drifted from the ledger: live %d, ledger %d nano-USD (%+d)",
                item.key,
                value,
                spent,
                drift.nanousd,
            )
        report.append(drift)
    return report
