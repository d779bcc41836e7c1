"""Routing strategies: the order in which an alias's routes are tried for one request."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentwatch.catalog import Route
    from agentwatch.pricing import Price

STRATEGIES = ("weighted", "fallback", "least-latency", "lowest-cost")
DEFAULT_STRATEGY = "weighted"


def order_routes(
    strategy: str,
    routes: Sequence[Route],
    *,
    latency_of: Callable[[Route], float | None],
    price_of: Callable[[Route], Price | None],
    rng: random.Random,
) -> list[Route]:
    """First the route to try, then the failover order."""
    if len(routes) == 1:
        return [routes[0]]
    by_order = sorted(routes, key=lambda r: r.order)
    if strategy == "fallback":
        return by_order
    if strategy == "least-latency":
        # Untried routes first (latency unknown) so every route gets measured.
        return sorted(by_order, key=lambda r: latency_of(r) or 0.0)
    if strategy == "lowest-cost":
        return sorted(by_order, key=lambda r: _cost_key(price_of(r)))
    return _weighted(by_order, rng)


def _weighted(routes: list[Route], rng: random.Random) -> list[Route]:
    weights = [max(route.weight, 0.0) for route in routes]
    if len(routes) <= 1 or not any(weights):
        return routes
    first = rng.choices(range(len(routes)), weights=weights)[0]
    rest = [r for i, r in enumerate(routes) if i != first]
    return [routes[first], *sorted(rest, key=lambda r: -r.weight)]


def _cost_key(price: Price | None) -> tuple[int, float]:
    if price is None:
        return (1, 0.0)  # unknown cost: after every priced route
    return (0, price.input_per_mtok + price.output_per_mtok)
