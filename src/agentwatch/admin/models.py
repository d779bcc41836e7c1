"""Model aliases with their routes, and catalogue prices."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/models", tags=["models"])
