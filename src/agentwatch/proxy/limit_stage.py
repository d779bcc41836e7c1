"""The limit stage of the `/v1` pipeline: admit a call against its key's, tenant's, team's
and organisation's limits and budgets before it goes upstream; settle it when it ends."""

from __future__ import annotations

import logging
from typing import Any

from agentwatch.proxy.call import Call
from agentwatch.spend.gate import Ticket
from agentwatch.state import AppState
from agentwatch.usage.recorder import UsageEvent

log = logging.getLogger(__name__)


async def admit_call(
    state: AppState, call: Call, endpoint: str, payload: dict[str, Any]
) -> Ticket | None:
    """Raises the 429 (or 503) when a limit or budget refuses the call."""
    principal = call.principal
    assert principal is not None
    if not state.controls:
        return None
    return await state.spend.admit(
        state.controls,
        state.catalog,
        principal,
        endpoint,
        call.model,
        payload,
        end_user=call.end_user or end_user_of(payload),
    )


def end_user_of(payload: dict[str, Any]) -> str | None:
    """The end user a request says it acts for: OpenAI's `user`, Anthropic's
    `metadata.user_id`; bounded, so a client cannot mint unbounded counter keys cheaply."""
    user = payload.get("user")
    if not isinstance(user, str):
        metadata = payload.get("metadata")
        user = metadata.get("user_id") if isinstance(metadata, dict) else None
    if isinstance(user, str) and 0 < len(user) <= MAX_END_USER:
        return user
    return None


MAX_END_USER = 256


async def settle_call(state: AppState, call: Call, event: UsageEvent | None) -> None:
    """Settle to what the call really used; a call that never reached an upstream cost
    nothing. A failure here is logged, never turned into an error for a finished call."""
    ticket = call.spend
    if ticket is None:
        return
    tokens: int | None = None
    cost: int | None = None
    if call.attempts == 0:
        tokens, cost = 0, 0
    elif event is not None:
        cost = event.cost_nanousd
        if event.prompt_tokens is not None and event.completion_tokens is not None:
            tokens = event.prompt_tokens + event.completion_tokens
    try:
        await state.spend.settle(ticket, tokens=tokens, cost_nanousd=cost)
    except Exception:  # a store outage must not fail a call that already ended
        log.exception("settling the limits of %s failed", call.request_id)
        return
    if ticket.holds and cost and call.principal is not None:
        org_id = call.principal.org_id
        webhook = state.controls.webhook(org_id)
        state.alerts.check_soon(state.spend.store, org_id, ticket.holds, webhook)
