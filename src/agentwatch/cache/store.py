"""Where entries live: an in-process LRU bounded by bytes, or Redis shared by replicas.

Both expire entries after their TTL. A store never raises into a request: an unreachable
Redis reads as a miss and a write that fails is dropped (logged once per outage).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 64 * 1024 * 1024


class CacheStore(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None: ...

    async def close(self) -> None: ...


class MemoryStore:
    """Least recently used first out once the values pass `max_bytes`; expired entries are
    dropped when read (and pushed out by newer ones like any other)."""

    def __init__(
        self,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if self._clock() >= expires:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        if len(value) > self.max_bytes or ttl_seconds <= 0:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (self._clock() + ttl_seconds, value)
        self.bytes += len(value)
        while self.bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)

    def _drop(self, key: str) -> None:
        _, value = self._entries.pop(key)
        self.bytes -= len(value)

    async def close(self) -> None:
        self._entries.clear()
        self.bytes = 0


class RedisStore:
    """Keys `<prefix>cache:<org>:<sha256>`, expiry by SET EX."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = f"{prefix}cache:"
        self._failing = False

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self._redis.get(self._prefix + key)
        except (RedisError, OSError) as exc:
            self._failed("read", exc)
            return None
        self._failing = False
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        if ttl_seconds <= 0:
            return
        try:
            await self._redis.set(self._prefix + key, value, ex=ttl_seconds)
        except (RedisError, OSError) as exc:
            self._failed("write", exc)
            return
        self._failing = False

    def _failed(self, what: str, exc: Exception) -> None:
        # The call goes on as a miss; one warning per outage, not one per request.
        if not self._failing:
            log.warning("response cache %s failed, serving as a miss: %s", what, exc)
        self._failing = True

    async def close(self) -> None:
        await self._redis.aclose()
