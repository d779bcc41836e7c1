"""What a cache hit saved: the answer's usage at the price of the alias's first route."""

from __future__ import annotations

from agentwatch.catalog import Catalog
from agentwatch.providers.base import Usage


def hit_savings(catalog: Catalog, org_id: int, alias_name: str, usage: Usage | None) -> int | None:
    """Nano-dollars, markup included; None when the usage or the price is unknown."""
    if usage is None:
        return None
    alias = catalog.alias(org_id, alias_name)
    route = alias.routes[0] if alias is not None and alias.routes else None
    return catalog.cost_nanousd(org_id, route, alias_name, usage)
