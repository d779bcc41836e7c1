"""Upstream providers and their (write-only) keys."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/providers", tags=["providers"])
