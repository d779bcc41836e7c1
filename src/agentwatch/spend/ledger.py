"""What seeds a budget counter the first time a process (or Redis) sees it: the ledger's
spend for the key's entity and period, so restarts and new replicas start from the truth."""

from __future__ import annotations

import logging

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agentwatch.errors import LimitsUnavailable
from agentwatch.limits.types import LoadSpent
from agentwatch.spend.book import parse_budget_key
from agentwatch.usage.reconcile import ledger_spent

log = logging.getLogger(__name__)


def spent_loader(sessions: async_sessionmaker[AsyncSession]) -> LoadSpent:
    async def load(key: str) -> int:
        parsed = parse_budget_key(key)
        if parsed is None:
            return 0
        try:
            async with sessions() as session:
                return await ledger_spent(session, *parsed)
        except (SQLAlchemyError, OSError) as exc:
            # Without the ledger the period's spend is unknown: refuse (503) rather than
            # guess low and let the budget be overrun. Counters already loaded keep working.
            log.warning("cannot seed budget %s from the ledger: %s", key, exc)
            raise LimitsUnavailable(
                "the budget for this call cannot be checked while the database is unreachable; "
                "try again shortly",
                headers={"retry-after": "1"},
            ) from exc

    return load
