"""`limits` and `budget` on organisations, teams, tenants and API keys: how the admin API
reads, validates, authorises and audits them (the shapes live in agentwatch.spend.specs)."""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from pydantic import BaseModel, Field, JsonValue

from agentwatch.admin.deps import AdminContext
from agentwatch.spend.specs import stored

CONTROL_FIELDS = ("limits", "budget")

# As stored (the fields that are set), or null: none at this level. Not re-validated on the
# way out, so a row stays readable (and fixable) whatever a later release accepts.
StoredLimits = Annotated[
    dict[str, JsonValue] | None,
    Field(description="rpm, tpm, max_parallel and per-model `models` limits; null: none"),
]
StoredBudget = Annotated[
    dict[str, JsonValue] | None,
    Field(description="amount_usd, period, soft_pct, timezone, hard; null: none"),
]


class ControlHolder(Protocol):
    limits: dict[str, Any] | None
    budget: dict[str, Any] | None


def new_controls(ctx: AdminContext, body: BaseModel) -> dict[str, Any]:
    """Column values for a row being created; setting either needs `billing:write`."""
    values = {name: stored(getattr(body, name)) for name in CONTROL_FIELDS}
    if any(value is not None for value in values.values()):
        ctx.authorize("billing:write")
    return values


def patch_controls(
    ctx: AdminContext,
    row: ControlHolder,
    body: BaseModel,
    before: dict[str, Any],
    after: dict[str, Any],
) -> bool:
    """Apply the `limits` / `budget` a PATCH sent (null clears), recording the change; True
    when something changed. A change needs `billing:write` organisation-wide on top of the
    row's own write permission: money and capacity are the organisation's to hand out."""
    changed = False
    for name in (n for n in CONTROL_FIELDS if n in body.model_fields_set):
        value = stored(getattr(body, name))
        if value == getattr(row, name):
            continue
        ctx.authorize("billing:write")
        before[name] = getattr(row, name)
        after[name] = value
        setattr(row, name, value)
        changed = True
    return changed
