"""Small helpers every admin resource uses: org-scoped lookups, patches, conflicts."""

from __future__ import annotations

from collections.abc import Set
from typing import Any, TypeVar

from fastapi import HTTPException
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")


async def get_in_org(session: AsyncSession, model: type[T], row_id: int, org_id: int) -> T:
    """The row with `row_id` in `org_id`; 404 otherwise, so other organisations' ids look absent."""
    table: Any = model  # every org-scoped model has `id` and `org_id`
    row: T | None = await session.scalar(
        select(table).where(table.id == row_id, table.org_id == org_id)
    )
    if row is None:
        raise HTTPException(404, f"no such {_label(model)}")
    return row


def apply_patch(
    row: object, patch: BaseModel, exclude: Set[str] = frozenset()
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Set the fields the client sent (null clears), but those in `exclude` (the caller's to
    handle); returns (before, after) of the fields set."""
    changes = patch.model_dump(exclude_unset=True, exclude=set(exclude))
    before = {name: getattr(row, name) for name in changes}
    for name, value in changes.items():
        setattr(row, name, value)
    return _plain(before), _plain(changes)


async def flush_or_conflict(session: AsyncSession, conflict: str) -> None:
    """Write pending changes now, so a unique-constraint clash (a duplicate name, a race)
    becomes a 409 before the audit row is appended; then audit, then commit."""
    try:
        await session.flush()
    except IntegrityError as exc:
        await session.rollback()
        raise HTTPException(409, conflict) from exc


def summary(row: object, fields: tuple[str, ...]) -> dict[str, Any]:
    """The named fields of a row, as an audit summary (callers never name secret fields)."""
    return _plain({name: getattr(row, name) for name in fields})


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in values.items()}


def _label(model: type[Any]) -> str:
    return str(getattr(model, "__tablename__", model.__name__)).rstrip("s").replace("_", " ")
