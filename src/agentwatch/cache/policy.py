"""When the cache is used: each organisation's setting (its `settings.cache` JSON), loaded
with the routing table so the hot path reads memory only, and the caller's request headers."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from agentwatch.db.models import Organization

log = logging.getLogger(__name__)

DEFAULT_TTL_SECONDS = 300
MAX_TTL_SECONDS = 7 * 24 * 3600


class OrgCacheSettings(BaseModel):
    """`organizations.settings["cache"]`: `{"enabled": true, "ttl_seconds": 300}`."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    enabled: bool = False
    ttl_seconds: int = Field(DEFAULT_TTL_SECONDS, ge=1, le=MAX_TTL_SECONDS)


async def load_org_cache_settings(session: AsyncSession) -> dict[int, OrgCacheSettings]:
    """Organisations with a `cache` object in their settings; the rest use the defaults."""
    found: dict[int, OrgCacheSettings] = {}
    for org_id, settings in await session.execute(select(Organization.id, Organization.settings)):
        raw = settings.get("cache") if isinstance(settings, dict) else None
        if raw is None:
            continue
        try:
            found[org_id] = OrgCacheSettings.model_validate(raw)
        except ValidationError as exc:
            log.warning("ignoring organisation %s's invalid cache settings: %s", org_id, exc)
    return found


@dataclass(frozen=True, slots=True)
class CacheRequest:
    """What the caller's headers ask of the cache."""

    mode: bool | None = None  # x-agentwatch-cache: on (True), off (False), absent (None)
    ttl_seconds: int | None = None  # x-agentwatch-cache-ttl
    no_cache: bool = False  # cache-control: no-cache: do not read, may write
    no_store: bool = False  # cache-control: no-store: neither read nor write

    @classmethod
    def from_headers(
        cls, mode: bytes | None, ttl: bytes | None, cache_control: bytes | None
    ) -> CacheRequest | None:
        """None when the request says nothing about caching (the usual case)."""
        if mode is None and ttl is None and cache_control is None:
            return None
        directives = (
            {d.strip().lower().split(b"=")[0] for d in cache_control.split(b",")}
            if cache_control is not None
            else set()
        )
        parsed_mode = {b"on": True, b"off": False}.get(mode.strip().lower()) if mode else None
        parsed_ttl = int(ttl) if ttl is not None and ttl.strip().isdigit() else None
        if parsed_ttl is not None:
            parsed_ttl = min(max(parsed_ttl, 1), MAX_TTL_SECONDS)
        return cls(
            mode=parsed_mode,
            ttl_seconds=parsed_ttl,
            no_cache=b"no-cache" in directives,
            no_store=b"no-store" in directives,
        )


@dataclass(frozen=True, slots=True)
class CacheDecision:
    ttl_seconds: int
    read: bool  # look the request up
    write: bool  # store the answer


def decide(
    org: OrgCacheSettings | None,
    asked: CacheRequest | None,
    alias: tuple[bool, int] | None = None,
) -> CacheDecision | None:
    """None: the cache is not used for this call (off for the alias, or for the organisation
    when the alias says nothing, and not asked for; turned off by the header; `no-store`).
    An alias's own setting wins over its organisation's; the request's headers over both."""
    if alias is not None:
        org = OrgCacheSettings(enabled=alias[0], ttl_seconds=alias[1])
    if asked is None:
        if org is None or not org.enabled:
            return None
        return CacheDecision(org.ttl_seconds, read=True, write=True)
    enabled = asked.mode if asked.mode is not None else (org is not None and org.enabled)
    if not enabled or asked.no_store:
        return None
    ttl = asked.ttl_seconds or (org.ttl_seconds if org is not None else DEFAULT_TTL_SECONDS)
    return CacheDecision(ttl, read=not asked.no_cache, write=True)
