"""Every organisation's, team's, tenant's and key's limits and budget, loaded from the
database with the routing table (every 10 s, and at once after an admin write), so the hot
path reads memory only."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from pydantic import ValidationError
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from agentwatch.db.models import ApiKey, Organization, Team, Tenant
from agentwatch.spend.specs import MAX_BUDGET_USD, MAX_PER_MINUTE, BudgetSpec, LimitsSpec

log = logging.getLogger(__name__)

Scope = Literal["key", "tenant", "team", "org"]
SCOPES: tuple[Scope, ...] = ("key", "tenant", "team", "org")  # most specific first
_LEGACY_PERIODS = {"1d": "daily", "24h": "daily", "7d": "weekly", "1w": "weekly", "30d": "monthly"}


@dataclass(frozen=True, slots=True)
class Controls:
    limits: LimitsSpec | None
    budget: BudgetSpec | None


def parse_budget_key(key: str) -> tuple[Scope, int, datetime, datetime] | None:
    """budget:<scope>:<id>:<start unix>:<end unix> back into its parts."""
    parts = key.split(":")
    if len(parts) != 5 or parts[0] != "budget":
        return None
    scope, entity, start, end = parts[1], int(parts[2]), int(parts[3]), int(parts[4])
    if scope not in ("key", "tenant", "team", "org"):
        return None
    as_time = datetime.fromtimestamp
    return scope, entity, as_time(start, UTC), as_time(end, UTC)  # type: ignore[return-value]


def budget_key(scope: Scope, entity: int, start: datetime, end: datetime) -> str:
    return f"budget:{scope}:{entity}:{int(start.timestamp())}:{int(end.timestamp())}"


@dataclass(frozen=True, slots=True)
class Webhook:
    """Where an organisation's budget alerts go, and the (encrypted) secret that signs them."""

    url: str
    secret: bytes | None


class ControlBook:
    def __init__(
        self,
        controls: dict[tuple[Scope, int], Controls] | None = None,
        webhooks: dict[int, Webhook] | None = None,
    ) -> None:
        self._controls = controls or {}
        self._webhooks = webhooks or {}

    def webhook(self, org_id: int) -> Webhook | None:
        return self._webhooks.get(org_id)

    def budgets(self) -> list[tuple[Scope, int, BudgetSpec]]:
        """Every budget in the book, for reconciliation."""
        return [
            (scope, entity, controls.budget)
            for (scope, entity), controls in self._controls.items()
            if controls.budget is not None
        ]

    def __bool__(self) -> bool:
        return bool(self._controls)

    def levels(
        self, key_id: int, tenant_id: int, team_id: int | None, org_id: int
    ) -> list[tuple[Scope, int, Controls]]:
        """The controls that apply to a caller, most specific first."""
        found: list[tuple[Scope, int, Controls]] = []
        for scope, entity in zip(SCOPES, (key_id, tenant_id, team_id, org_id), strict=True):
            if entity is None:
                continue
            controls = self._controls.get((scope, entity))
            if controls is not None:
                found.append((scope, entity, controls))
        return found


def parse_limits(value: Any) -> LimitsSpec | None:
    return _parse(LimitsSpec, value)


def parse_budget(value: Any) -> BudgetSpec | None:
    return _parse(BudgetSpec, value)


_Spec = TypeVar("_Spec", LimitsSpec, BudgetSpec)


def _parse(kind: type[_Spec], value: Any) -> _Spec | None:
    if value is None:
        return None
    try:
        return kind.model_validate(value)
    except ValidationError as exc:
        log.warning("ignoring invalid stored %s: %s", kind.__name__, exc)
        return None


_MODELS: tuple[tuple[Scope, Any], ...] = (
    ("org", Organization),
    ("team", Team),
    ("tenant", Tenant),
    ("key", ApiKey),
)


async def load_control_book(session: AsyncSession) -> ControlBook:
    controls: dict[tuple[Scope, int], Controls] = {}
    for scope, model in _MODELS:
        rows = await session.scalars(select(model).where(or_(*_has_controls(model))))
        for row in rows:
            limits = parse_limits(row.limits) or _legacy_limits(row)
            budget = parse_budget(row.budget) or _legacy_budget(row)
            if (limits is not None and not limits.is_empty) or budget is not None:
                controls[(scope, row.id)] = Controls(limits, budget)
    hooks = await session.execute(
        select(
            Organization.id, Organization.alert_webhook_url, Organization.alert_webhook_secret
        ).where(Organization.alert_webhook_url.is_not(None))
    )
    webhooks = {org_id: Webhook(url, secret) for org_id, url, secret in hooks if url}
    return ControlBook(controls, webhooks)


def _has_controls(model: Any) -> list[Any]:
    conditions = [model.limits.is_not(None), model.budget.is_not(None)]
    for legacy in ("rpm_limit", "tpm_limit", "max_budget_usd", "soft_budget_usd"):
        if hasattr(model, legacy):
            conditions.append(getattr(model, legacy).is_not(None))
    return conditions


def _legacy_limits(row: Any) -> LimitsSpec | None:
    """Teams and keys had rpm_limit / tpm_limit columns before `limits`; they still count
    (values past the `limits` bounds are read as the bound)."""
    rpm, tpm = getattr(row, "rpm_limit", None), getattr(row, "tpm_limit", None)
    if rpm is None and tpm is None:
        return None
    return parse_limits({"rpm": _bounded(rpm), "tpm": _bounded(tpm)})


def _legacy_budget(row: Any) -> BudgetSpec | None:
    """Teams had max_budget_usd / soft_budget_usd / budget_duration before `budget`."""
    amount = getattr(row, "max_budget_usd", None)
    if not amount or amount <= 0:
        return None
    amount = min(amount, MAX_BUDGET_USD)
    soft = getattr(row, "soft_budget_usd", None)
    duration = str(getattr(row, "budget_duration", None) or "monthly").lower()
    period = _LEGACY_PERIODS.get(duration, duration)
    return parse_budget(
        {
            "amount_usd": amount,
            "period": period if period in ("daily", "weekly", "monthly") else "monthly",
            "soft_pct": min(100.0, soft / amount * 100) if soft and soft > 0 else None,
        }
    )


def _bounded(value: int | None) -> int | None:
    return None if value is None or value < 1 else min(value, MAX_PER_MINUTE)
