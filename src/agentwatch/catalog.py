"""The in-memory routing table: aliases, their routes and prices, rebuilt from the database."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from agentwatch.crypto import DecryptionError, Keys, decrypt_secret
from agentwatch.db.models import Model, Organization, Provider, ProviderKey
from agentwatch.pricing import Price, price_lookup_names, with_markup
from agentwatch.providers.base import Provider as ProviderAdapter
from agentwatch.providers.base import ProviderConfig, Usage
from agentwatch.providers.registry import (
    UnsupportedProviderType,
    build_provider,
    default_base_url,
    with_default_headers,
)
from agentwatch.routing.breaker import CircuitSettings
from agentwatch.routing.strategies import DEFAULT_STRATEGY
from agentwatch.upstream import UpstreamClient

log = logging.getLogger(__name__)
DEFAULT_TIMEOUT_SECONDS = 600.0
DEFAULT_RETRIES = 2
# The provider's first usable adapter, why there is none, and one adapter per key.
ProviderAdapters = tuple[ProviderAdapter | None, str | None, tuple[ProviderAdapter, ...]]


@dataclass(frozen=True, slots=True)
class Route:
    provider_name: str
    upstream_model: str
    weight: float
    adapter: ProviderAdapter | None
    unavailable_reason: str | None = None
    price: Price | None = None
    order: int = 0  # for the fallback strategy; ties keep the configured order
    # One adapter per upstream key of the provider, `adapter` first: a rate-limited or
    # refused key is rested and the next one used.
    key_adapters: tuple[ProviderAdapter, ...] = ()
    context_window: int | None = None  # lets a too-long request fail over to a larger window
    rpm: int | None = None  # capacity: requests per minute this route may take
    tags: frozenset[str] = frozenset()
    tpm: int | None = None  # capacity: tokens per minute


@dataclass(frozen=True, slots=True)
class Alias:
    name: str
    routes: tuple[Route, ...]
    strategy: str = DEFAULT_STRATEGY
    retries: int = DEFAULT_RETRIES
    circuit: CircuitSettings = field(default_factory=CircuitSettings)
    # The alias's own response-cache setting, (enabled, ttl seconds); None: the org's applies.
    cache: tuple[bool, int] | None = None


@dataclass(slots=True)
class Catalog:
    aliases: dict[tuple[int, str], Alias] = field(default_factory=dict)
    prices: dict[tuple[int, str], Price] = field(default_factory=dict)
    markups: dict[int, float] = field(default_factory=dict)  # org id -> markup_pct
    _price_memo: dict[tuple[int, str | None, str], Price | None] = field(default_factory=dict)

    def alias(self, org_id: int, name: str) -> Alias | None:
        return self.aliases.get((org_id, name))

    def alias_names(self, org_id: int) -> list[str]:
        return sorted(name for org, name in self.aliases if org == org_id)

    def price_for(self, org_id: int, route: Route | None, alias_name: str) -> Price | None:
        """The route's own price, else the upstream model's catalogue price, else the alias's.
        Asked on every request, answered from a memo: the catalogue is rebuilt, not changed."""
        if route is not None and route.price is not None:
            return route.price
        memo_key = (org_id, route.upstream_model if route is not None else None, alias_name)
        if memo_key in self._price_memo:
            return self._price_memo[memo_key]
        price = self._lookup_price(org_id, route, alias_name)
        self._price_memo[memo_key] = price
        return price

    def cost_nanousd(
        self, org_id: int, route: Route | None, alias_name: str, usage: Usage
    ) -> int | None:
        """What the call cost the organisation: the price (see `price_for`) applied to the
        usage, then the organisation's markup. None when no price is known."""
        price = self.price_for(org_id, route, alias_name)
        if price is None:
            return None
        return with_markup(price.cost_nanousd(usage), self.markups.get(org_id))

    def estimate_cost_nanousd(self, org_id: int, alias_name: str, usage: Usage) -> int | None:
        """Before routing: the cost at the dearest of the alias's priced routes (markup
        included), so a reservation covers whichever route serves; None when none is priced."""
        alias = self.alias(org_id, alias_name)
        routes: tuple[Route | None, ...] = alias.routes if alias is not None else (None,)
        costs = [
            cost
            for route in routes
            if (cost := self.cost_nanousd(org_id, route, alias_name, usage)) is not None
        ]
        return max(costs) if costs else None

    def _lookup_price(self, org_id: int, route: Route | None, alias_name: str) -> Price | None:
        names = price_lookup_names(route.upstream_model) if route is not None else []
        for name in [*names, alias_name]:
            price = self.prices.get((org_id, name))
            if price is not None:
                return price
        return None


async def load_catalog(
    session: AsyncSession, encryption_key: Keys, client: UpstreamClient
) -> Catalog:
    providers = (await session.scalars(select(Provider).where(Provider.is_active))).all()
    keys = (await session.scalars(select(ProviderKey).where(ProviderKey.is_active))).all()
    keys_by_provider: dict[int, list[ProviderKey]] = {}
    for key in sorted(keys, key=lambda k: k.id):
        keys_by_provider.setdefault(key.provider_id, []).append(key)
    adapters: dict[tuple[int, str], ProviderAdapters] = {}
    for provider in providers:
        own: list[ProviderKey | None] = [*keys_by_provider.get(provider.id, [])] or [None]
        built = [_adapter(provider, key, encryption_key, client) for key in own]
        usable = [adapter for adapter, _ in built if adapter is not None]
        adapters[(provider.org_id, provider.name)] = (
            (usable[0], None, tuple(usable)) if usable else (None, built[0][1], ())
        )

    catalog = Catalog()
    markups = await session.execute(select(Organization.id, Organization.markup_pct))
    catalog.markups = {org_id: markup for org_id, markup in markups if markup}
    for model in (await session.scalars(select(Model).where(Model.is_active))).all():
        price = _price(model)
        if price is not None:
            catalog.prices[(model.org_id, model.name)] = price
        if model.routes:
            routes = tuple(
                _route(model.org_id, index, raw, adapters, client)
                for index, raw in enumerate(model.routes)
            )
            catalog.aliases[(model.org_id, model.name)] = _alias(model, routes)
    return catalog


def _adapter(
    provider: Provider, key: ProviderKey | None, encryption_key: Keys, client: UpstreamClient
) -> tuple[ProviderAdapter | None, str | None]:
    api_key = None
    if key is not None:
        try:
            api_key = decrypt_secret(key.encrypted_key, encryption_key)
        except DecryptionError:
            reason = (
                f"the key of provider '{provider.name}' does not decrypt with ENCRYPTION_KEY "
                "or ENCRYPTION_KEY_PREVIOUS"
            )
            log.error(reason)
            return None, reason
    base_url = provider.base_url or default_base_url(provider.type)
    if not base_url:
        return None, f"provider '{provider.name}' has no base_url"
    extra = provider.extra if isinstance(provider.extra, dict) else {}
    headers = extra.get("headers") or {}
    max_concurrency = extra.get("max_concurrency")
    max_queue = extra.get("max_queue")
    config = ProviderConfig(
        name=provider.name,
        type=provider.type,
        base_url=base_url,
        api_key=api_key,
        timeout_seconds=provider.timeout_seconds or DEFAULT_TIMEOUT_SECONDS,
        headers=with_default_headers(provider.type, {str(k): str(v) for k, v in headers.items()}),
        max_concurrency=max_concurrency if isinstance(max_concurrency, int) else None,
        # The queue defaults to as many waiting calls as may run.
        max_queue=max_queue if isinstance(max_queue, int) else (max_concurrency or 0),
    )
    try:
        return build_provider(config, client), None
    except UnsupportedProviderType as exc:
        return None, str(exc)


def _alias(model: Model, routes: tuple[Route, ...]) -> Alias:
    routing = model.routing if isinstance(model.routing, dict) else {}
    circuit = routing.get("circuit") if isinstance(routing.get("circuit"), dict) else {}
    assert isinstance(circuit, dict)
    defaults = CircuitSettings()
    return Alias(
        name=model.name,
        routes=routes,
        strategy=str(routing.get("strategy") or DEFAULT_STRATEGY),
        retries=int(routing.get("retries", DEFAULT_RETRIES)),
        circuit=CircuitSettings(
            failure_threshold=int(circuit.get("failure_threshold", defaults.failure_threshold)),
            cooldown_s=float(circuit.get("cooldown_s", defaults.cooldown_s)),
            half_open_probes=int(circuit.get("half_open_probes", defaults.half_open_probes)),
        ),
        cache=_alias_cache(routing.get("cache")),
    )


def _alias_cache(raw: object) -> tuple[bool, int] | None:
    if not isinstance(raw, dict):
        return None
    ttl = raw.get("ttl_seconds")
    return bool(raw.get("enabled", True)), int(ttl) if isinstance(ttl, int) and ttl > 0 else 300


def _route(
    org_id: int,
    index: int,
    raw: object,
    adapters: dict[tuple[int, str], ProviderAdapters],
    client: UpstreamClient,
) -> Route:
    spec = raw if isinstance(raw, dict) else {}
    provider_name = str(spec.get("provider", ""))
    adapter, reason, key_adapters = adapters.get((org_id, provider_name), (None, None, ()))
    if adapter is None and reason is None:
        reason = f"provider '{provider_name}' is not configured"
    timeouts = _route_timeouts(spec)
    if adapter is not None and timeouts:
        # A route's own timeouts need their own adapters; adapters are cheap to build.
        key_adapters = tuple(
            build_provider(_with_timeouts(a.config, timeouts), client) for a in key_adapters
        )
        adapter = key_adapters[0]
    weight = spec.get("weight", 1.0)
    order = spec.get("order")
    return Route(
        provider_name=provider_name,
        upstream_model=str(spec.get("model", "")),
        weight=float(weight) if isinstance(weight, int | float) else 1.0,
        adapter=adapter,
        unavailable_reason=reason,
        price=_route_price(spec.get("price")),
        order=order if isinstance(order, int) else index,
        key_adapters=key_adapters,
        context_window=window if isinstance(window := spec.get("context_window"), int) else None,
        rpm=rpm if isinstance(rpm := spec.get("rpm"), int) else None,
        tpm=tpm if isinstance(tpm := spec.get("tpm"), int) else None,
        tags=frozenset(str(t) for t in tags)
        if isinstance(tags := spec.get("tags"), list)
        else frozenset(),
    )


_TIMEOUT_FIELDS = {
    "timeout_s": "timeout_seconds",
    "connect_timeout_s": "connect_timeout_seconds",
    "first_byte_timeout_s": "first_byte_timeout_seconds",
}


def _with_timeouts(config: ProviderConfig, timeouts: dict[str, float]) -> ProviderConfig:
    return replace(
        config,
        timeout_seconds=timeouts.get("timeout_seconds", config.timeout_seconds),
        connect_timeout_seconds=timeouts.get(
            "connect_timeout_seconds", config.connect_timeout_seconds
        ),
        first_byte_timeout_seconds=timeouts.get(
            "first_byte_timeout_seconds", config.first_byte_timeout_seconds
        ),
    )


def _route_timeouts(spec: dict[str, object]) -> dict[str, float]:
    return {
        field: float(value)
        for key, field in _TIMEOUT_FIELDS.items()
        if isinstance(value := spec.get(key), int | float) and value > 0
    }


def _route_price(raw: object) -> Price | None:
    if not isinstance(raw, dict):
        return None
    return Price(
        input_per_mtok=float(raw.get("input_cost_per_mtok") or 0.0),
        output_per_mtok=float(raw.get("output_cost_per_mtok") or 0.0),
        cached_input_per_mtok=_optional_rate(raw.get("cached_input_cost_per_mtok")),
        cache_write_per_mtok=_optional_rate(raw.get("cache_write_cost_per_mtok")),
        reasoning_per_mtok=_optional_rate(raw.get("reasoning_cost_per_mtok")),
    )


def _optional_rate(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _price(model: Model) -> Price | None:
    if model.input_cost_per_mtok is None and model.output_cost_per_mtok is None:
        return None
    return Price(
        input_per_mtok=model.input_cost_per_mtok or 0.0,
        output_per_mtok=model.output_cost_per_mtok or 0.0,
        cached_input_per_mtok=model.cached_input_cost_per_mtok,
        cache_write_per_mtok=model.cache_write_cost_per_mtok,
        reasoning_per_mtok=model.reasoning_cost_per_mtok,
    )
