"""The admin API under `/api`: every resource router, in one place."""

from __future__ import annotations

from fastapi import APIRouter

from agentwatch.admin import (
    accounts,
    api_keys,
    audit_routes,
    models,
    organizations,
    providers,
    roles,
    teams,
    tenants,
    usage,
    users,
)

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
):
    router.include_router(resource.router)
