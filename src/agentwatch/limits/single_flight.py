"""Concurrent first uses of a budget key share one ledger load instead of each summing it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class SingleFlight:
    """`run(key, work)`: while a run for `key` is in progress, later callers wait for it
    instead of starting their own. A failed run is not remembered: the next call retries."""

    def __init__(self) -> None:
        self._running: dict[str, asyncio.Task[None]] = {}

    async def run(self, key: str, work: Callable[[], Awaitable[None]]) -> None:
        task = self._running.get(key)
        if task is None:
            task = asyncio.ensure_future(work())
            self._running[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        # Shielded: one caller giving up (client gone) must not cancel the others' load.
        await asyncio.shield(task)

    def _finished(self, key: str, task: asyncio.Task[None]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # every waiter sees it; this only marks it retrieved
