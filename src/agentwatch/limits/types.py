"""The vocabulary of the limits engine: what a request is charged, what it was granted, why it
was refused, and the store interface every backend (memory, Redis, failover) implements."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

RateKind = Literal["requests", "tokens"]
RefusalKind = Literal["rate", "parallel", "budget", "unavailable"]

# Sums the ledger (usage_records) for a budget key's entity and period, in nano-USD.
LoadSpent = Callable[[str], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class RateCharge:
    """`amount` taken from a sliding 60-second window at `key` that holds at most `limit`."""

    key: str  # e.g. "rpm:tenant:7", "tpm:key:12:model:gpt-4o"
    limit: int  # per 60 s
    amount: int  # 1 for requests; the token estimate for tokens
    kind: RateKind


@dataclass(frozen=True, slots=True)
class ParallelCharge:
    """One of at most `limit` concurrent requests at `key`."""

    key: str
    limit: int


@dataclass(frozen=True, slots=True)
class BudgetCharge:
    """Money held at `key` for one budget period, until the call settles to its real cost."""

    key: str  # includes the period start, e.g. "budget:team:3:2026-11-01"
    limit_nanousd: int
    reserve_nanousd: int  # the estimate to hold
    period_end: float  # unix time the period ends; the counters live a day longer


@dataclass(frozen=True, slots=True)
class RateState:
    """A rate window right after the decision, for x-ratelimit-* headers."""

    key: str
    kind: RateKind
    limit: int
    remaining: int
    reset_seconds: float  # until the window is empty again if nothing more is admitted


@dataclass(frozen=True, slots=True)
class Admission:
    """Everything one request took; hand it back to `LimitStore.settle` exactly once."""

    request_id: str
    rates: tuple[RateCharge, ...]
    parallel: tuple[ParallelCharge, ...]
    budgets: tuple[BudgetCharge, ...]
    tick: int  # the 10 ms tick of the rate windows the charges were added to
    states: tuple[RateState, ...]  # one per rate charge, in order
    backend: str  # which store holds the charges ("memory" or "redis")

    @property
    def requests(self) -> RateState | None:
        """The tightest requests window (fewest remaining), or None without one."""
        return _tightest(self.states, "requests")

    @property
    def tokens(self) -> RateState | None:
        """The tightest tokens window (fewest remaining), or None without one."""
        return _tightest(self.states, "tokens")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request was not admitted; nothing was taken."""

    kind: RefusalKind
    key: str  # the charge that refused ("" for "unavailable")
    retry_after: float  # seconds: rate/parallel until capacity frees, budget to the period end
    limit: int  # requests or tokens per minute, slots, or nano-USD
    used: int  # the window's count, requests in flight, or spent + reserved nano-USD
    requested: int  # what this request asked for: 1, its token estimate, 1 slot, its reserve
    rate_kind: RateKind | None = None
    states: tuple[RateState, ...] = ()  # the rate windows as they stand (nothing taken)

    @property
    def requests(self) -> RateState | None:
        return _tightest(self.states, "requests")

    @property
    def tokens(self) -> RateState | None:
        return _tightest(self.states, "tokens")


def _tightest(states: Sequence[RateState], kind: RateKind) -> RateState | None:
    matching = [state for state in states if state.kind == kind]
    return min(matching, key=lambda state: state.remaining) if matching else None


class LimitStore(Protocol):
    async def admit(
        self,
        request_id: str,
        rates: Sequence[RateCharge],
        parallel: Sequence[ParallelCharge],
        budgets: Sequence[BudgetCharge],
    ) -> Admission | Refusal:
        """Take every charge or none (atomically). `request_id` must be unique per admit."""
        ...

    async def settle(
        self, admission: Admission, *, tokens: int | None, cost_nanousd: int | None
    ) -> None:
        """Release the parallel slots and budget holds; move tokens windows by actual minus
        estimate and add the actual cost to spent. None (unknown) keeps the estimate."""
        ...

    async def spent(self, budget_key: str) -> int | None:
        """The live spent counter of a budget key in nano-USD (None: not loaded)."""
        ...

    async def close(self) -> None: ...
