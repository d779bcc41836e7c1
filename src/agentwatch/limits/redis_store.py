"""Limits shared by every gateway replica through Redis.

Each admit and each settle is one Lua script (admit.lua, settle.lua), so a decision over all of
a request's charges is atomic across replicas; the scripts read Redis's own clock (TIME), so
replicas with drifting clocks still agree on windows and deadlines.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from importlib.resources import files
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from agentwatch.limits.memory_store import DEFAULT_HOLD_SECONDS
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
from agentwatch.limits.window import TICKS_PER_SECOND, WINDOW_TICKS

# A budget key can vanish between loading it and admitting (flushed, expired at the edge of
# its period); a few rounds cover that without looping forever on a broken loader.
LOAD_ROUNDS = 3


def _script(name: str) -> str:
    return files("agentwatch.limits").joinpath(name).read_text()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisStore:
    """`redis` is owned by the store (closed by `close`). `clock` replaces Redis TIME: for
    tests only, so expiry can be shown without waiting."""

    backend = "redis"

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        load_spent: LoadSpent,
        *,
        hold_seconds: float = DEFAULT_HOLD_SECONDS,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._redis = redis
        self._prefix = f"{prefix}limits:"
        self._load_spent = load_spent
        self._hold_seconds = hold_seconds
        self._clock = clock
        self._admit = redis.register_script(_script("admit.lua"))
        self._settle = redis.register_script(_script("settle.lua"))
        self._start_budget = redis.register_script(_script("load.lua"))
        self._loads = SingleFlight()

    @classmethod
    def from_url(
        cls,
        url: str,
        prefix: str,
        load_spent: LoadSpent,
        *,
        timeout_seconds: float = 0.5,
        max_connections: int = 128,
        pool_wait_seconds: float = 5.0,
        hold_seconds: float = DEFAULT_HOLD_SECONDS,
        clock: Callable[[], float] | None = None,
    ) -> RedisStore:
        """A store with its own connection pool, tuned so the failure policy (failover.py)
        decides quickly when Redis is unreachable: short socket timeouts and one immediate
        retry (for a pooled connection gone stale) instead of redis-py's ten with backoff.
        A burst waits for a free connection (up to `pool_wait_seconds`; the socket timeouts
        keep the pool moving) rather than failing as if Redis were down."""
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=pool_wait_seconds,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), 1),
        )
        return cls(
            Redis.from_pool(pool), prefix, load_spent, hold_seconds=hold_seconds, clock=clock
        )

    async def admit(
        self,
        request_id: str,
        rates: Sequence[RateCharge],
        parallel: Sequence[ParallelCharge],
        budgets: Sequence[BudgetCharge],
    ) -> Admission | Refusal:
        validate(rates, parallel, budgets)
        keys = [name for rate in rates for name in self._rate_keys(rate.key)]
        keys += [self._parallel_key(slot.key) for slot in parallel]
        args: list[str | int | float] = [
            self._now(),
            request_id,
            self._hold_seconds,
            WINDOW_TICKS,
            TICKS_PER_SECOND,
            len(rates),
            len(parallel),
            len(budgets),
        ]
        for rate in rates:
            args += [rate.limit, rate.amount]
        args += [slot.limit for slot in parallel]
        for charge in budgets:
            keys += self._budget_keys(charge.key)
            args += [charge.limit_nanousd, charge.reserve_nanousd, repr(charge.period_end)]
        for _ in range(LOAD_ROUNDS):
            args[0] = self._now()
            reply = await self._admit(keys=keys, args=args)
            if _text(reply[0]) != "load":
                facts = _facts(reply, len(rates), len(parallel), len(budgets))
                return verdict(request_id, rates, parallel, budgets, facts, self.backend)
            for index in reply[1]:
                charge = budgets[int(index) - 1]
                await self._loads.run(charge.key, functools.partial(self._load, charge))
        raise RuntimeError(f"budget counters would not stay loaded: {[b.key for b in budgets]}")

    async def settle(
        self, admission: Admission, *, tokens: int | None, cost_nanousd: int | None
    ) -> None:
        windows = [rate for rate in admission.rates if rate.kind == "tokens"]
        keys = [self._rate_keys(rate.key)[0] for rate in windows]
        keys += [self._parallel_key(slot.key) for slot in admission.parallel]
        args: list[str | int] = [
            admission.request_id,
            admission.tick,
            "" if cost_nanousd is None else cost_nanousd,
            len(windows),
            len(admission.parallel),
            len(admission.budgets),
        ]
        args += [0 if tokens is None else tokens - rate.amount for rate in windows]
        for charge in admission.budgets:
            keys += self._budget_keys(charge.key)
            args.append(charge.reserve_nanousd)
        await self._settle(keys=keys, args=args)

    async def spent(self, budget_key: str) -> int | None:
        value = await self._redis.hget(self._budget_keys(budget_key)[0], "spent")
        return None if value is None else int(value)

    async def close(self) -> None:
        await self._redis.aclose()

    async def _load(self, charge: BudgetCharge) -> None:
        spent = await self._load_spent(charge.key)
        await self._start_budget(
            keys=[self._budget_keys(charge.key)[0]],
            args=[spent, repr(charge.period_end), self._now()],
        )

    def _now(self) -> str:
        return "" if self._clock is None else repr(self._clock())

    def _rate_keys(self, key: str) -> tuple[str, str]:
        counts = f"{self._prefix}rate:{key}"
        return counts, f"{counts}:ticks"

    def _parallel_key(self, key: str) -> str:
        return f"{self._prefix}parallel:{key}"

    def _budget_keys(self, key: str) -> list[str]:
        state = f"{self._prefix}budget:{key}"
        return [state, f"{state}:holds", f"{state}:deadlines"]


def _facts(reply: list[Any], n_rates: int, n_parallel: int, n_budgets: int) -> Facts:
    """Decode admit.lua's flat reply."""
    at = 3
    windows: list[WindowFacts] = []
    for _ in range(n_rates):
        used, fits, retry, reset = reply[at : at + 4]
        windows.append(WindowFacts(int(used), int(fits) == 1, float(retry), float(reset)))
        at += 4
    in_flight = tuple(int(count) for count in reply[at : at + n_parallel])
    at += n_parallel
    budget_used = tuple(
        int(reply[at + 2 * i]) + int(reply[at + 2 * i + 1]) for i in range(n_budgets)
    )
    return Facts(
        now=float(reply[1]),
        tick=int(reply[2]),
        taken=_text(reply[0]) == "ok",
        windows=tuple(windows),
        in_flight=in_flight,
        budget_used=budget_used,
    )
