"""The sliding window, counted on a simulated clock, on both stores (Redis takes the injected
time instead of its TIME): at twice the limit it admits the limit in every 60-second window
(within 5 %), never more than the limit in any window, and a burst at a minute boundary does
not get a second limit's worth through as a fixed window would."""

from __future__ import annotations

import bisect
import random
from collections import deque

import pytest

from agentwatch.limits import Admission, LimitStore, RateCharge
from agentwatch.limits.window import WINDOW_SECONDS, SlidingWindow, leaves_at, tick_of
from tests.test_limits_stores import STORES, FakeClock, harness_for


def busiest_window(accepted: list[float]) -> int:
    """The most admissions in any 60 s window (t - 60, t]: it is largest ending at one."""
    return max(
        bisect.bisect_right(accepted, t) - bisect.bisect_right(accepted, t - WINDOW_SECONDS)
        for t in accepted
    )


def quietest_window(accepted: list[float], start: float, end: float) -> int:
    """The fewest admissions in any 60 s window inside [start, end]: it is smallest right
    after an admission leaves, (t, t + 60] for an admission at t."""
    return min(
        bisect.bisect_right(accepted, t + WINDOW_SECONDS) - bisect.bisect_right(accepted, t)
        for t in accepted
        if start <= t and t + WINDOW_SECONDS <= end
    )


async def offer(store: LimitStore, clock: FakeClock, times: list[float], limit: int) -> list[float]:
    """Ask for one request at each time; the times that were admitted."""
    charge = (RateCharge("rpm:tenant:1", limit, 1, "requests"),)
    accepted: list[float] = []
    for i, at in enumerate(times):
        clock.now = at
        if isinstance(await store.admit(f"r{i}", charge, (), ()), Admission):
            accepted.append(at)
    return accepted


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.parametrize("limit", [60, 600])
async def test_twice_the_limit_offered_evenly_admits_the_limit_in_every_window(
    kind: str, limit: int
) -> None:
    async with harness_for(kind) as setup:
        start = setup.clock.now + 0.37  # not aligned with seconds or ticks
        step = WINDOW_SECONDS / (2 * limit)
        minutes = 5
        times = [start + i * step for i in range(int(minutes * WINDOW_SECONDS / step))]
        accepted = await offer(setup.store(), setup.clock, times, limit)
        assert busiest_window(accepted) <= limit
        # After the first minute (which starts empty) every window is nearly full.
        end = start + minutes * WINDOW_SECONDS
        assert quietest_window(accepted, start + WINDOW_SECONDS, end) >= limit * 0.95


@pytest.mark.parametrize("kind", STORES)
async def test_a_burst_at_a_minute_boundary_cannot_pass_twice_the_limit(kind: str) -> None:
    limit = 100
    async with harness_for(kind) as setup:
        minute = (setup.clock.now // WINDOW_SECONDS + 1) * WINDOW_SECONDS
        burst_before = [minute - 0.1] * limit
        burst_after = [minute + 0.1] * limit
        # then the whole limit asked for every two seconds for two and a half minutes
        hammering = [minute + 0.1 + 2 * i for i in range(1, 76) for _ in range(limit)]
        accepted = await offer(
            setup.store(), setup.clock, burst_before + burst_after + hammering, limit
        )
        # A fixed window would let the second burst through: a new minute, a new count.
        assert accepted.count(minute - 0.1) == limit
        assert accepted.count(minute + 0.1) == 0
        assert busiest_window(accepted) == limit  # not 2x, not even 1x + a bit
        # The burst's capacity returns 60 s (and at most one 10 ms tick) after it.
        assert min(at for at in accepted if at > minute) == minute + 0.1 + 2 * 30


@pytest.mark.parametrize("offered", [2, 10])
async def test_random_arrivals_are_admitted_like_an_exact_log(offered: int) -> None:
    """Against an exact sliding log (every admission's own timestamp) the 10 ms ticks only
    return capacity up to 10 ms later: the same admissions within 1 %."""
    limit = 100
    rng = random.Random(offered)
    async with harness_for("memory") as setup:
        times: list[float] = []
        at = setup.clock.now
        while at < setup.clock.now + 5 * WINDOW_SECONDS:
            at += rng.expovariate(offered * limit / WINDOW_SECONDS)
            times.append(at)
        exact: deque[float] = deque()
        expected = 0
        for at in times:
            while exact and exact[0] <= at - WINDOW_SECONDS:
                exact.popleft()
            if len(exact) < limit:
                exact.append(at)
                expected += 1
        accepted = await offer(setup.store(), setup.clock, times, limit)
        assert busiest_window(accepted) <= limit
        assert len(accepted) == pytest.approx(expected, rel=0.01)


def window_at(counts: dict[int, int], now: float) -> SlidingWindow:
    log = SlidingWindow()
    for tick, count in counts.items():
        log.add(tick, count)
    log.prune(now)
    return log


def test_seconds_until_fits_is_the_first_moment_the_amount_fits() -> None:
    rng = random.Random(7)
    for _ in range(300):
        now = 1_000_000.0 + rng.random() * 10
        ticks = sorted({tick_of(now) - rng.randrange(0, 6_000) for _ in range(rng.randrange(12))})
        counts = {tick: rng.randrange(0, 40) for tick in ticks}
        limit = rng.randrange(1, 300)
        amount = rng.randrange(1, limit + 1)
        wait = window_at(counts, now).seconds_until_fits(now, amount, limit)
        if window_at(counts, now).total + amount <= limit:
            assert wait == 0.0
            continue
        # (give or take float rounding: retry-after is sent in whole seconds anyway)
        assert window_at(counts, now + wait + 1e-6).total + amount <= limit
        assert window_at(counts, now + wait - 1e-4).total + amount > limit


def test_window_arithmetic_by_hand() -> None:
    log = SlidingWindow()
    for tick, count in ((10_000, 10), (13_000, 5), (15_900, 3)):  # at 100 s, 130 s, 159 s
        log.add(tick, count)
    assert leaves_at(10_000) == pytest.approx(160.01)
    log.prune(160.005)
    assert log.total == 18  # the tick at 100.00-100.01 s still counts until 160.01 s
    assert log.seconds_until_empty(160.005) == pytest.approx(219.01 - 160.005)
    assert log.seconds_until_fits(160.005, 0, 10) == pytest.approx(0.005)
    assert log.seconds_until_fits(160.005, 3, 10) == pytest.approx(190.01 - 160.005)
    assert log.seconds_until_fits(160.005, 11, 10) == WINDOW_SECONDS
    log.correct(13_000, -7)  # a settle may lower a tick, never below zero
    assert log.total == 13
    log.prune(160.01)
    assert log.total == 3
    log.correct(10_000, +50)  # a tick that left is not brought back
    assert log.total == 3
