"""Typed, bounded field and parameter types shared by the admin API's schemas.

Every bound mirrors the column it lands in, so nothing the API accepts can overflow the
database (an over-long string or a 2**64 id is a 422 here, never a driver error).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

MAX_ID = 2**63 - 1
MAX_INT32 = 2**31 - 1

# Names are single-line labels: no control characters (tabs, newlines, escapes).
NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f]*$"
Name = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=200, pattern=NO_CONTROL_CHARACTERS
    ),
]
Description = Annotated[str, StringConstraints(max_length=1000)]
Email = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        to_lower=True,
        min_length=3,
        max_length=320,
        pattern=r"^[^@\s]+@[^@\s]+$",
    ),
]
Password = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Usd = Annotated[float, Field(ge=0, le=1e12, allow_inf_nan=False)]
PerMinute = Annotated[int, Field(ge=1, le=MAX_INT32)]
Id = Annotated[int, Field(ge=1, le=MAX_ID)]

IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
IdQuery = Annotated[int | None, Query(ge=1, le=MAX_ID)]
Limit = Annotated[int, Query(ge=1, le=500)]
Cursor = Annotated[str | None, Query(max_length=100)]
Search = Annotated[str | None, Query(max_length=200, description="case-insensitive substring")]


class Strict(BaseModel):
    """Request bodies: unknown fields (an `org_id`, say) are refused, not ignored."""

    model_config = ConfigDict(extra="forbid")


def like_pattern(text: str) -> str:
    """A LIKE pattern matching `text` literally (escape character `\\`)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped.lower()}%"


def as_utc(value: datetime) -> datetime:
    """A query's datetime in UTC; one without an offset is taken as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
