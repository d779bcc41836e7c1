"""Turn what a store observed about each charge into an Admission or a Refusal.

Both stores check and take atomically on their own (asyncio or a Lua script), then report the
facts here, so the choice of which refusal to report and the header values are computed the
same way whatever the backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agentwatch.limits.types import (
    Admission,
    BudgetCharge,
    ParallelCharge,
    RateCharge,
    RateState,
    Refusal,
)
from agentwatch.limits.window import leaves_at

# Concurrency frees up when some request ends, which nothing predicts: ask for a short wait.
PARALLEL_RETRY_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class WindowFacts:
    used: int  # the window's total before this request
    fits: bool
    retry_after: float  # 0 when it fits
    reset_seconds: float  # until the window empties, before this request


@dataclass(frozen=True, slots=True)
class Facts:
    now: float
    tick: int
    taken: bool  # every charge fitted and was taken
    windows: tuple[WindowFacts, ...]  # per rate charge
    in_flight: tuple[int, ...]  # per parallel charge, live holds before this request
    budget_used: tuple[int, ...]  # per budget charge, spent + reserved before this request


def validate(
    rates: Sequence[RateCharge], parallel: Sequence[ParallelCharge], budgets: Sequence[BudgetCharge]
) -> None:
    """Negative amounts would turn a charge into a credit, and a key charged twice in one
    call would be checked twice but held once; refuse both loudly."""
    for kind, keys in (
        ("rate", [rate.key for rate in rates]),
        ("parallel", [slot.key for slot in parallel]),
        ("budget", [budget.key for budget in budgets]),
    ):
        if len(set(keys)) != len(keys):
            raise ValueError(f"a {kind} key is charged twice in one call: {sorted(keys)}")
    for rate in rates:
        if rate.amount < 0 or rate.limit < 0:
            raise ValueError(f"rate charge {rate.key!r}: amount and limit must be >= 0")
    for slot in parallel:
        if slot.limit < 0:
            raise ValueError(f"parallel charge {slot.key!r}: limit must be >= 0")
    for budget in budgets:
        if budget.reserve_nanousd < 0 or budget.limit_nanousd < 0:
            raise ValueError(f"budget charge {budget.key!r}: limit and reserve must be >= 0")


def verdict(
    request_id: str,
    rates: Sequence[RateCharge],
    parallel: Sequence[ParallelCharge],
    budgets: Sequence[BudgetCharge],
    facts: Facts,
    backend: str,
) -> Admission | Refusal:
    if facts.taken:
        return Admission(
            request_id=request_id,
            rates=tuple(rates),
            parallel=tuple(parallel),
            budgets=tuple(budgets),
            tick=facts.tick,
            states=tuple(
                _state_after(rate, seen, facts)
                for rate, seen in zip(rates, facts.windows, strict=True)
            ),
            backend=backend,
        )
    return _refusal(rates, parallel, budgets, facts)


def _state_after(rate: RateCharge, seen: WindowFacts, facts: Facts) -> RateState:
    reset = seen.reset_seconds
    if rate.amount > 0:
        reset = max(reset, leaves_at(facts.tick) - facts.now)
    return RateState(
        key=rate.key,
        kind=rate.kind,
        limit=rate.limit,
        remaining=max(0, rate.limit - seen.used - rate.amount),
        reset_seconds=reset,
    )


def _refusal(
    rates: Sequence[RateCharge],
    parallel: Sequence[ParallelCharge],
    budgets: Sequence[BudgetCharge],
    facts: Facts,
) -> Refusal:
    states = tuple(
        RateState(
            key=rate.key,
            kind=rate.kind,
            limit=rate.limit,
            remaining=max(0, rate.limit - seen.used),
            reset_seconds=seen.reset_seconds,
        )
        for rate, seen in zip(rates, facts.windows, strict=True)
    )
    # The refusal reported is the one with the longest wait: retrying sooner would only meet
    # it. Ties go to budgets (the actionable message), then rates, then concurrency.
    candidates: list[tuple[float, int, Refusal]] = []
    for budget, used in zip(budgets, facts.budget_used, strict=True):
        if used + budget.reserve_nanousd > budget.limit_nanousd:
            wait = max(0.0, budget.period_end - facts.now)
            refusal = Refusal(
                kind="budget",
                key=budget.key,
                retry_after=wait,
                limit=budget.limit_nanousd,
                used=used,
                requested=budget.reserve_nanousd,
                states=states,
            )
            candidates.append((wait, 2, refusal))
    for rate, seen in zip(rates, facts.windows, strict=True):
        if not seen.fits:
            refusal = Refusal(
                kind="rate",
                key=rate.key,
                retry_after=seen.retry_after,
                limit=rate.limit,
                used=seen.used,
                requested=rate.amount,
                rate_kind=rate.kind,
                states=states,
            )
            candidates.append((seen.retry_after, 1, refusal))
    for slot, in_flight in zip(parallel, facts.in_flight, strict=True):
        if in_flight >= slot.limit:
            refusal = Refusal(
                kind="parallel",
                key=slot.key,
                retry_after=PARALLEL_RETRY_SECONDS,
                limit=slot.limit,
                used=in_flight,
                requested=1,
                states=states,
            )
            candidates.append((PARALLEL_RETRY_SECONDS, 0, refusal))
    if not candidates:
        raise RuntimeError("the store refused a request but reported no charge over its limit")
    return max(candidates, key=lambda found: (found[0], found[1]))[2]
