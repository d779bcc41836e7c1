"""The limit stage of the `/v1` pipeline: before a call goes upstream, take its requests,
tokens, concurrency slots and budget reservations at every level that has them (key, tenant,
team, organisation) in one atomic step, or refuse it with a 429; after it, settle.

The refusal errors follow the client's API: OpenAI's `rate_limit_exceeded` and
`insufficient_quota` / `budget_exceeded`, Anthropic's `rate_limit_error`.
"""

from __future__ import annotations

import itertools
import logging
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agentwatch.catalog import Catalog
from agentwatch.errors import BudgetExceeded, GatewayError, LimitsUnavailable, RateLimited
from agentwatch.limits.types import (
    Admission,
    BudgetCharge,
    LimitStore,
    ParallelCharge,
    RateCharge,
    RateState,
    Refusal,
)
from agentwatch.providers.base import Usage
from agentwatch.spend import estimate
from agentwatch.spend.book import ControlBook, Scope, budget_key
from agentwatch.spend.periods import period_bounds
from agentwatch.spend.specs import BudgetSpec, ModelLimits
from agentwatch.tenant_auth import Principal

log = logging.getLogger(__name__)

CountPrompt = Callable[[str, dict[str, Any], str], int]
UNLIMITED_NANOUSD = 2**62


@dataclass(frozen=True, slots=True)
class BudgetHold:
    """A budget a call was admitted against, for settling and alerts."""

    scope: Scope
    entity: int
    spec: BudgetSpec
    key: str
    period_start: datetime
    period_end: datetime


@dataclass(slots=True)
class Ticket:
    """What a call took; settled once when it ends."""

    admission: Admission
    holds: tuple[BudgetHold, ...]
    settled: bool = False


class SpendGate:
    def __init__(self, store: LimitStore, count_prompt: CountPrompt) -> None:
        self.store = store
        self._count_prompt = count_prompt
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(6)

    async def admit(
        self,
        book: ControlBook,
        catalog: Catalog,
        principal: Principal,
        endpoint: str,
        model: str,
        payload: dict[str, Any],
        now: datetime | None = None,
        end_user: str | None = None,
    ) -> Ticket | None:
        """None when no level has a limit or budget; raises the 429 (or 503) on refusal."""
        levels = book.levels(
            principal.api_key_id, principal.tenant_id, principal.team_id, principal.org_id
        )
        if not levels:
            return None
        now = now or datetime.now(UTC)
        prompt: int | None = None
        # Prompts are counted with the first route's model's tokenizer: the alias is a name.
        alias = catalog.alias(principal.org_id, model)
        tokenizer_model = alias.routes[0].upstream_model if alias and alias.routes else model
        rates: list[RateCharge] = []
        parallel: list[ParallelCharge] = []
        budgets: list[BudgetCharge] = []
        holds: list[BudgetHold] = []
        for scope, entity, controls in levels:
            limits = controls.limits
            if limits is not None:
                where = f"{scope}:{entity}"
                groups: list[tuple[str, ModelLimits]] = [(where, limits)]
                per_model = limits.models.get(model)
                if per_model is not None:
                    groups.append((f"{where}:model:{model}", per_model))
                user = end_user if limits.per_user is not None else None
                if user is not None and limits.per_user is not None:
                    groups.append((f"{where}:user:{user}", limits.per_user))
                for key, spec in groups:
                    if spec.rpm:
                        rates.append(RateCharge(f"rpm:{key}", spec.rpm, 1, "requests"))
                    if spec.tpm:
                        if prompt is None:
                            prompt = self._count_prompt(endpoint, payload, tokenizer_model)
                        tokens = prompt + estimate.completion_tokens(endpoint, payload)
                        rates.append(RateCharge(f"tpm:{key}", spec.tpm, tokens, "tokens"))
                    if spec.max_parallel:
                        parallel.append(ParallelCharge(f"par:{key}", spec.max_parallel))
            budget = controls.budget
            if budget is not None:
                if prompt is None:
                    prompt = self._count_prompt(endpoint, payload, tokenizer_model)
                completion = estimate.completion_tokens(endpoint, payload)
                usage = Usage(prompt_tokens=prompt, completion_tokens=completion)
                cost = catalog.estimate_cost_nanousd(principal.org_id, model, usage)
                start, end = period_bounds(budget.period, budget.timezone, now)
                key = budget_key(scope, entity, start, end)
                # An alert-only budget still keeps its spent counter, for the alerts.
                limit = budget.limit_nanousd if budget.hard else UNLIMITED_NANOUSD
                budgets.append(BudgetCharge(key, limit, cost or 0, end.timestamp()))
                holds.append(BudgetHold(scope, entity, budget, key, start, end))
        if not rates and not parallel and not budgets:
            return None
        request_id = f"{self._prefix}-{next(self._ids)}"
        result = await self.store.admit(request_id, rates, parallel, budgets)
        if isinstance(result, Refusal):
            raise _refusal_error(result)
        return Ticket(result, tuple(holds))

    async def settle(self, ticket: Ticket, *, tokens: int | None, cost_nanousd: int | None) -> None:
        if ticket.settled:
            return
        ticket.settled = True
        await self.store.settle(ticket.admission, tokens=tokens, cost_nanousd=cost_nanousd)


def rate_headers(states: tuple[RateState | None, RateState | None]) -> list[tuple[bytes, bytes]]:
    """OpenAI's x-ratelimit-* headers for the tightest requests and tokens windows."""
    headers: list[tuple[bytes, bytes]] = []
    for name, state in zip(("requests", "tokens"), states, strict=True):
        if state is None:
            continue
        headers += [
            (f"x-ratelimit-limit-{name}".encode(), str(state.limit).encode()),
            (f"x-ratelimit-remaining-{name}".encode(), str(max(state.remaining, 0)).encode()),
            (f"x-ratelimit-reset-{name}".encode(), duration(state.reset_seconds).encode()),
        ]
    return headers


def duration(seconds: float) -> str:
    """OpenAI's reset format: 1s, 6m0s, 0.5s."""
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{round(rest):d}s"


def _refusal_error(refusal: Refusal) -> GatewayError:
    retry = max(1, math.ceil(refusal.retry_after))
    headers = {
        "retry-after": str(retry),
        "retry-after-ms": str(max(1, math.ceil(refusal.retry_after * 1000))),
    }
    for name, value in rate_headers((refusal.requests, refusal.tokens)):
        headers[name.decode()] = value.decode()
    scope = _describe(refusal.key)
    if refusal.kind == "budget":
        return BudgetExceeded(
            f"the budget of {scope} is used up for this period "
            f"(${_usd(refusal.used)} spent or reserved of ${_usd(refusal.limit)}); "
            f"it renews in {duration(refusal.retry_after)}",
            headers=headers,
        )
    if refusal.kind == "parallel":
        return RateLimited(
            f"too many concurrent requests for {scope}: {refusal.used} of {refusal.limit} "
            "in flight",
            headers=headers,
        )
    if refusal.kind == "unavailable":
        return LimitsUnavailable(
            "rate limits and budgets cannot be checked right now (the shared store is "
            "unreachable); try again shortly",
            headers=headers,
        )
    unit = "requests" if refusal.rate_kind == "requests" else "tokens"
    return RateLimited(
        f"rate limit reached for {scope}: {refusal.limit} {unit} per minute, "
        f"{refusal.used} used, {refusal.requested} requested; retry in {retry}s",
        headers=headers,
    )


def _usd(nanos: int) -> str:
    """Dollars with cents, or more digits for sums under a cent."""
    dollars = nanos / 1e9
    return f"{dollars:.2f}" if dollars >= 0.01 or dollars == 0 else f"{dollars:.9f}".rstrip("0")


def _describe(key: str) -> str:
    """`rpm:tenant:7:model:gpt-4o` → `tenant 7 (model gpt-4o)`: no secrets, only ids."""
    parts = key.split(":")
    if len(parts) < 3:
        return "this caller"
    scope = {"key": "API key", "org": "organisation"}.get(parts[1], parts[1])
    text = f"{scope} {parts[2]}"
    if len(parts) >= 5 and parts[3] == "model":
        text += f" (model {':'.join(parts[4:])})"
    return text
