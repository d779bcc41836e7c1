"""What the limits do when Redis is unreachable: the configured policy, logged and counted.

"open": decide with the in-process store instead (each replica then enforces the limits on its
own, so N replicas admit up to N times a shared limit). "closed": refuse with a Refusal of
kind "unavailable" (the proxy answers 503). Either way the first error of an outage is logged
as a warning, its end at info, and every error is counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Literal

from prometheus_client import CollectorRegistry, Counter
from redis.exceptions import RedisError

from agentwatch.limits.memory_store import MemoryStore
from agentwatch.limits.redis_store import RedisStore
from agentwatch.limits.types import (
    Admission,
    BudgetCharge,
    ParallelCharge,
    RateCharge,
    Refusal,
)

log = logging.getLogger(__name__)

FailurePolicy = Literal["open", "closed"]
# While Redis is failing, skip it for this long between attempts, so a dead (or black-holed)
# server does not add its timeout to every request.
PROBE_SECONDS = 1.0
UNAVAILABLE_RETRY_SECONDS = 1.0
# redis-py wraps socket errors and timeouts in these; anything else (a ledger load failing,
# a bug) is not an outage of the store and surfaces.
STORE_ERRORS = (RedisError,)


class FailoverStore:
    """Redis first; on its errors the policy. `errors` counts them; with a `registry` they are
    also the Prometheus counter `agentwatch_limits_store_errors_total{operation}`."""

    def __init__(
        self,
        primary: RedisStore,
        fallback: MemoryStore,
        policy: FailurePolicy = "open",
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._primary = primary
        self._fallback = fallback
        self._policy = policy
        self._clock = clock
        self._failing = False
        self._skip_until = 0.0
        self.errors = 0
        self._counter = (
            None
            if registry is None
            else Counter(
                "agentwatch_limits_store_errors_total",
                "Errors talking to the shared limits store (Redis), by operation",
                ["operation"],
                registry=registry,
            )
        )

    @property
    def failing(self) -> bool:
        """True from an error until Redis answers again."""
        return self._failing

    async def admit(
        self,
        request_id: str,
        rates: Sequence[RateCharge],
        parallel: Sequence[ParallelCharge],
        budgets: Sequence[BudgetCharge],
    ) -> Admission | Refusal:
        if not self._skipping():
            try:
                decision = await self._primary.admit(request_id, rates, parallel, budgets)
            except STORE_ERRORS as exc:
                self._failed("admit", exc)
            else:
                self._succeeded()
                return decision
        if self._policy == "closed":
            return Refusal(
                kind="unavailable",
                key="",
                retry_after=UNAVAILABLE_RETRY_SECONDS,
                limit=0,
                used=0,
                requested=0,
            )
        return await self._fallback.admit(request_id, rates, parallel, budgets)

    async def settle(
        self, admission: Admission, *, tokens: int | None, cost_nanousd: int | None
    ) -> None:
        """Never raises for Redis errors: the holds of a settle that could not be written
        (or was not tried, between probes of a failing Redis) expire after the hold time,
        and the ledger still records the cost."""
        if admission.backend == self._fallback.backend:
            await self._fallback.settle(admission, tokens=tokens, cost_nanousd=cost_nanousd)
            return
        if self._skipping():
            log.debug("limits store failing: settle of %s left to expire", admission.request_id)
            return
        try:
            await self._primary.settle(admission, tokens=tokens, cost_nanousd=cost_nanousd)
        except STORE_ERRORS as exc:
            self._failed("settle", exc)
        else:
            self._succeeded()

    async def spent(self, budget_key: str) -> int | None:
        """The counter that is enforcing now: Redis's, or during an outage with policy "open"
        the in-process one; None when there is none (not loaded, or policy "closed")."""
        if not self._skipping():
            try:
                value = await self._primary.spent(budget_key)
            except STORE_ERRORS as exc:
                self._failed("spent", exc)
            else:
                self._succeeded()
                return value
        return await self._fallback.spent(budget_key) if self._policy == "open" else None

    async def close(self) -> None:
        try:
            await self._primary.close()
        finally:
            await self._fallback.close()

    def _skipping(self) -> bool:
        return self._failing and self._clock() < self._skip_until

    def _failed(self, operation: str, exc: BaseException) -> None:
        self.errors += 1
        if self._counter is not None:
            self._counter.labels(operation).inc()
        self._skip_until = self._clock() + PROBE_SECONDS
        if not self._failing:
            self._failing = True
            action = "using in-process limits" if self._policy == "open" else "refusing requests"
            log.warning("limits store (Redis) unreachable, %s until it is back: %r", action, exc)

    def _succeeded(self) -> None:
        if self._failing:
            self._failing = False
            # The in-process budget counters stop being current now; reload them from the
            # ledger if there is a next outage.
            self._fallback.forget_budgets()
            log.info("limits store (Redis) reachable again after %d errors", self.errors)
