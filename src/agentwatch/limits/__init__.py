"""Rate limits, concurrency limits and budget reservations, in-process or shared via Redis."""

from agentwatch.limits.failover import FailoverStore, FailurePolicy
from agentwatch.limits.memory_store import MemoryStore
from agentwatch.limits.redis_store import RedisStore
from agentwatch.limits.types import (
    Admission,
    BudgetCharge,
    LimitStore,
    LoadSpent,
    ParallelCharge,
    RateCharge,
    RateKind,
    RateState,
    Refusal,
    RefusalKind,
)

__all__ = [
    "Admission",
    "BudgetCharge",
    "FailoverStore",
    "FailurePolicy",
    "LimitStore",
    "LoadSpent",
    "MemoryStore",
    "ParallelCharge",
    "RateCharge",
    "RateKind",
    "RateState",
    "RedisStore",
    "Refusal",
    "RefusalKind",
]
