"""Tenant API key → principal, through an in-memory TTL cache so the hot path skips the database.

The admin API calls `forget` / `forget_tenant` after it changes a key or a tenant, so this
process sees the change at once; other replicas see it when their entry expires (30 s at most,
5 s for a refusal). While the database cannot be reached, a key seen in the last hour keeps its
last known answer (stale-if-error) and a key never seen gets 503.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agentwatch.crypto import hash_tenant_key
from agentwatch.db.models import ApiKey, Tenant, utcnow
from agentwatch.errors import GatewayError

log = logging.getLogger(__name__)
POSITIVE_TTL_SECONDS = 30.0
NEGATIVE_TTL_SECONDS = 5.0
# How long after its last successful lookup a key's answer may still be served while the
# database is unreachable, and how long such an answer is reused before the next try.
STALE_IF_ERROR_SECONDS = 3600.0
RETRY_AFTER_ERROR_SECONDS = 1.0
MAX_CACHED_KEYS = 100_000
# What an unreachable database raises: asyncpg's refused connections and resets come through
# as OSError, a server shutting down or starting up as a bare DBAPIError, SQLite's lock as
# OperationalError (a DBAPIError), an exhausted pool as SQLAlchemy's TimeoutError.
DATABASE_UNREACHABLE = (DBAPIError, PoolTimeout, OSError)


class KeyStoreUnavailable(GatewayError):
    """The key is not in the cache and the database cannot be asked: try again shortly."""

    status = 503
    type = "server_error"
    code = "service_unavailable"

    def __init__(self) -> None:
        super().__init__(
            "the gateway cannot check this API key right now (its database is unreachable); "
            "retry shortly",
            headers={"retry-after": "1"},
        )


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
    until: float  # clock time after which the entry is looked up again
    stale_until: float  # clock time after which it may not stand in for a failed lookup


class TenantAuthenticator:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._cache: dict[str, _Entry] = {}
        self._inflight: dict[str, asyncio.Future[Principal | None]] = {}
        # Bumped by every forget: a lookup that started before it must not cache what it read.
        self._generation = 0

    async def authenticate(self, key: str) -> Principal | None:
        """The key's principal, None for a refused key; raises `KeyStoreUnavailable` when the
        database cannot be reached and the key has no recent answer to fall back on."""
        digest = hash_tenant_key(key)
        cached = self._cache.get(digest)
        now = self._clock()
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
            try:
                found = await self._lookup(digest)
            except DATABASE_UNREACHABLE as exc:
                principal = self._stale_answer(digest, cached, now, generation, exc)
                future.set_result(principal)
                return principal
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

    def _stale_answer(
        self,
        digest: str,
        cached: _Entry | None,
        now: float,
        generation: int,
        error: BaseException,
    ) -> Principal | None:
        """The last answer for a key while its lookup fails, if it is recent enough and no
        admin change dropped it meanwhile; reused for a second before the next try."""
        if cached is None or cached.stale_until <= now or generation != self._generation:
            log.warning("API key lookup failed, nothing cached to fall back on: %s", error)
            raise KeyStoreUnavailable() from error
        log.warning("API key lookup failed, serving the answer cached before: %s", error)
        retry_at = min(now + RETRY_AFTER_ERROR_SECONDS, cached.stale_until)
        self._cache[digest] = replace(cached, until=retry_at)
        return cached.principal

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
        stale = STALE_IF_ERROR_SECONDS
        if found.seconds_left is not None:
            # An expiring key is looked up again once expired, and never served past it.
            ttl = min(ttl, found.seconds_left)
            stale = min(stale, found.seconds_left)
        self._cache[digest] = _Entry(found.principal, found.tenant_id, now + ttl, now + stale)

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
