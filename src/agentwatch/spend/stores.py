"""Which limit store a gateway uses: in-process by default; Redis (shared by every replica)
when REDIS_URL is set, behind the failure policy of AGENTWATCH_LIMITS_REDIS_FAILURE."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agentwatch.limits.failover import FailoverStore
from agentwatch.limits.memory_store import MemoryStore
from agentwatch.limits.redis_store import RedisStore
from agentwatch.limits.types import LimitStore
from agentwatch.settings import Settings
from agentwatch.spend.ledger import spent_loader


def build_limit_store(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    registry: CollectorRegistry | None = None,
) -> LimitStore:
    load_spent = spent_loader(sessions)
    local = MemoryStore(load_spent)
    if settings.redis_url is None:
        return local
    # A Redis that does not answer within half a second counts as down, and the failure
    # policy decides, rather than every call waiting on it.
    shared = RedisStore.from_url(settings.redis_url, settings.redis_prefix, load_spent)
    return FailoverStore(shared, local, settings.limits_redis_failure, registry=registry)
