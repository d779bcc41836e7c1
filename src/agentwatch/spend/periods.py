"""Calendar-aligned budget periods in a time zone: the day, the ISO week (from Monday) or the
month that contains a moment, as UTC instants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from agentwatch.spend.specs import Period


def period_bounds(period: Period, timezone: str, now: datetime) -> tuple[datetime, datetime]:
    """[start, end) of the period holding `now` (aware), both in UTC."""
    zone = ZoneInfo(timezone)
    local = now.astimezone(zone)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        start, end = midnight, _add_days(midnight, 1, zone)
    elif period == "weekly":
        start = _add_days(midnight, -local.weekday(), zone)
        end = _add_days(start, 7, zone)
    else:
        start = midnight.replace(day=1)
        year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
        end = start.replace(year=year, month=month)
    return _utc(start, zone), _utc(end, zone)


def _add_days(moment: datetime, days: int, zone: ZoneInfo) -> datetime:
    """Calendar days in local time (a DST day is 23 or 25 hours long)."""
    naive = moment.replace(tzinfo=None) + timedelta(days=days)
    return naive.replace(tzinfo=zone)


def _utc(local: datetime, zone: ZoneInfo) -> datetime:
    # Re-attach the zone so the offset of that local date (not of `now`) applies.
    return local.replace(tzinfo=None).replace(tzinfo=zone).astimezone(UTC)
