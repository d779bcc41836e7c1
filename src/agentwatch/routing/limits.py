"""Backpressure per provider: at most `max_concurrency` calls in flight and `max_queue`
waiting; beyond that a request is refused at once instead of piling up in memory."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from agentwatch.errors import UpstreamError
from agentwatch.providers.base import ChatStream, Usage


class RouteSaturated(UpstreamError):
    """The gateway's own limit for this provider is reached: try another route, or tell the
    client to come back shortly. Not a provider failure, so no circuit counts it."""

    status = 503
    type = "overloaded_error"
    code = "route_saturated"


@dataclass(slots=True)
class ConcurrencyLimit:
    max_concurrency: int
    max_queue: int
    in_flight: int = 0
    _waiters: deque[asyncio.Future[None]] = field(default_factory=deque)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self, provider: str) -> None:
        if self.in_flight < self.max_concurrency:
            self.in_flight += 1
            return
        if len(self._waiters) >= self.max_queue:
            raise RouteSaturated(
                f"provider '{provider}' is at its limit of {self.max_concurrency} concurrent "
                f"calls with {len(self._waiters)} waiting",
                headers={"retry-after": "1"},
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # a release hands its slot straight to the first waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot arrived as the caller left: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.in_flight -= 1


class HeldStream:
    """A stream that holds its provider's concurrency slot until it is closed."""

    def __init__(self, stream: ChatStream, limit: ConcurrencyLimit) -> None:
        self._stream = stream
        self._limit: ConcurrencyLimit | None = limit

    @property
    def usage(self) -> Usage | None:
        return self._stream.usage

    @property
    def content_events(self) -> int:
        return self._stream.content_events

    @property
    def usage_final(self) -> bool:
        return self._stream.usage_final

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if self._limit is not None:
                self._limit.release()
                self._limit = None
