"""Limits held in this process: the default without Redis, and the fallback when it is down.

Atomic because a decision never awaits: once the budget keys are loaded, checking every
charge and taking them all happens in one uninterrupted step of the event loop.
"""

from __future__ import annotations

import functools
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from agentwatch.limits.single_flight import SingleFlight
from agentwatch.limits.types import (
    Admission,
    BudgetCharge,
    LoadSpent,
    ParallelCharge,
    RateCharge,
    Refusal,
)
from agentwatch.limits.verdict import Facts, WindowFacts, validate, verdict
from agentwatch.limits.window import SlidingWindow, tick_of

DEFAULT_HOLD_SECONDS = 600.0
# Budget counters outlive their period by a day, for late settles and reconciliation.
BUDGET_GRACE_SECONDS = 86_400.0
SWEEP_SECONDS = 60.0


@dataclass(slots=True)
class _Budget:
    spent: int
    expires_at: float
    reserved: int = 0
    # request id -> (nano-USD, hold deadline), oldest first (see _first)
    holds: OrderedDict[str, tuple[int, float]] = field(default_factory=OrderedDict)


class MemoryStore:
    backend = "memory"

    def __init__(
        self,
        load_spent: LoadSpent,
        *,
        hold_seconds: float = DEFAULT_HOLD_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._load_spent = load_spent
        self._hold_seconds = hold_seconds
        self._clock = clock
        self._windows: dict[str, SlidingWindow] = {}
        # key -> request id -> hold deadline, oldest first (see _first)
        self._slots: dict[str, OrderedDict[str, float]] = {}
        self._budgets: dict[str, _Budget] = {}
        self._loads = SingleFlight()
        self._next_sweep = 0.0

    async def admit(
        self,
        request_id: str,
        rates: Sequence[RateCharge],
        parallel: Sequence[ParallelCharge],
        budgets: Sequence[BudgetCharge],
    ) -> Admission | Refusal:
        validate(rates, parallel, budgets)
        while True:
            now = self._clock()
            missing = [charge for charge in budgets if self._budget(charge.key, now) is None]
            if not missing:
                break
            for charge in missing:
                await self._loads.run(charge.key, functools.partial(self._load, charge))
        # From here to the return nothing awaits: the check and the take are one step.
        self._sweep(now)
        facts = self._observe(rates, parallel, budgets, now)
        if facts.taken:
            self._take(request_id, rates, parallel, budgets, now)
        return verdict(request_id, rates, parallel, budgets, facts, self.backend)

    async def settle(
        self, admission: Admission, *, tokens: int | None, cost_nanousd: int | None
    ) -> None:
        if tokens is not None:
            for rate in admission.rates:
                log = self._windows.get(rate.key)
                if rate.kind == "tokens" and log is not None:
                    log.correct(admission.tick, tokens - rate.amount)
        for slot in admission.parallel:
            slots = self._slots.get(slot.key)
            if slots is not None:
                slots.pop(admission.request_id, None)
        for charge in admission.budgets:
            budget = self._budget(charge.key, self._clock())
            if budget is None:
                # Never recreate a counter from zero: the next admit loads it from the ledger,
                # which will include this call's usage record.
                continue
            hold = budget.holds.pop(admission.request_id, None)
            if hold is not None:
                budget.reserved -= hold[0]
            # Unknown cost: count the estimate as spent (it may over-count, never under).
            budget.spent += charge.reserve_nanousd if cost_nanousd is None else cost_nanousd

    async def spent(self, budget_key: str) -> int | None:
        budget = self._budget(budget_key, self._clock())
        return None if budget is None else budget.spent

    def forget_budgets(self) -> None:
        """Drop every budget counter, so the next admit reloads it from the ledger (used when
        this store stops standing in for Redis and its counters go stale)."""
        self._budgets.clear()

    async def close(self) -> None:
        self._windows.clear()
        self._slots.clear()
        self._budgets.clear()

    async def _load(self, charge: BudgetCharge) -> None:
        spent = await self._load_spent(charge.key)
        if self._budget(charge.key, self._clock()) is None:
            self._budgets[charge.key] = _Budget(spent, charge.period_end + BUDGET_GRACE_SECONDS)

    def _budget(self, key: str, now: float) -> _Budget | None:
        budget = self._budgets.get(key)
        if budget is not None and budget.expires_at <= now:
            del self._budgets[key]
            return None
        return budget

    def _observe(
        self,
        rates: Sequence[RateCharge],
        parallel: Sequence[ParallelCharge],
        budgets: Sequence[BudgetCharge],
        now: float,
    ) -> Facts:
        windows: list[WindowFacts] = []
        for rate in rates:
            log = self._window(rate.key, now)
            fits = log.total + rate.amount <= rate.limit
            retry = 0.0 if fits else log.seconds_until_fits(now, rate.amount, rate.limit)
            windows.append(WindowFacts(log.total, fits, retry, log.seconds_until_empty(now)))
        in_flight = tuple(len(self._live_slots(slot.key, now)) for slot in parallel)
        budget_used = tuple(self._live_budget(charge.key, now) for charge in budgets)
        taken = (
            all(seen.fits for seen in windows)
            and all(n < slot.limit for n, slot in zip(in_flight, parallel, strict=True))
            and all(
                used + charge.reserve_nanousd <= charge.limit_nanousd
                for used, charge in zip(budget_used, budgets, strict=True)
            )
        )
        return Facts(now, tick_of(now), taken, tuple(windows), in_flight, budget_used)

    def _take(
        self,
        request_id: str,
        rates: Sequence[RateCharge],
        parallel: Sequence[ParallelCharge],
        budgets: Sequence[BudgetCharge],
        now: float,
    ) -> None:
        tick = tick_of(now)
        deadline = now + self._hold_seconds
        for rate in rates:
            self._windows.setdefault(rate.key, SlidingWindow()).add(tick, rate.amount)
        for slot in parallel:
            self._slots.setdefault(slot.key, OrderedDict())[request_id] = deadline
        for charge in budgets:
            budget = self._budgets[charge.key]
            budget.reserved += charge.reserve_nanousd
            budget.holds[request_id] = (charge.reserve_nanousd, deadline)

    def _window(self, key: str, now: float) -> SlidingWindow:
        log = self._windows.get(key)
        if log is None:
            return SlidingWindow()  # not stored until something is added
        log.prune(now)
        return log

    def _live_slots(self, key: str, now: float) -> OrderedDict[str, float]:
        slots = self._slots.get(key)
        if slots is None:
            return OrderedDict()
        while slots and _first(slots)[1] <= now:
            slots.popitem(last=False)  # a crashed or lost request: its slot frees itself
        return slots

    def _live_budget(self, key: str, now: float) -> int:
        budget = self._budgets[key]
        while budget.holds and _first(budget.holds)[1][1] <= now:
            budget.reserved -= budget.holds.popitem(last=False)[1][0]
        return budget.spent + budget.reserved

    def _sweep(self, now: float) -> None:
        """Now and then drop keys with nothing live, so idle keys do not pile up."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_SECONDS
        for key in list(self._windows):
            if not self._window(key, now):
                del self._windows[key]
        for key in list(self._slots):
            if not self._live_slots(key, now):
                del self._slots[key]
        for key in list(self._budgets):
            self._budget(key, now)


K = TypeVar("K")
V = TypeVar("V")


def _first(ordered: OrderedDict[K, V]) -> tuple[K, V]:
    """The oldest entry. Holds are added with deadlines that only grow (now + a fixed hold),
    so expiring from the front is enough; a clock stepping back only delays an expiry."""
    return next(iter(ordered.items()))
