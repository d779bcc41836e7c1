"""Circuit state shared through Redis, so every replica stops calling a failing route.

Opening a circuit is published as a key that expires with the cool-down; each replica polls
the keys about once a second and opens its own breaker to match. Requests never wait on Redis:
the hot path reads only the local breaker.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)
POLL_SECONDS = 1.0


class SharedCircuits:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = f"{prefix}circuit:"
        self._pending: set[asyncio.Task[None]] = set()

    def publish_open(self, route: tuple[int, str, str, str], cooldown_s: float) -> None:
        """Called from the request path: the write happens in the background."""
        task = asyncio.get_running_loop().create_task(self._write(route, cooldown_s))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _write(self, route: tuple[int, str, str, str], cooldown_s: float) -> None:
        name = self._prefix + orjson.dumps(route).decode()
        until = time.time() + cooldown_s
        try:
            await self._redis.set(name, repr(until), px=max(1, int(cooldown_s * 1000)))
        except RedisError as exc:
            log.warning("could not share an open circuit through Redis: %s", exc)

    async def open_routes(self) -> dict[tuple[int, str, str, str], float]:
        """Routes some replica opened, with the wall-clock time their cool-down ends."""
        names = [name async for name in self._redis.scan_iter(match=self._prefix + "*")]
        if not names:
            return {}
        values = await self._redis.mget(names)
        found: dict[tuple[int, str, str, str], float] = {}
        for name, value in zip(names, values, strict=True):
            if value is None:
                continue
            org, alias, provider, model = orjson.loads(name[len(self._prefix) :])
            found[(int(org), str(alias), str(provider), str(model))] = float(value)
        return found

    async def close(self) -> None:
        for task in list(self._pending):
            await asyncio.gather(task, return_exceptions=True)
        await self._redis.aclose()
