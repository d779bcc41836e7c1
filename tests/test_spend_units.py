"""Spend-control pieces on their own: calendar periods, estimates, keys and formats."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from agentwatch.proxy.limit_stage import end_user_of
from agentwatch.spend.book import _legacy_budget, _legacy_limits, budget_key, parse_budget_key
from agentwatch.spend.estimate import DEFAULT_COMPLETION_TOKENS, completion_tokens
from agentwatch.spend.gate import duration
from agentwatch.spend.periods import period_bounds
from agentwatch.spend.specs import BudgetSpec, LimitsSpec


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("period", "zone", "now", "start", "end"),
    [
        ("daily", "UTC", utc(2026, 11, 28, 23, 59), utc(2026, 11, 28), utc(2026, 11, 29)),
        # 23:30 UTC is already the next day in Paris (UTC+1 in winter).
        ("daily", "Europe/Paris", utc(2026, 11, 28, 23, 30),
         utc(2026, 11, 28, 23), utc(2026, 11, 29, 23)),
        # The spring-forward day in Paris is 23 hours long.
        ("daily", "Europe/Paris", utc(2026, 3, 29, 12), utc(2026, 3, 28, 23), utc(2026, 3, 29, 22)),
        # Weeks start on Monday: 2026-11-28 is a Saturday.
        ("weekly", "UTC", utc(2026, 11, 28, 8), utc(2026, 11, 23), utc(2026, 11, 30)),
        ("monthly", "UTC", utc(2026, 12, 31, 23), utc(2026, 12, 1), utc(2027, 1, 1)),
        ("monthly", "America/New_York", utc(2026, 3, 1, 3), utc(2026, 2, 1, 5), utc(2026, 3, 1, 5)),
    ],
)  # fmt: skip
def test_periods_are_calendar_aligned_in_their_zone(
    period: str, zone: str, now: datetime, start: datetime, end: datetime
) -> None:
    assert period_bounds(period, zone, now) == (start, end)  # type: ignore[arg-type]


def test_completion_estimates_follow_each_api() -> None:
    assert completion_tokens("/v1/chat/completions", {"max_tokens": 50}) == 50
    assert completion_tokens("/v1/chat/completions", {"max_completion_tokens": 70}) == 70
    assert completion_tokens("/v1/chat/completions", {"max_tokens": 10, "n": 3}) == 30
    assert completion_tokens("/v1/responses", {"max_output_tokens": 9}) == 9
    assert completion_tokens("/v1/messages", {"max_tokens": 12}) == 12
    assert completion_tokens("/v1/embeddings", {"max_tokens": 12}) == 0
    assert completion_tokens("/v1/chat/completions", {}) == DEFAULT_COMPLETION_TOKENS
    assert completion_tokens("/v1/chat/completions", {"max_tokens": True}) == (
        DEFAULT_COMPLETION_TOKENS
    )


def test_budget_keys_round_trip() -> None:
    start, end = utc(2026, 11, 1), utc(2026, 12, 1)
    key = budget_key("team", 42, start, end)
    assert parse_budget_key(key) == ("team", 42, start, end)
    assert parse_budget_key("rpm:team:42") is None
    assert parse_budget_key("budget:planet:1:0:1") is None


def test_legacy_team_and_key_columns_still_count() -> None:
    team = SimpleNamespace(
        rpm_limit=100, tpm_limit=None, max_budget_usd=50.0, soft_budget_usd=40.0,
        budget_duration="30d",
    )  # fmt: skip
    limits = _legacy_limits(team)
    assert limits is not None and limits.rpm == 100
    budget = _legacy_budget(team)
    assert budget is not None
    assert (budget.amount_usd, budget.period, budget.soft_pct) == (50.0, "monthly", 80.0)
    assert _legacy_budget(SimpleNamespace(max_budget_usd=None)) is None
    assert _legacy_limits(SimpleNamespace(rpm_limit=None, tpm_limit=None)) is None


def test_specs_refuse_nonsense() -> None:
    with pytest.raises(ValidationError):
        LimitsSpec.model_validate({"rpm": 0})
    with pytest.raises(ValidationError):
        BudgetSpec.model_validate({"amount_usd": float("inf")})
    with pytest.raises(ValidationError, match="time zone"):
        BudgetSpec.model_validate({"amount_usd": 1, "timezone": "Nowhere/Else"})
    assert LimitsSpec().is_empty and not LimitsSpec(per_user={"rpm": 1}).is_empty  # type: ignore[arg-type]
    assert BudgetSpec(amount_usd=1.5).limit_nanousd == 1_500_000_000


def test_reset_durations_read_like_openais() -> None:
    assert duration(0.5) == "0.5s"
    assert duration(12) == "12s"
    assert duration(360) == "6m0s"
    assert duration(-3) == "0s"


def test_end_users_come_from_the_body_and_are_bounded() -> None:
    assert end_user_of({"user": "alice"}) == "alice"
    assert end_user_of({"metadata": {"user_id": "u-7"}}) == "u-7"
    assert end_user_of({"user": ""}) is None
    assert end_user_of({"user": "x" * 300}) is None
    assert end_user_of({"user": 5}) is None
