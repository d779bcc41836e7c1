"""The reconciliation job: every few minutes, each budget's live counter (memory or Redis)
beside the ledger's total for its current period; drift is logged by `reconcile`."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from sqlalchemy.exc import SQLAlchemyError

from agentwatch.spend.book import budget_key
from agentwatch.spend.periods import period_bounds
from agentwatch.state import AppState
from agentwatch.usage.reconcile import Drift, LedgerScope, reconcile

log = logging.getLogger(__name__)
RECONCILE_SECONDS = 300.0
# Calls settled but not yet flushed to the ledger (a fraction of a second of traffic) show as
# drift; below this much it is not worth a warning.
TOLERANCE_NANOUSD = 10_000_000  # one cent


async def reconcile_budgets(state: AppState, now: datetime | None = None) -> list[Drift]:
    now = now or datetime.now(UTC)
    scopes = []
    for scope, entity, budget in state.controls.budgets():
        start, end = period_bounds(budget.period, budget.timezone, now)
        scopes.append(LedgerScope(budget_key(scope, entity, start, end), scope, entity, start, end))
    if not scopes:
        return []
    async with state.sessions() as session:
        return await reconcile(
            session, scopes, state.spend.store.spent, tolerance_nanousd=TOLERANCE_NANOUSD
        )


async def reconcile_forever(state: AppState, interval: float = RECONCILE_SECONDS) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await reconcile_budgets(state)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("budget reconciliation skipped: %s", exc)
