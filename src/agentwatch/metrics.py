"""Prometheus metrics on an app-owned registry, read from the live state at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agentwatch.routing.breaker import CircuitState
from agentwatch.state import AppState


class RoutingCollector(Collector):
    """Upstream slots, wait queues and circuits: what the router holds right now."""

    def __init__(self, state: Callable[[], AppState | None]) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        in_flight = GaugeMetricFamily(
            "agentwatch_upstream_in_flight",
            "Calls in flight per provider key with a concurrency limit",
            labels=["provider", "key"],
        )
        queued = GaugeMetricFamily(
            "agentwatch_upstream_queue_depth",
            "Calls waiting for a slot per provider key with a concurrency limit",
            labels=["provider", "key"],
        )
        circuit_open = GaugeMetricFamily(
            "agentwatch_circuit_open",
            "1 while a route's circuit is open or half-open, else 0",
            labels=["model", "provider", "upstream_model"],
        )
        state = self._state()
        if state is not None:
            for (_org, provider, key), limit in state.router.limits.items():
                in_flight.add_metric([provider, str(key)], limit.in_flight)
                queued.add_metric([provider, str(key)], limit.waiting)
            for (_org, alias, provider, model), breaker in state.router.breakers.items():
                tripped = breaker.state is not CircuitState.CLOSED
                circuit_open.add_metric([alias, provider, model], 1.0 if tripped else 0.0)
        yield in_flight
        yield queued
        yield circuit_open


def build_registry(state: Callable[[], AppState | None]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RoutingCollector(state))
    return registry
