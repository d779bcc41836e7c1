"""The response cache a gateway process runs with: Redis when REDIS_URL is set (shared by
replicas), otherwise the in-process LRU."""

from __future__ import annotations

from redis.asyncio import Redis

from agentwatch.cache.response_cache import ResponseCache
from agentwatch.cache.store import MemoryStore, RedisStore
from agentwatch.settings import Settings

REDIS_TIMEOUT_SECONDS = 0.5  # a slow Redis costs a miss, not a stalled call


def build_response_cache(settings: Settings) -> ResponseCache:
    if settings.redis_url is not None:
        redis = Redis.from_url(
            settings.redis_url,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        )
        return ResponseCache(RedisStore(redis, settings.redis_prefix))
    return ResponseCache(MemoryStore(settings.cache_max_bytes))
