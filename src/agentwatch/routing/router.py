"""Runs one request against an alias's routes: strategy order, circuit breakers, retries with
backoff and full jitter on the same route, then failover to the next."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agentwatch.errors import GatewayError, InvalidRequest, UpstreamError, UpstreamRateLimited
from agentwatch.routing.breaker import CircuitBreaker, CircuitState
from agentwatch.routing.limits import ConcurrencyLimit, HeldStream, RouteSaturated
from agentwatch.routing.strategies import order_routes

if TYPE_CHECKING:
    from agentwatch.catalog import Alias, Catalog, Route
    from agentwatch.providers.base import Provider, ProviderConfig
    from agentwatch.proxy.call import Call
    from agentwatch.proxy.frontend import Reply
    from agentwatch.routing.shared import SharedCircuits

BACKOFF_BASE_S = 0.1
BACKOFF_CAP_S = 2.0
MAX_RETRY_AFTER_S = 5.0  # a longer retry-after is not waited out: the next route is tried
EWMA_WEIGHT = 0.3
KEY_REST_RATE_LIMITED_S = 60.0  # a 429 without retry-after rests the key this long
KEY_REST_REFUSED_S = 300.0  # a key the provider refused (401/403)


class NoRouteAvailable(GatewayError):
    status = 503
    type = "overloaded_error"
    code = "no_route_available"


RouteKey = tuple[int, str, str, str]  # org, alias, provider, upstream model


@dataclass(slots=True)
class MinuteUsage:
    minute: int  # minutes since the epoch
    requests: int = 0
    tokens: int = 0


@dataclass(slots=True)
class Router:
    """Holds what outlives a catalog refresh: breakers and latency averages, keyed by route."""

    rng: random.Random = field(default_factory=random.Random)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    breakers: dict[RouteKey, CircuitBreaker] = field(default_factory=dict)
    latency: dict[RouteKey, float] = field(default_factory=dict)
    limits: dict[tuple[int, str, int], ConcurrencyLimit] = field(default_factory=dict)
    rested: dict[tuple[int, str, int], float] = field(default_factory=dict)  # key → until
    shared: SharedCircuits | None = None
    remote_open: dict[RouteKey, float] = field(default_factory=dict)  # wall-clock until
    minutes: dict[RouteKey, MinuteUsage] = field(default_factory=dict)

    async def run(
        self,
        call: Call,
        alias: Alias,
        catalog: Catalog,
        attempt: Callable[[Route, Provider], Awaitable[Reply]],
    ) -> Reply:
        org = call.principal.org_id if call.principal else 0

        def key(route: Route) -> RouteKey:
            return (org, alias.name, route.provider_name, route.upstream_model)

        routes = alias.routes
        if call.tags:
            routes = tuple(r for r in routes if call.tags <= r.tags)
            if not routes:
                raise InvalidRequest(
                    f"no route of model '{alias.name}' has the tags {', '.join(sorted(call.tags))}",
                    param="x-agentwatch-tags",
                )
        ordered = order_routes(
            alias.strategy,
            routes,
            latency_of=lambda r: self.latency.get(key(r)),
            price_of=lambda r: catalog.price_for(org, r, alias.name),
            rng=self.rng,
        )
        planned = [r for r in ordered if self._breaker(key(r), alias).would_allow()]
        if not planned:
            wait = min(self._breaker(key(r), alias).seconds_until_probe() for r in ordered)
            raise NoRouteAvailable(
                f"every route of model '{alias.name}' is failing; retry in {wait:.0f} s",
                headers={"retry-after": str(max(1, round(wait)))},
            )
        budget = alias.retries  # extra attempts beyond one per route
        last_error: GatewayError | None = None
        for position, route in enumerate(planned):
            tries = 0
            while True:
                breaker = self._breaker(key(route), alias)
                picked = self._pick_key(org, route)
                if picked is None or not breaker.allows():
                    if route.adapter is None:
                        last_error = _unavailable(alias.name, route)
                    break
                key_index, adapter = picked
                if not self._has_capacity(key(route), route):
                    breaker.release_probe()
                    last_error = RouteSaturated(
                        f"route via '{route.provider_name}' is at its per-minute capacity",
                        headers={"retry-after": str(60 - int(time.time()) % 60)},
                    )
                    break
                call.route = route
                started = time.perf_counter()
                limit = self._limit(org, adapter.config, key_index)
                try:
                    if limit is not None:
                        await limit.acquire(route.provider_name)
                    call.attempts += 1
                    result = await _holding(limit, attempt, route, adapter)
                except RouteSaturated as error:
                    breaker.release_probe()  # the provider was never asked
                    last_error = error
                    break
                except UpstreamError as error:
                    if not error.retryable:
                        breaker.record_success()  # the route answered: the request was at fault
                        larger = _larger_window(planned[position + 1 :], route, error)
                        if larger is None:
                            raise
                        planned.remove(larger)
                        planned.insert(position + 1, larger)  # next, whatever its rank
                        last_error = error
                        break
                    last_error = error
                    if self._rest_key(org, route, key_index, error):
                        breaker.release_probe()
                        continue  # the same route with its next key, at once
                    self._record_failure(key(route), breaker)
                    last_error = error
                    delay = _retry_delay(error, tries, self.rng)
                    if budget <= 0 or delay is None or error.code == "upstream_auth_failed":
                        break  # fail over now
                    budget -= 1
                    tries += 1
                    await self.sleep(delay)
                    continue
                except BaseException:
                    breaker.release_probe()  # not the route's fault (bad request, hang-up)
                    raise
                breaker.record_success()
                self._observe(key(route), time.perf_counter() - started)
                call.failovers = position
                return result
        if last_error is None:
            # Every route was mid-probe: those finish quickly, so a second is enough.
            raise NoRouteAvailable(
                f"every route of model '{alias.name}' is being probed after failures",
                headers={"retry-after": "1"},
            )
        raise last_error

    def _has_capacity(self, key: RouteKey, route: Route) -> bool:
        """Within the route's rpm/tpm for the current minute; counts this request if so."""
        if route.rpm is None and route.tpm is None:
            return True
        used = self._minute(key)
        if route.rpm is not None and used.requests >= route.rpm:
            return False
        if route.tpm is not None and used.tokens >= route.tpm:
            return False
        used.requests += 1
        return True

    def record_tokens(self, call: Call, alias: str, tokens: int) -> None:
        """Tokens a finished request used, toward its route's tokens-per-minute."""
        route = call.route
        if route is None or route.tpm is None or call.principal is None:
            return
        key = (call.principal.org_id, alias, route.provider_name, route.upstream_model)
        self._minute(key).tokens += tokens

    def _minute(self, key: RouteKey) -> MinuteUsage:
        minute = int(time.time() // 60)
        used = self.minutes.get(key)
        if used is None or used.minute != minute:
            used = self.minutes[key] = MinuteUsage(minute)
        return used

    def _record_failure(self, key: RouteKey, breaker: CircuitBreaker) -> None:
        was_open = breaker.state is CircuitState.OPEN
        breaker.record_failure()
        if self.shared is not None and not was_open and breaker.state is CircuitState.OPEN:
            self.shared.publish_open(key, breaker.settings.cooldown_s)

    def adopt_open_circuits(self, opened: dict[RouteKey, float]) -> None:
        """Open local breakers that another replica opened (times are wall-clock)."""
        now = time.time()
        self.remote_open = {key: until for key, until in opened.items() if until > now}
        for key, until in self.remote_open.items():
            breaker = self.breakers.get(key)
            if breaker is not None:
                breaker.force_open(until - now)

    def _pick_key(self, org: int, route: Route) -> tuple[int, Provider] | None:
        """The route's first upstream key that is not resting, with its adapter."""
        if len(route.key_adapters) <= 1:
            return None if route.adapter is None else (0, route.adapter)
        now = time.monotonic()
        for index, adapter in enumerate(route.key_adapters):
            if self.rested.get((org, route.provider_name, index), 0.0) <= now:
                return index, adapter
        return None

    def _rest_key(self, org: int, route: Route, index: int, error: UpstreamError) -> bool:
        """Rest a key the provider throttled or refused; True if another key can be tried."""
        if len(route.key_adapters) <= 1:
            return False
        if isinstance(error, UpstreamRateLimited):
            rest = _seconds(error.headers.get("retry-after")) or KEY_REST_RATE_LIMITED_S
        elif error.code == "upstream_auth_failed":
            rest = KEY_REST_REFUSED_S
        else:
            return False
        self.rested[(org, route.provider_name, index)] = time.monotonic() + rest
        return self._pick_key(org, route) is not None

    def _limit(self, org: int, config: ProviderConfig, key_index: int) -> ConcurrencyLimit | None:
        """Each upstream key of the provider gets its own slots: limits are per key."""
        if config.max_concurrency is None:
            return None
        key = (org, config.name, key_index)
        limit = self.limits.get(key)
        settings = (config.max_concurrency, config.max_queue)
        if limit is None or (limit.max_concurrency, limit.max_queue) != settings:
            limit = self.limits[key] = ConcurrencyLimit(*settings)
        return limit

    def _breaker(self, key: RouteKey, alias: Alias) -> CircuitBreaker:
        breaker = self.breakers.get(key)
        if breaker is None or (
            breaker.settings is not alias.circuit and breaker.settings != alias.circuit
        ):
            breaker = self.breakers[key] = CircuitBreaker(alias.circuit)
            until = self.remote_open.get(key)
            if until is not None and until > time.time():
                breaker.force_open(until - time.time())
        return breaker

    def _observe(self, key: RouteKey, seconds: float) -> None:
        previous = self.latency.get(key)
        self.latency[key] = (
            seconds if previous is None else previous + EWMA_WEIGHT * (seconds - previous)
        )


async def _holding(
    limit: ConcurrencyLimit | None,
    attempt: Callable[[Route, Provider], Awaitable[Reply]],
    route: Route,
    adapter: Provider,
) -> Reply:
    """Run the attempt in a concurrency slot: released with the answer, or, for a stream,
    when the stream is closed."""
    if limit is None:
        return await attempt(route, adapter)
    try:
        reply = await attempt(route, adapter)
    except BaseException:
        limit.release()
        raise
    if reply.stream is None:
        limit.release()
    else:
        reply.stream = HeldStream(reply.stream, limit)
    return reply


def _larger_window(later: list[Route], failed: Route, error: UpstreamError) -> Route | None:
    """For a request too long for the route, a later route with a larger context window."""
    if error.code != "context_length_exceeded" or failed.context_window is None:
        return None
    window = failed.context_window
    return next((r for r in later if r.context_window and r.context_window > window), None)


def _retry_delay(error: UpstreamError, tries: int, rng: random.Random) -> float | None:
    """Full-jitter exponential backoff; a provider's retry-after wins when it is short."""
    if isinstance(error, UpstreamRateLimited):
        retry_after = _seconds(error.headers.get("retry-after"))
        if retry_after is not None:
            return retry_after if retry_after <= MAX_RETRY_AFTER_S else None
    return rng.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**tries))


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _unavailable(alias: str, route: Route) -> UpstreamError:
    return UpstreamError(
        f"model '{alias}' route via '{route.provider_name}' is unavailable: "
        f"{route.unavailable_reason}",
        code="provider_unavailable",
    )
