"""Organisations: the caller's own, or every one for a super admin."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/organizations", tags=["organizations"])
