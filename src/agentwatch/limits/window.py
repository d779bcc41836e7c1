"""The sliding 60-second window of a rate limit: a log of what was admitted, by 10 ms tick.

Each admission is added to its tick (`floor(now * 100)`), and a running total is kept. A tick
counts until all of it has left the window, i.e. until 60 s after the tick ends, so the total
never under-counts the last 60 s: no 60-second window ever holds more than the limit, and
capacity comes back at most 10 ms later than for an exact log. Unlike a fixed window,
nothing resets at a minute boundary. Memory: at most 6,000 ticks per key, each pruned once.
The Redis store runs the same arithmetic in admit.lua.
"""

from __future__ import annotations

import math
from collections import OrderedDict

WINDOW_SECONDS = 60.0
TICKS_PER_SECOND = 100
WINDOW_TICKS = 6_000


def tick_of(now: float) -> int:
    return math.floor(now * TICKS_PER_SECOND)


def leaves_at(tick: int) -> float:
    """When all of `tick` is out of the window: 60 s after the tick ends."""
    return (tick + 1 + WINDOW_TICKS) / TICKS_PER_SECOND


def is_live(tick: int, now: float) -> bool:
    return tick + 1 + WINDOW_TICKS > now * TICKS_PER_SECOND


class SlidingWindow:
    """One key's log, oldest tick first, with the total of what it holds."""

    __slots__ = ("_ticks", "total")

    def __init__(self) -> None:
        self._ticks: OrderedDict[int, int] = OrderedDict()
        self.total = 0

    def __len__(self) -> int:
        return len(self._ticks)

    def prune(self, now: float) -> None:
        while self._ticks:
            tick, amount = next(iter(self._ticks.items()))
            if is_live(tick, now):
                break
            del self._ticks[tick]
            self.total -= amount

    def add(self, tick: int, amount: int) -> None:
        self._ticks[tick] = self._ticks.get(tick, 0) + amount
        self.total += amount

    def correct(self, tick: int, delta: int) -> None:
        """Move a tick still in the window by `delta` (not below zero); a tick that already
        left is not brought back."""
        if tick in self._ticks:
            old = self._ticks[tick]
            self._ticks[tick] = max(0, old + delta)
            self.total += self._ticks[tick] - old

    def seconds_until_fits(self, now: float, amount: int, limit: int) -> float:
        """How long until `amount` fits if nothing else is admitted meanwhile (retry-after):
        until enough of the oldest ticks have left. An amount over the limit never fits: a
        whole window."""
        if amount > limit:
            return WINDOW_SECONDS
        need = self.total + amount - limit
        freed = 0
        for tick, count in self._ticks.items():
            if freed >= need:
                break
            freed += count
            if freed >= need:
                return max(0.0, leaves_at(tick) - now)
        return 0.0

    def seconds_until_empty(self, now: float) -> float:
        """When the newest tick has left: the x-ratelimit-reset-* value."""
        if not self._ticks:
            return 0.0
        return max(0.0, leaves_at(next(reversed(self._ticks))) - now)
