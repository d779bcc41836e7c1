"""Tenant API key → principal, through an in-memory TTL cache so the hot path skips the database."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agentwatch.crypto import hash_tenant_key
from agentwatch.db.models import ApiKey, Tenant, utcnow

POSITIVE_TTL_SECONDS = 30.0
NEGATIVE_TTL_SECONDS = 5.0
MAX_CACHED_KEYS = 100_000


@dataclass(frozen=True, slots=True)
class Principal:
    org_id: int
    tenant_id: int
    tenant_name: str
    api_key_id: int
    allowed_models: frozenset[str] | None

    def may_use(self, alias: str) -> bool:
        return self.allowed_models is None or alias in self.allowed_models


class TenantAuthenticator:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._cache: dict[str, tuple[Principal | None, float]] = {}
        self._inflight: dict[str, asyncio.Future[Principal | None]] = {}

    async def authenticate(self, key: str) -> Principal | None:
        digest = hash_tenant_key(key)
        cached = self._cache.get(digest)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        # Concurrent misses for one key share a single lookup.
        pending = self._inflight.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Principal | None] = asyncio.get_running_loop().create_future()
        self._inflight[digest] = future
        try:
            principal = await self._lookup(digest)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else needs to
            raise
        finally:
            self._inflight.pop(digest, None)
        future.set_result(principal)
        self._remember(digest, principal, now)
        return principal

    def _remember(self, digest: str, principal: Principal | None, now: float) -> None:
        if len(self._cache) >= MAX_CACHED_KEYS:
            self._cache.clear()
        ttl = POSITIVE_TTL_SECONDS if principal is not None else NEGATIVE_TTL_SECONDS
        self._cache[digest] = (principal, now + ttl)

    async def _lookup(self, digest: str) -> Principal | None:
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(ApiKey, Tenant)
                    .join(Tenant, Tenant.id == ApiKey.tenant_id)
                    .where(ApiKey.key_hash == digest, ApiKey.is_active, Tenant.is_active)
                )
            ).first()
        if row is None:
            return None
        api_key, tenant = row
        if api_key.expires_at is not None and api_key.expires_at <= utcnow():
            return None
        allowed = tenant.allowed_models
        return Principal(
            org_id=tenant.org_id,
            tenant_id=tenant.id,
            tenant_name=tenant.name,
            api_key_id=api_key.id,
            allowed_models=frozenset(str(m) for m in allowed) if allowed is not None else None,
        )
