"""Admin users of the organisation: create, roles, disable."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/users", tags=["users"])
