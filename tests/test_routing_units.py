"""Routing units: the circuit breaker on a fake clock, route ordering per strategy, and
`Router.run` with injected sleep and randomness against adapters that raise gateway errors."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import cast

import pytest

from agentwatch.catalog import Alias, Catalog, Route
from agentwatch.errors import (
    GatewayError,
    InvalidRequest,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
)
from agentwatch.pricing import Price
from agentwatch.providers.base import Provider, ProviderConfig
from agentwatch.proxy.call import Call
from agentwatch.routing.breaker import CircuitBreaker, CircuitSettings, CircuitState
from agentwatch.routing.router import NoRouteAvailable, Router
from agentwatch.routing.strategies import order_routes


@dataclass
class FakeAdapter:
    """The router reads only the adapter's config (for limits) and hands it to `attempt`."""

    config: ProviderConfig = field(
        default_factory=lambda: ProviderConfig(
            name="fake", type="openai_compatible", base_url="http://127.0.0.1:9/v1", api_key=None
        )
    )


ADAPTER = cast(Provider, FakeAdapter())


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def route(name: str, *, weight: float = 1.0, order: int = 0, price: Price | None = None) -> Route:
    return Route(
        provider_name=name,
        upstream_model=f"{name}-model",
        weight=weight,
        adapter=ADAPTER,
        price=price,
        order=order,
    )


def names(routes: Iterable[Route]) -> list[str]:
    return [r.provider_name for r in routes]


# CircuitBreaker


def breaker(
    clock: FakeClock, threshold: int = 3, cooldown: float = 10, probes: int = 1
) -> CircuitBreaker:
    settings = CircuitSettings(
        failure_threshold=threshold, cooldown_s=cooldown, half_open_probes=probes
    )
    return CircuitBreaker(settings, clock=clock)


def test_breaker_opens_after_consecutive_failures_only() -> None:
    cb = breaker(FakeClock(), threshold=3)
    cb.record_failure()
    cb.record_failure()
    cb.record_success()  # resets the streak
    cb.record_failure()
    cb.record_failure()
    assert cb.state is CircuitState.CLOSED and cb.allows()
    cb.record_failure()
    assert cb.state is CircuitState.OPEN
    assert not cb.would_allow() and not cb.allows()


def test_breaker_half_opens_after_cooldown_and_closes_on_a_good_probe() -> None:
    clock = FakeClock()
    cb = breaker(clock, threshold=1, cooldown=10, probes=1)
    cb.record_failure()
    clock.now += 4
    assert cb.seconds_until_probe() == pytest.approx(6)
    assert not cb.allows()
    clock.now += 6
    assert cb.would_allow()
    assert cb.allows()  # the probe
    assert cb.state is CircuitState.HALF_OPEN
    assert not cb.would_allow() and not cb.allows()  # one probe at a time
    cb.record_success()
    assert cb.state is CircuitState.CLOSED
    assert all(cb.allows() for _ in range(5))


def test_a_failed_probe_reopens_for_a_whole_cooldown() -> None:
    clock = FakeClock()
    cb = breaker(clock, threshold=5, cooldown=10, probes=2)
    for _ in range(5):
        cb.record_failure()
    clock.now += 10
    assert cb.allows() and cb.allows() and not cb.allows()
    clock.now += 3
    cb.record_failure()  # one failed probe is enough, whatever the threshold
    assert cb.state is CircuitState.OPEN
    assert cb.seconds_until_probe() == pytest.approx(10)
    clock.now += 9.9
    assert not cb.allows()


def test_a_released_probe_lets_another_through() -> None:
    clock = FakeClock()
    cb = breaker(clock, threshold=1, cooldown=1)
    cb.record_failure()
    clock.now += 1
    assert cb.allows() and not cb.allows()
    cb.release_probe()
    assert cb.state is CircuitState.HALF_OPEN and cb.allows()


# order_routes


def ordered(
    strategy: str,
    routes: list[Route],
    rng: random.Random | None = None,
    latency: dict[str, float] | None = None,
) -> list[Route]:
    latency = latency or {}
    return order_routes(
        strategy,
        routes,
        latency_of=lambda r: latency.get(r.provider_name),
        price_of=lambda r: r.price,
        rng=rng or random.Random(0),
    )


def test_fallback_follows_order_and_keeps_ties_in_config_order() -> None:
    routes = [route("c", order=3), route("a", order=1), route("b1", order=2), route("b2", order=2)]
    assert names(ordered("fallback", routes)) == ["a", "b1", "b2", "c"]


def test_weighted_first_pick_follows_weights_then_the_rest_by_weight() -> None:
    routes = [route("light", weight=1), route("heavy", weight=3), route("never", weight=0)]
    rng = random.Random(1234)
    picks = [ordered("weighted", routes, rng) for _ in range(4000)]
    firsts = Counter(p[0].provider_name for p in picks)
    assert firsts["never"] == 0
    assert 0.72 <= firsts["heavy"] / 4000 <= 0.78
    for pick in picks:
        assert sorted(names(pick)) == ["heavy", "light", "never"]
        assert names(pick)[1:] == sorted(
            names(pick)[1:], key=lambda n: -{"heavy": 3, "light": 1, "never": 0}[n]
        )


def test_weighted_with_the_same_seed_is_reproducible() -> None:
    routes = [route(str(i), weight=i + 1) for i in range(5)]
    first = [names(ordered("weighted", routes, random.Random(7))) for _ in range(3)]
    assert first[0] == first[1] == first[2]


def test_lowest_cost_puts_unknown_prices_last() -> None:
    routes = [
        route("unknown", order=0),
        route("dear", order=1, price=Price(input_per_mtok=2.5, output_per_mtok=10)),
        route("cheap", order=2, price=Price(input_per_mtok=0.15, output_per_mtok=0.6)),
    ]
    assert names(ordered("lowest-cost", routes)) == ["cheap", "dear", "unknown"]


def test_least_latency_tries_unmeasured_routes_first_then_the_fastest() -> None:
    routes = [route("slow", order=0), route("fast", order=1), route("new", order=2)]
    latency = {"slow": 0.9, "fast": 0.1}
    assert names(ordered("least-latency", routes, latency=latency)) == ["new", "fast", "slow"]


# Router.run

Outcome = GatewayError | BaseException | None  # None: the upstream answers


@dataclass
class Script:
    """Each route's upstream outcomes in turn, the last one repeating; no script: it answers."""

    outcomes: dict[str, list[Outcome]]
    calls: list[str] = field(default_factory=list)

    async def attempt(self, r: Route, adapter: Provider) -> str:
        assert adapter is ADAPTER
        self.calls.append(r.provider_name)
        queue = self.outcomes.get(r.provider_name, [None])
        outcome = queue.pop(0) if len(queue) > 1 else queue[0]
        if outcome is not None:
            raise outcome
        return r.provider_name


@dataclass
class Sleeps:
    delays: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def alias(*routes: Route, retries: int = 2, threshold: int = 100) -> Alias:
    return Alias(
        name="smart",
        routes=routes,
        strategy="fallback",
        retries=retries,
        circuit=CircuitSettings(failure_threshold=threshold, cooldown_s=30),
    )


def run(router: Router, a: Alias, script: Script) -> tuple[Call, str]:
    call = Call(request_id="r", endpoint="/v1/chat/completions")
    result = asyncio.run(router.run(call, a, Catalog(), script.attempt))
    return call, result


PRIMARY, BACKUP, THIRD = (
    route("primary", order=1),
    route("backup", order=2),
    route("third", order=3),
)


def test_retries_the_same_route_with_full_jitter_then_fails_over() -> None:
    sleeps = Sleeps()
    router = Router(rng=random.Random(3), sleep=sleeps)
    script = Script({"primary": [UpstreamError("boom")]})
    call, result = run(router, alias(PRIMARY, BACKUP, retries=3), script)
    assert result == "backup"
    assert script.calls == ["primary"] * 4 + ["backup"]
    assert (call.attempts, call.failovers) == (5, 1)
    assert call.route is BACKUP
    assert len(sleeps.delays) == 3
    for tries, delay in enumerate(sleeps.delays):
        assert 0 <= delay <= 0.1 * 2**tries


def test_a_retry_that_succeeds_stays_on_the_route() -> None:
    router = Router(rng=random.Random(0), sleep=Sleeps())
    script = Script({"primary": [UpstreamTimeout("slow"), None]})
    call, result = run(router, alias(PRIMARY, BACKUP), script)
    assert (result, script.calls, call.attempts, call.failovers) == (
        "primary",
        ["primary", "primary"],
        2,
        0,
    )


def test_the_retry_budget_is_per_request_not_per_route() -> None:
    router = Router(rng=random.Random(0), sleep=Sleeps())
    script = Script({"primary": [UpstreamTimeout("slow")], "backup": [UpstreamError("boom")]})
    call, result = run(router, alias(PRIMARY, BACKUP, THIRD, retries=1), script)
    assert result == "third"
    assert script.calls == ["primary", "primary", "backup", "third"]
    assert (call.attempts, call.failovers) == (4, 2)


def test_a_short_retry_after_is_waited_out_and_a_long_one_fails_over_at_once() -> None:
    sleeps = Sleeps()
    router = Router(rng=random.Random(0), sleep=sleeps)
    short = UpstreamRateLimited("slow down", headers={"retry-after": "1.5"})
    script = Script({"primary": [short, None]})
    _, result = run(router, alias(PRIMARY, BACKUP), script)
    assert (result, sleeps.delays) == ("primary", [1.5])

    sleeps.delays.clear()
    long = UpstreamRateLimited("go away", headers={"retry-after": "7"})
    script = Script({"primary": [long]})
    _, result = run(router, alias(PRIMARY, BACKUP), script)
    assert (result, script.calls, sleeps.delays) == ("backup", ["primary", "backup"], [])


def test_a_rejected_upstream_credential_fails_over_without_retrying() -> None:
    sleeps = Sleeps()
    router = Router(rng=random.Random(0), sleep=sleeps)
    script = Script({"primary": [UpstreamError("401", code="upstream_auth_failed")]})
    _, result = run(router, alias(PRIMARY, BACKUP, retries=5), script)
    assert (result, script.calls, sleeps.delays) == ("backup", ["primary", "backup"], [])


def test_a_non_retryable_error_is_raised_at_once() -> None:
    router = Router(rng=random.Random(0), sleep=Sleeps())
    script = Script({"primary": [UpstreamRejected("context too long")]})
    with pytest.raises(UpstreamRejected):
        run(router, alias(PRIMARY, BACKUP), script)
    assert script.calls == ["primary"]


def test_when_every_route_fails_the_last_error_is_raised() -> None:
    router = Router(rng=random.Random(0), sleep=Sleeps())
    script = Script({"primary": [UpstreamTimeout("slow")], "backup": [UpstreamError("boom")]})
    with pytest.raises(UpstreamError) as caught:
        run(router, alias(PRIMARY, BACKUP, retries=0), script)
    assert caught.value.message == "boom"


def test_a_route_without_an_adapter_is_skipped() -> None:
    broken = Route("gone", "m", 1.0, adapter=None, unavailable_reason="no key", order=0)
    router = Router(rng=random.Random(0), sleep=Sleeps())
    script = Script({})
    _, result = run(router, alias(broken, BACKUP), script)
    assert (result, script.calls) == ("backup", ["backup"])
    with pytest.raises(UpstreamError) as caught:
        run(router, alias(broken), script)
    assert caught.value.code == "provider_unavailable"


def test_open_circuits_are_skipped_and_all_open_is_503_with_retry_after() -> None:
    clock = FakeClock()
    router = Router(rng=random.Random(0), sleep=Sleeps())
    smart = alias(PRIMARY, BACKUP, retries=0, threshold=2)
    for r in (PRIMARY, BACKUP):
        key = (0, "smart", r.provider_name, r.upstream_model)
        router.breakers[key] = CircuitBreaker(smart.circuit, clock=clock)
    script = Script({"primary": [UpstreamError("boom")]})
    for _ in range(2):
        assert run(router, smart, script)[1] == "backup"
    assert script.calls == ["primary", "backup"] * 2
    assert run(router, smart, script)[1] == "backup"
    assert script.calls[-1:] == ["backup"] and len(script.calls) == 5  # primary shed

    script.outcomes["backup"] = [UpstreamError("down too")]
    with pytest.raises(UpstreamError):
        run(router, smart, script)
    with pytest.raises(UpstreamError):
        run(router, smart, script)
    calls = len(script.calls)
    clock.now += 12
    with pytest.raises(NoRouteAvailable) as caught:
        run(router, smart, script)
    assert len(script.calls) == calls  # no upstream was called
    assert caught.value.status == 503 and caught.value.code == "no_route_available"
    assert caught.value.headers == {"retry-after": "18"}  # the earliest probe, rounded

    clock.now += 30  # both cooled down: one probe each, and the backup recovers
    script.outcomes["backup"] = [None]
    assert run(router, smart, script)[1] == "backup"
    assert script.calls[-2:] == ["primary", "backup"]


def test_a_probe_that_ends_without_an_upstream_verdict_is_released() -> None:
    clock = FakeClock()
    router = Router(rng=random.Random(0), sleep=Sleeps())
    smart = alias(PRIMARY, retries=0, threshold=1)
    key = (0, "smart", "primary", "primary-model")
    cb = router.breakers[key] = CircuitBreaker(smart.circuit, clock=clock)
    with pytest.raises(UpstreamError):
        run(router, smart, Script({"primary": [UpstreamError("boom")]}))
    clock.now += 30
    with pytest.raises(InvalidRequest):  # the request's own fault, not the route's
        run(router, smart, Script({"primary": [InvalidRequest("no legacy completions")]}))
    assert cb.state is CircuitState.HALF_OPEN and cb.would_allow()
    assert run(router, smart, Script({}))[1] == "primary"
    assert cb.state is CircuitState.CLOSED
