"""Tenant API key → principal, through an in-memory TTL cache so the hot path skips the database.

The admin API calls `forget` / `forget_tenant` after it changes a key or a tenant, so this
process sees the change at once; other replicas see it when their entry expires (30 s at most,
5 s for a refusal).
"""

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
    allowed_models: frozenset[str] | None  # the tenant's list narrowed by the key's; None: all
    # The key's own limits: carried here, not enforced yet (rate limiting comes later).
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    team_id: int | None = None  # the tenant's team, for team-level policies

    def may_use(self, alias: str) -> bool:
        return self.allowed_models is None or alias in self.allowed_models


@dataclass(frozen=True, slots=True)
class _Lookup:
    principal: Principal | None
    tenant_id: int | None  # known when the key exists, even if it is refused
    seconds_left: float | None  # until the key expires, for a key with an expiry


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Principal | None
    tenant_id: int | None
    until: float  # time.monotonic() after which the entry is stale


class TenantAuthenticator:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._cache: dict[str, _Entry] = {}
        self._inflight: dict[str, asyncio.Future[Principal | None]] = {}
        # Bumped by every forget: a lookup that started before it must not cache what it read.
        self._generation = 0

    async def authenticate(self, key: str) -> Principal | None:
        digest = hash_tenant_key(key)
        cached = self._cache.get(digest)
        now = time.monotonic()
        if cached is not None and cached.until > now:
            return cached.principal
        # Concurrent misses for one key share a single lookup.
        pending = self._inflight.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Principal | None] = asyncio.get_running_loop().create_future()
        self._inflight[digest] = future
        generation = self._generation
        try:
            found = await self._lookup(digest)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else needs to
            raise
        finally:
            if self._inflight.get(digest) is future:
                del self._inflight[digest]
        future.set_result(found.principal)
        if generation == self._generation:
            self._remember(digest, found, now)
        return found.principal

    def forget(self, key_hash: str) -> None:
        """Drop one key (by its stored hash) from this process's cache."""
        self._generation += 1
        self._cache.pop(key_hash, None)
        self._inflight.pop(key_hash, None)

    def forget_tenant(self, tenant_id: int) -> None:
        """Drop every cached key of a tenant, refused ones included, from this process's cache."""
        self._generation += 1
        stale = [d for d, entry in self._cache.items() if entry.tenant_id == tenant_id]
        for digest in stale:
            del self._cache[digest]

    def _remember(self, digest: str, found: _Lookup, now: float) -> None:
        if len(self._cache) >= MAX_CACHED_KEYS:
            self._cache.clear()
        ttl = POSITIVE_TTL_SECONDS if found.principal is not None else NEGATIVE_TTL_SECONDS
        if found.seconds_left is not None:
            ttl = min(ttl, found.seconds_left)  # an expiring key is looked up again once expired
        self._cache[digest] = _Entry(found.principal, found.tenant_id, now + ttl)

    async def _lookup(self, digest: str) -> _Lookup:
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(ApiKey, Tenant)
                    .join(Tenant, Tenant.id == ApiKey.tenant_id)
                    .where(ApiKey.key_hash == digest)
                )
            ).first()
        if row is None:
            return _Lookup(None, None, None)
        api_key, tenant = row
        seconds_left = None
        if api_key.expires_at is not None:
            seconds_left = (api_key.expires_at - utcnow()).total_seconds()
        refused = (
            not api_key.is_active
            or api_key.revoked_at is not None
            or not tenant.is_active
            or (seconds_left is not None and seconds_left <= 0)
        )
        if refused:
            return _Lookup(None, tenant.id, None)
        principal = Principal(
            org_id=tenant.org_id,
            tenant_id=tenant.id,
            tenant_name=tenant.name,
            api_key_id=api_key.id,
            allowed_models=narrowed(tenant.allowed_models, api_key.allowed_models),
            rpm_limit=api_key.rpm_limit,
            tpm_limit=api_key.tpm_limit,
            team_id=tenant.team_id,
        )
        return _Lookup(principal, tenant.id, seconds_left)


def narrowed(
    tenant_models: list[object] | None, key_models: list[object] | None
) -> frozenset[str] | None:
    """The aliases a key may use: its tenant's list intersected with its own (None: no limit)."""
    lists = [
        frozenset(str(m) for m in models)
        for models in (tenant_models, key_models)
        if models is not None
    ]
    if not lists:
        return None
    return frozenset.intersection(*lists)
