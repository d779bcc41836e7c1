"""Upstream providers: type, base URL, timeouts, headers, concurrency, and their keys
(write-only: see agentwatch.admin.provider_keys)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import AfterValidator, BaseModel, Field, StringConstraints
from sqlalchemy import func, select

from agentwatch.admin import provider_keys
from agentwatch.admin.catalog_refresh import refresh_routing_table
from agentwatch.admin.crud import flush_or_conflict, get_in_org, summary
from agentwatch.admin.deps import AdminContext
from agentwatch.admin.fields import Cursor, IdPath, Limit, Name, Search, Strict, like_pattern
from agentwatch.admin.pages import Page, fetch_page
from agentwatch.admin.provider_keys import (
    ProviderKeyOut,
    ProvidersRead,
    ProvidersWrite,
    SecretKey,
    add_provider_key,
    keys_of,
)
from agentwatch.config_file import ProviderTypeName, mask_key
from agentwatch.db.models import Model, Provider, ProviderKey

router = APIRouter(prefix="/api/providers", tags=["providers"])
router.include_router(provider_keys.router)

# Credentials belong in provider keys (encrypted, never shown), not in plain headers.
_CREDENTIAL_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "x-goog-api-key", "cookie"}
)
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "host", "connection"})
_EXTRA_FIELDS = ("headers", "max_concurrency", "max_queue")
_AUDITED = ("name", "type", "base_url", "timeout_seconds", "is_active")


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    _ = parts.port  # raises ValueError on a port that is not a number in range
    return value


def _plain_headers(headers: dict[str, str]) -> dict[str, str]:
    for name in headers:
        if name.lower() in _CREDENTIAL_HEADERS:
            raise ValueError(f"{name} carries a credential: add it as a provider key instead")
        if name.lower() in _FRAMING_HEADERS:
            raise ValueError(f"{name} is set by the gateway itself")
    return headers


BaseUrl = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=2000, pattern=r"^[!-~]+$"),
    AfterValidator(_http_url),
]
TimeoutSeconds = Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)]
HeaderName = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
]
HeaderValue = Annotated[str, StringConstraints(max_length=2000, pattern=r"^[\t -~]*$")]
Headers = Annotated[
    dict[HeaderName, HeaderValue], Field(max_length=50), AfterValidator(_plain_headers)
]
Concurrency = Annotated[int, Field(ge=1, le=100_000)]
QueueLength = Annotated[int, Field(ge=0, le=100_000)]


class ProviderCreate(Strict):
    name: Name
    type: ProviderTypeName
    base_url: BaseUrl | None = None
    timeout_seconds: TimeoutSeconds | None = None
    headers: Headers = Field(default_factory=dict)
    max_concurrency: Concurrency | None = None
    max_queue: QueueLength | None = None
    is_active: bool = True
    api_key: SecretKey | None = Field(default=None, description="the first key (write-only)")


class ProviderUpdate(Strict):
    name: Name | None = None
    type: ProviderTypeName | None = None
    base_url: BaseUrl | None = None
    timeout_seconds: TimeoutSeconds | None = None
    headers: Headers | None = None
    max_concurrency: Concurrency | None = None
    max_queue: QueueLength | None = None
    is_active: bool | None = None


class ProviderOut(BaseModel):
    id: int
    name: str
    type: str
    base_url: str | None
    timeout_seconds: float | None
    headers: dict[str, str]
    max_concurrency: int | None
    max_queue: int | None
    is_active: bool
    created_at: datetime
    keys: list[ProviderKeyOut]


@router.get("", response_model=Page[ProviderOut])
async def list_providers(
    ctx: ProvidersRead,
    search: Search = None,
    type: Annotated[ProviderTypeName | None, Query()] = None,
    is_active: bool | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[ProviderOut]:
    query = select(Provider).where(Provider.org_id == ctx.org_id)
    if search:
        query = query.where(func.lower(Provider.name).like(like_pattern(search), escape="\\"))
    if type is not None:
        query = query.where(Provider.type == type)
    if is_active is not None:
        query = query.where(Provider.is_active == is_active)
    rows, next_cursor = await fetch_page(ctx.session, query, Provider.id, limit, cursor)
    keys = await keys_of(ctx, [row.id for row in rows])
    return Page[ProviderOut](
        data=[_out(row, keys.get(row.id, [])) for row in rows], next_cursor=next_cursor
    )


@router.post("", response_model=ProviderOut, status_code=201)
async def create_provider(body: ProviderCreate, ctx: ProvidersWrite) -> ProviderOut:
    provider = Provider(
        org_id=ctx.org_id,
        name=body.name,
        type=body.type,
        base_url=body.base_url,
        timeout_seconds=body.timeout_seconds,
        extra=_extra(body.headers, body.max_concurrency, body.max_queue),
        is_active=body.is_active,
    )
    ctx.session.add(provider)
    await flush_or_conflict(ctx.session, f"a provider named {body.name!r} already exists")
    await ctx.audit("provider.created", f"provider:{provider.id}", after=_summary(provider))
    keys = []
    if body.api_key is not None:
        keys.append(await add_provider_key(ctx, provider, "default", body.api_key))
    await ctx.session.commit()
    await refresh_routing_table(ctx)
    return _out(provider, keys)


@router.get("/{provider_id}", response_model=ProviderOut)
async def get_provider(provider_id: IdPath, ctx: ProvidersRead) -> ProviderOut:
    provider = await get_in_org(ctx.session, Provider, provider_id, ctx.org_id)
    return _out(provider, (await keys_of(ctx, [provider.id])).get(provider.id, []))


@router.patch("/{provider_id}", response_model=ProviderOut)
async def update_provider(
    provider_id: IdPath, body: ProviderUpdate, ctx: ProvidersWrite
) -> ProviderOut:
    """Renaming a provider renames it in the routes of this organisation's models too."""
    provider = await get_in_org(ctx.session, Provider, provider_id, ctx.org_id)
    sent = body.model_dump(exclude_unset=True)
    for required in ("name", "type", "is_active"):
        if required in sent and sent[required] is None:
            raise HTTPException(422, f"{required} cannot be null")
    before, old_name = _summary(provider), provider.name
    for column in ("name", "type", "base_url", "timeout_seconds", "is_active"):
        if column in sent:
            setattr(provider, column, sent[column])
    if sent.keys() & set(_EXTRA_FIELDS):
        provider.extra = _extra(**{**_extra_fields(provider), **sent})
    # Flushed before the routes are read: a name clash is a 409, not an autoflush error.
    await flush_or_conflict(ctx.session, f"a provider named {provider.name!r} already exists")
    renamed = await _rename_in_routes(ctx, old_name, provider.name)
    after = _summary(provider)
    changed = [name for name in after if after[name] != before[name]]
    await ctx.audit(
        "provider.updated",
        f"provider:{provider.id}",
        before={name: before[name] for name in changed},
        after={name: after[name] for name in changed},
        details={"routes_renamed_in": renamed} if renamed else None,
    )
    await ctx.session.commit()
    await refresh_routing_table(ctx)
    return _out(provider, (await keys_of(ctx, [provider.id])).get(provider.id, []))


@router.delete("/{provider_id}", status_code=204, response_class=Response)
async def delete_provider(provider_id: IdPath, ctx: ProvidersWrite) -> Response:
    """Refused (409) while a model routes to the provider; its keys go with it."""
    provider = await get_in_org(ctx.session, Provider, provider_id, ctx.org_id)
    users = sorted(model.name for model in await _models_routing_to(ctx, provider.name))
    if users:
        raise HTTPException(
            409,
            f"provider {provider.name!r} is in the routes of {', '.join(users)}; "
            "change or delete those models first",
        )
    keys = (await keys_of(ctx, [provider.id])).get(provider.id, [])
    await ctx.audit(
        "provider.deleted",
        f"provider:{provider.id}",
        before={**_summary(provider), "keys": [key.masked for key in keys]},
    )
    await ctx.session.delete(provider)
    await ctx.session.commit()
    await refresh_routing_table(ctx)
    return Response(status_code=204)


async def _models_routing_to(ctx: AdminContext, provider_name: str) -> list[Model]:
    models = await ctx.session.scalars(select(Model).where(Model.org_id == ctx.org_id))
    return [model for model in models if provider_name in _route_providers(model)]


def _route_providers(model: Model) -> set[str]:
    routes = model.routes if isinstance(model.routes, list) else []
    return {str(route.get("provider")) for route in routes if isinstance(route, dict)}


async def _rename_in_routes(ctx: AdminContext, old: str, new: str) -> list[str]:
    if old == new:
        return []
    models = await _models_routing_to(ctx, old)
    for model in models:
        model.routes = [
            {**route, "provider": new}
            if isinstance(route, dict) and route.get("provider") == old
            else route
            for route in model.routes
        ]
    return sorted(model.name for model in models)


def _extra(
    headers: dict[str, str] | None, max_concurrency: int | None, max_queue: int | None, **_: Any
) -> dict[str, Any]:
    """`Provider.extra` as the YAML stores it (agentwatch.catalog reads it)."""
    extra: dict[str, Any] = {"headers": dict(headers or {})}
    if max_concurrency is not None:
        extra["max_concurrency"] = max_concurrency
    if max_queue is not None:
        extra["max_queue"] = max_queue
    return extra


def _extra_fields(provider: Provider) -> dict[str, Any]:
    extra = provider.extra if isinstance(provider.extra, dict) else {}
    headers = extra.get("headers")
    concurrency, queue = extra.get("max_concurrency"), extra.get("max_queue")
    return {
        "headers": {str(k): str(v) for k, v in headers.items()}
        if isinstance(headers, dict)
        else {},
        "max_concurrency": concurrency if isinstance(concurrency, int) else None,
        "max_queue": queue if isinstance(queue, int) else None,
    }


def _shown(fields: dict[str, Any]) -> dict[str, Any]:
    """Credential headers (refused here, accepted by older YAML files) are shown masked."""
    headers = {
        name: mask_key(value) if name.lower() in _CREDENTIAL_HEADERS else value
        for name, value in fields["headers"].items()
    }
    return {**fields, "headers": headers}


def _summary(provider: Provider) -> dict[str, Any]:
    return {**summary(provider, _AUDITED), **_shown(_extra_fields(provider))}


def _out(provider: Provider, keys: Sequence[ProviderKey]) -> ProviderOut:
    return ProviderOut(
        id=provider.id,
        name=provider.name,
        type=provider.type,
        base_url=provider.base_url,
        timeout_seconds=provider.timeout_seconds,
        is_active=provider.is_active,
        created_at=provider.created_at,
        keys=[ProviderKeyOut.model_validate(key, from_attributes=True) for key in keys],
        **_shown(_extra_fields(provider)),
    )
