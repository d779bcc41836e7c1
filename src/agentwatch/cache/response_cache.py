"""The cache the proxy consults: a store plus each organisation's settings."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from agentwatch.cache.entry import CachedAnswer
from agentwatch.cache.policy import (
    CacheDecision,
    CacheRequest,
    OrgCacheSettings,
    decide,
    load_org_cache_settings,
)
from agentwatch.cache.store import CacheStore, MemoryStore


class ResponseCache:
    def __init__(self, store: CacheStore | None = None) -> None:
        self.store: CacheStore = store if store is not None else MemoryStore()
        self.orgs: dict[int, OrgCacheSettings] = {}

    async def reload(self, session: AsyncSession) -> None:
        self.orgs = await load_org_cache_settings(session)

    def decide(
        self, org_id: int, asked: CacheRequest | None, alias: tuple[bool, int] | None = None
    ) -> CacheDecision | None:
        return decide(self.orgs.get(org_id), asked, alias)

    async def get(self, key: str) -> CachedAnswer | None:
        value = await self.store.get(key)
        return None if value is None else CachedAnswer.decode(value)

    async def put(self, key: str, answer: CachedAnswer, ttl_seconds: int) -> None:
        await self.store.set(key, answer.encode(), ttl_seconds)

    async def close(self) -> None:
        await self.store.close()


class CacheTicket:
    """What the cache stage decided for one call: its key, how long an answer it stores
    lives, whether it may store it, and whether the answer came from the cache."""

    __slots__ = ("hit", "key", "ttl_seconds", "write")

    def __init__(self, key: str, ttl_seconds: int, write: bool) -> None:
        self.key = key
        self.ttl_seconds = ttl_seconds
        self.write = write
        self.hit = False

    @property
    def header(self) -> tuple[bytes, bytes]:
        return (b"x-agentwatch-cache", b"hit" if self.hit else b"miss")
