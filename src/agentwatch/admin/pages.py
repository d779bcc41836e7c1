"""Cursor pagination for admin listings: ascending ids, opaque cursors."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from fastapi import HTTPException
from pydantic import BaseModel
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from agentwatch.admin.fields import MAX_ID

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    data: list[T]
    next_cursor: str | None


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(str(last_id).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    """The id after which the next page starts; 0 for the first page."""
    if not cursor:
        return 0
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = int(raw.decode("ascii"))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise HTTPException(400, "cursor is not one this API returned") from exc
    if not 0 <= value <= MAX_ID:
        raise HTTPException(400, "cursor is not one this API returned")
    return value


async def fetch_page(
    session: AsyncSession,
    query: Select[Any],
    id_column: InstrumentedAttribute[int],
    limit: int,
    cursor: str | None,
) -> tuple[Sequence[Any], str | None]:
    """One page of `query`'s rows (objects with an `id`) after the cursor, and the next cursor."""
    after = decode_cursor(cursor)
    rows = (
        await session.scalars(query.where(id_column > after).order_by(id_column).limit(limit + 1))
    ).all()
    if len(rows) > limit:
        return rows[:limit], encode_cursor(rows[limit - 1].id)
    return rows, None
