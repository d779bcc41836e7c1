"""Custom org roles: named sets of permissions."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/roles", tags=["roles"])
