"""Login throttling in memory: failures per client address and per email in a sliding window.

The per-account lock-out that matters across replicas is stored on the user row (see
`accounts`); this in-process layer also slows down guessing at unknown emails and from one
address, without telling an attacker which emails exist.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

WINDOW_SECONDS = 900.0
MAX_FAILURES_PER_ACCOUNT = 5
MAX_FAILURES_PER_ADDRESS = 30
LOCK_SECONDS = 900
_MAX_TRACKED = 50_000


class LoginThrottle:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._by_address: dict[str, deque[float]] = {}
        self._by_email: dict[str, deque[float]] = {}

    def retry_after(self, address: str | None, email: str) -> float | None:
        """Seconds to wait before another attempt, or None when one may be made now."""
        now = self._clock()
        waits = [
            self._wait(self._by_email, email, MAX_FAILURES_PER_ACCOUNT, now),
            self._wait(self._by_address, address or "", MAX_FAILURES_PER_ADDRESS, now),
        ]
        longest = max((w for w in waits if w is not None), default=None)
        return longest

    def failed(self, address: str | None, email: str) -> None:
        now = self._clock()
        for table, key in ((self._by_email, email), (self._by_address, address or "")):
            if len(table) >= _MAX_TRACKED:
                table.clear()
            table.setdefault(key, deque()).append(now)

    def succeeded(self, email: str) -> None:
        self._by_email.pop(email, None)

    @staticmethod
    def _wait(table: dict[str, deque[float]], key: str, limit: int, now: float) -> float | None:
        failures = table.get(key)
        if failures is None:
            return None
        while failures and failures[0] <= now - WINDOW_SECONDS:
            failures.popleft()
        if not failures:
            del table[key]
            return None
        if len(failures) < limit:
            return None
        return failures[-limit] + WINDOW_SECONDS - now
