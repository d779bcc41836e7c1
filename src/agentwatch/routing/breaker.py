"""Per-route circuit breakers: stop sending traffic to a route that keeps failing, then probe it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum


class CircuitState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class CircuitSettings:
    failure_threshold: int = 5  # consecutive failures that open the circuit
    cooldown_s: float = 30.0  # how long it stays open before probes are let through
    half_open_probes: int = 1  # requests allowed through at once while half-open


@dataclass(slots=True)
class CircuitBreaker:
    settings: CircuitSettings
    state: CircuitState = CircuitState.CLOSED
    consecutive_failures: int = 0
    opened_at: float = 0.0
    probes_in_flight: int = 0
    clock: object = field(default=time.monotonic, repr=False)

    def _now(self) -> float:
        now: float = self.clock()  # type: ignore[operator]
        return now

    def allows(self) -> bool:
        """Whether a request may go to this route now (a half-open probe counts as taken)."""
        if self.state is CircuitState.OPEN:
            if self._now() < self.opened_at + self.settings.cooldown_s:
                return False
            self.state = CircuitState.HALF_OPEN
            self.probes_in_flight = 0
        if self.state is CircuitState.HALF_OPEN:
            if self.probes_in_flight >= self.settings.half_open_probes:
                return False
            self.probes_in_flight += 1
        return True

    def would_allow(self) -> bool:
        """`allows()` without taking a probe: for planning."""
        if self.state is CircuitState.CLOSED:
            return True
        if self.state is CircuitState.OPEN:
            return self._now() >= self.opened_at + self.settings.cooldown_s
        return self.probes_in_flight < self.settings.half_open_probes

    def seconds_until_probe(self) -> float:
        if self.state is not CircuitState.OPEN:
            return 0.0
        return max(0.0, self.opened_at + self.settings.cooldown_s - self._now())

    def release_probe(self) -> None:
        if self.state is CircuitState.HALF_OPEN and self.probes_in_flight > 0:
            self.probes_in_flight -= 1

    def record_success(self) -> None:
        self.state = CircuitState.CLOSED
        self.consecutive_failures = 0
        self.probes_in_flight = 0

    def record_failure(self) -> None:
        if self.state is CircuitState.HALF_OPEN:
            self._open()
            return
        self.consecutive_failures += 1
        if self.consecutive_failures >= self.settings.failure_threshold:
            self._open()

    def force_open(self, seconds: float) -> None:
        """Open for `seconds` from now, because another replica saw the route fail."""
        if self.state is CircuitState.OPEN and self.seconds_until_probe() >= seconds:
            return
        self.state = CircuitState.OPEN
        self.opened_at = self._now() - self.settings.cooldown_s + seconds
        self.probes_in_flight = 0

    def _open(self) -> None:
        self.state = CircuitState.OPEN
        self.opened_at = self._now()
        self.probes_in_flight = 0
