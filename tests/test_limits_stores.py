"""The limits engine on both stores: in-process, and real Redis under a per-run key prefix.

Every test runs once per store. Clocks are injected (Redis takes the injected time instead of
its TIME), so expiry and windows are shown without sleeping.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from redis.asyncio import Redis

from agentwatch.limits import (
    Admission,
    BudgetCharge,
    LimitStore,
    MemoryStore,
    ParallelCharge,
    RateCharge,
    RedisStore,
    Refusal,
)

REDIS_URL = "redis://127.0.0.1:6379/0"
STORES = ["memory", "redis"]
DAY = 86_400.0


class FakeClock:
    """Starts near the real time (Redis key TTLs are computed from it) and moves only when told."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Ledger:
    """Stands in for the usage_records sum the gateway loads a budget counter from."""

    totals: dict[str, int] = field(default_factory=dict)
    loads: list[str] = field(default_factory=list)
    delay: float = 0.0

    async def __call__(self, key: str) -> int:
        self.loads.append(key)
        if self.delay:
            await asyncio.sleep(self.delay)  # lets concurrent first uses pile up on one load
        return self.totals.get(key, 0)


@dataclass
class Harness:
    kind: str
    prefix: str
    clock: FakeClock
    ledger: Ledger
    stores: list[LimitStore] = field(default_factory=list)

    def store(self, *, hold_seconds: float = 600.0) -> LimitStore:
        """A store; for Redis each call is another replica sharing the same keys."""
        new: LimitStore
        if self.kind == "memory":
            new = MemoryStore(self.ledger, hold_seconds=hold_seconds, clock=self.clock)
        else:
            new = RedisStore.from_url(
                REDIS_URL, self.prefix, self.ledger, hold_seconds=hold_seconds, clock=self.clock
            )
        self.stores.append(new)
        return new

    async def drop_budget(self, store: LimitStore, key: str) -> None:
        """Lose a budget counter (Redis flushed, or a fresh process)."""
        if isinstance(store, MemoryStore):
            store.forget_budgets()
            return
        redis = Redis.from_url(REDIS_URL)
        try:
            state = f"{self.prefix}limits:budget:{key}"
            await redis.delete(state, f"{state}:holds", f"{state}:deadlines")
        finally:
            await redis.aclose()


@asynccontextmanager
async def harness_for(kind: str) -> AsyncIterator[Harness]:
    """Stores of one kind on a fake clock; Redis keys under a fresh prefix, deleted after."""
    setup = Harness(
        kind=kind,
        prefix=f"agentwatch-test-{secrets.token_hex(4)}:",
        clock=FakeClock(),
        ledger=Ledger(),
    )
    try:
        yield setup
    finally:
        for store in setup.stores:
            await store.close()
        if setup.kind == "redis":
            redis = Redis.from_url(REDIS_URL)
            try:
                names = [name async for name in redis.scan_iter(match=f"{setup.prefix}*")]
                if names:
                    await redis.delete(*names)
            finally:
                await redis.aclose()


@pytest.fixture(params=STORES)
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    async with harness_for(request.param) as setup:
        yield setup


def rpm(key: str, limit: int) -> RateCharge:
    return RateCharge(key=key, limit=limit, amount=1, kind="requests")


def tpm(key: str, limit: int, estimate: int) -> RateCharge:
    return RateCharge(key=key, limit=limit, amount=estimate, kind="tokens")


def budget(clock: FakeClock, key: str, limit: int, reserve: int) -> BudgetCharge:
    return BudgetCharge(
        key=key, limit_nanousd=limit, reserve_nanousd=reserve, period_end=clock.now + 30 * DAY
    )


def admitted(decision: Admission | Refusal) -> Admission:
    assert isinstance(decision, Admission), decision
    return decision


def refused(decision: Admission | Refusal) -> Refusal:
    assert isinstance(decision, Refusal), decision
    return decision


Admit = Callable[..., Awaitable[Admission | Refusal]]


def admitter(store: LimitStore) -> Admit:
    async def admit(
        *,
        rates: tuple[RateCharge, ...] = (),
        parallel: tuple[ParallelCharge, ...] = (),
        budgets: tuple[BudgetCharge, ...] = (),
    ) -> Admission | Refusal:
        return await store.admit(secrets.token_hex(8), rates, parallel, budgets)

    return admit


async def test_a_refused_budget_takes_nothing_from_the_rate_windows(harness: Harness) -> None:
    store = harness.store()
    admit = admitter(store)
    harness.ledger.totals["budget:t:1"] = 1_000  # already spent in full
    spent_out = budget(harness.clock, "budget:t:1", 1_000, 10)
    windows = (rpm("rpm:t:1", 3), tpm("tpm:t:1", 100, 40))
    refusal = refused(await admit(rates=windows, budgets=(spent_out,)))
    assert (refusal.kind, refusal.key, refusal.used, refusal.limit) == (
        "budget",
        "budget:t:1",
        1_000,
        1_000,
    )
    assert refusal.retry_after == pytest.approx(30 * DAY)
    # The windows are as they were: three requests and 100 tokens still fit, not two and 60.
    for _ in range(2):
        admitted(await admit(rates=windows))
    last = admitted(await admit(rates=(rpm("rpm:t:1", 3), tpm("tpm:t:1", 100, 20))))
    assert last.requests is not None and last.requests.remaining == 0
    assert last.tokens is not None and last.tokens.remaining == 0


async def test_a_refused_rate_reserves_no_money(harness: Harness) -> None:
    store = harness.store()
    admit = admitter(store)
    money = budget(harness.clock, "budget:t:2", 200, 100)
    admitted(await admit(rates=(rpm("rpm:t:2", 1),)))
    refusal = refused(await admit(rates=(rpm("rpm:t:2", 1),), budgets=(money,)))
    assert (refusal.kind, refusal.rate_kind, refusal.used, refusal.requested) == (
        "rate",
        "requests",
        1,
        1,
    )
    # Both halves of the budget are still free.
    admitted(await admit(budgets=(money,)))
    admitted(await admit(budgets=(money,)))
    assert refused(await admit(budgets=(money,))).kind == "budget"


async def test_200_concurrent_admits_take_exactly_what_the_budget_allows(harness: Harness) -> None:
    store = harness.store()
    harness.ledger.totals["budget:org:1"] = 3_000
    harness.ledger.delay = 0.2
    estimate = 1_000
    money = budget(harness.clock, "budget:org:1", 3_000 + 50 * estimate + estimate // 2, estimate)
    decisions = await asyncio.gather(*(store.admit(f"r{i}", (), (), (money,)) for i in range(200)))
    accepted = [d for d in decisions if isinstance(d, Admission)]
    assert len(accepted) == 50
    assert all(
        isinstance(d, Refusal) and d.kind == "budget" for d in decisions if d not in accepted
    )
    assert harness.ledger.loads == ["budget:org:1"], "concurrent first uses share one load"
    assert await store.spent("budget:org:1") == 3_000


async def test_settle_releases_the_reservation_and_adds_the_actual_cost(harness: Harness) -> None:
    store = harness.store()
    admit = admitter(store)
    harness.ledger.totals["budget:k:1"] = 100
    money = budget(harness.clock, "budget:k:1", 1_100, 600)
    first = admitted(await admit(budgets=(money,)))
    assert refused(await admit(budgets=(money,))).used == 700  # spent 100 + held 600
    await store.settle(first, tokens=None, cost_nanousd=250)
    assert await store.spent("budget:k:1") == 350
    # 1_100 - 350 = 750 is free again: one more 600 hold fits, then 150 is left.
    second = admitted(await admit(budgets=(money,)))
    assert refused(await admit(budgets=(money,))).used == 950
    # Unknown cost: the estimate is counted as spent.
    await store.settle(second, tokens=None, cost_nanousd=None)
    assert await store.spent("budget:k:1") == 950


async def test_a_crashed_admission_frees_itself_after_the_hold_time(harness: Harness) -> None:
    store = harness.store(hold_seconds=600)
    admit = admitter(store)
    money = budget(harness.clock, "budget:t:3", 1_000, 1_000)
    slot = ParallelCharge("parallel:t:3", 1)
    crashed = admitted(await admit(parallel=(slot,), budgets=(money,)))  # never settled
    harness.clock.advance(599)
    assert refused(await admit(budgets=(money,))).kind == "budget"
    assert refused(await admit(parallel=(slot,))).kind == "parallel"
    harness.clock.advance(1)
    later = admitted(await admit(parallel=(slot,), budgets=(money,)))
    assert await store.spent("budget:t:3") == 0, "an expired hold is dropped, not spent"
    # The crashed request turns out to finish after all: its cost counts, nothing is released
    # twice, and the newer hold stays in place.
    await store.settle(crashed, tokens=None, cost_nanousd=0)
    assert refused(await admit(budgets=(money,))).used == 1_000
    await store.settle(later, tokens=None, cost_nanousd=300)
    assert await store.spent("budget:t:3") == 300


async def test_a_settle_never_creates_a_budget_counter_from_zero(harness: Harness) -> None:
    store = harness.store()
    admit = admitter(store)
    harness.ledger.totals["budget:t:4"] = 500
    money = budget(harness.clock, "budget:t:4", 10_000, 100)
    admission = admitted(await admit(budgets=(money,)))
    await harness.drop_budget(store, "budget:t:4")
    await store.settle(admission, tokens=None, cost_nanousd=80)
    assert await store.spent("budget:t:4") is None
    harness.ledger.totals["budget:t:4"] = 580  # the ledger now holds the call's usage record
    admitted(await admit(budgets=(money,)))
    assert await store.spent("budget:t:4") == 580
    assert harness.ledger.loads == ["budget:t:4", "budget:t:4"]


async def test_parallel_slots(harness: Harness) -> None:
    store = harness.store()
    admit = admitter(store)
    slot = ParallelCharge("parallel:key:9", 2)
    first = admitted(await admit(parallel=(slot,)))
    admitted(await admit(parallel=(slot,)))
    refusal = refused(await admit(parallel=(slot,)))
    assert (refusal.kind, refusal.used, refusal.limit, refusal.retry_after) == (
        "parallel",
        2,
        2,
        1.0,
    )
    await store.settle(first, tokens=None, cost_nanousd=None)
    admitted(await admit(parallel=(slot,)))
    refused(await admit(parallel=(slot,)))


async def test_settle_moves_the_tokens_window_by_actual_minus_estimate(harness: Harness) -> None:
    store = harness.store()
    admit = admitter(store)
    window = ("tpm:key:1", 1_000)
    first = admitted(await admit(rates=(tpm(*window, 600), rpm("rpm:key:1", 100))))
    assert first.tokens is not None and first.tokens.remaining == 400
    await store.settle(first, tokens=150, cost_nanousd=None)
    second = admitted(await admit(rates=(tpm(*window, 800),)))
    assert second.tokens is not None and second.tokens.remaining == 50
    # More than estimated is counted too, and unknown keeps the estimate.
    await store.settle(second, tokens=850, cost_nanousd=None)
    refusal = refused(await admit(rates=(tpm(*window, 1),)))
    assert (refusal.used, refusal.rate_kind) == (1_000, "tokens")
    harness.clock.advance(61)  # the whole first bucket is out of the window
    third = admitted(await admit(rates=(tpm(*window, 300),)))
    await store.settle(third, tokens=None, cost_nanousd=None)
    assert refused(await admit(rates=(tpm(*window, 701),))).used == 300


async def test_retry_after_is_when_the_request_fits(harness: Harness) -> None:
    store = harness.store()
    admit = admitter(store)
    start = harness.clock.now + 0.25
    for offset in (0, 10, 20):
        harness.clock.now = start + offset
        admitted(await admit(rates=(rpm("rpm:t:5", 3),)))
    refused_at = harness.clock.now = start + 30
    refusal = refused(await admit(rates=(rpm("rpm:t:5", 3),)))
    # The first request's 10 ms tick leaves the window 60 s after the tick ends.
    assert refusal.retry_after == pytest.approx(30.01, abs=1e-5)
    assert refusal.states[0].remaining == 0
    assert refusal.states[0].reset_seconds == pytest.approx(50.01, abs=1e-5)  # the third's
    harness.clock.now = refused_at + refusal.retry_after - 1e-3
    refused(await admit(rates=(rpm("rpm:t:5", 3),)))
    harness.clock.now = refused_at + refusal.retry_after + 1e-5
    admission = admitted(await admit(rates=(rpm("rpm:t:5", 3),)))
    assert admission.requests is not None
    assert admission.requests.remaining == 0
    assert admission.requests.reset_seconds == pytest.approx(60.01, abs=1e-4)


async def test_an_estimate_over_the_limit_waits_a_whole_window(harness: Harness) -> None:
    store = harness.store()
    refusal = refused(await admitter(store)(rates=(tpm("tpm:t:6", 100, 101),)))
    assert (refusal.retry_after, refusal.used, refusal.requested) == (60.0, 0, 101)


async def test_the_tightest_window_is_reported_for_headers(harness: Harness) -> None:
    store = harness.store()
    admit = admitter(store)
    charges = (rpm("rpm:tenant:1", 100), rpm("rpm:key:1", 5), tpm("tpm:key:1", 10_000, 10))
    admission = admitted(await admit(rates=charges))
    assert admission.requests is not None and admission.tokens is not None
    assert (admission.requests.key, admission.requests.limit) == ("rpm:key:1", 5)
    assert admission.requests.remaining == 4
    assert admission.tokens.remaining == 9_990


async def test_malformed_charges_are_refused_loudly(harness: Harness) -> None:
    admit = admitter(harness.store())
    with pytest.raises(ValueError, match="charged twice"):
        await admit(rates=(rpm("rpm:t:7", 5), tpm("rpm:t:7", 100, 1)))
    with pytest.raises(ValueError, match="must be >= 0"):
        await admit(budgets=(budget(harness.clock, "budget:t:7", 100, -1),))
