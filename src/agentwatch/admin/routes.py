"""The admin API under `/api`: every resource router, in one place."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from agentwatch.admin import (
    accounts,
    api_keys,
    audit_routes,
    conversations,
    dlp,
    models,
    organizations,
    providers,
    roles,
    teams,
    tenants,
    usage,
    users,
)


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every `/api` error: a sentence, or for a malformed request the list of issues."""

    detail: str | list[ValidationIssue]


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "malformed input"),
        (401, "no valid token"),
        (403, "the role does not allow it"),
        (404, "no such row in the organisation"),
        (409, "a duplicate or a guard"),
        (413, "body over 1 MiB"),
        # Replaces FastAPI's own 422 entry: refusals such as the password policy's are a sentence.
        (422, "invalid values (never echoed back)"),
        (429, "too many failed logins"),
    )
}

router = APIRouter()
for resource in (
    accounts,
    organizations,
    users,
    roles,
    teams,
    tenants,
    api_keys,
    providers,
    models,
    usage,
    audit_routes,
    dlp,
    conversations,
):
    router.include_router(resource.router, responses=_ERRORS)
