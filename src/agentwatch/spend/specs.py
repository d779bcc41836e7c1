"""The shape of limits and budgets, shared by the config file, the admin API and the database
(`limits` / `budget` JSON columns on organisations, teams, tenants and API keys)."""

from __future__ import annotations

from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

Period = Literal["daily", "weekly", "monthly"]
MAX_PER_MINUTE = 10**9
MAX_BUDGET_USD = 10**9


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelLimits(_Strict):
    """Limits for one model alias, counted apart from (and on top of) the general ones."""

    rpm: int | None = Field(default=None, ge=1, le=MAX_PER_MINUTE)
    tpm: int | None = Field(default=None, ge=1, le=MAX_PER_MINUTE)
    max_parallel: int | None = Field(default=None, ge=1, le=1_000_000)


class LimitsSpec(ModelLimits):
    """Requests and tokens per minute (a sliding 60-second window) and calls in flight."""

    models: dict[str, ModelLimits] = Field(default_factory=dict, max_length=500)
    # Each end user (the request's `user`, Anthropic's `metadata.user_id`, or the
    # x-agentwatch-user header) gets these limits of its own.
    per_user: ModelLimits | None = None

    @property
    def is_empty(self) -> bool:
        groups = [self, *self.models.values(), *([self.per_user] if self.per_user else [])]
        return not any(g.rpm or g.tpm or g.max_parallel for g in groups)


class BudgetSpec(_Strict):
    """Money per calendar period in a time zone; `soft_pct` alerts, `amount_usd` blocks
    (unless `hard` is false: then the budget only alerts)."""

    amount_usd: float = Field(gt=0, le=MAX_BUDGET_USD, allow_inf_nan=False)
    period: Period = "monthly"
    soft_pct: float | None = Field(default=None, gt=0, le=100, allow_inf_nan=False)
    timezone: str = Field(default="UTC", max_length=64)
    hard: bool = True

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown time zone {name!r} (use an IANA name like Europe/Paris)"
            ) from exc
        return name

    @property
    def limit_nanousd(self) -> int:
        return round(self.amount_usd * 1e9)


def stored(spec: BaseModel | None) -> dict[str, object] | None:
    """A spec as its JSON column value (the fields that are set), or None."""
    return None if spec is None else spec.model_dump(exclude_none=True, mode="json")
