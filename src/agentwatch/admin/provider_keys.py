"""Provider keys: write-only upstream credentials.

A key goes in once, is encrypted with AES-256-GCM under ENCRYPTION_KEY, and never comes out
again: responses and audit entries carry only its masked form (`sk-a…wxyz`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Response
from pydantic import BaseModel, Field, StringConstraints
from sqlalchemy import func, select

from agentwatch.admin.catalog_refresh import refresh_routing_table
from agentwatch.admin.crud import apply_patch, flush_or_conflict, get_in_org
from agentwatch.admin.deps import AdminContext, require
from agentwatch.admin.fields import IdPath, Name, Strict
from agentwatch.config_file import mask_key
from agentwatch.crypto import Keyring, encrypt_secret
from agentwatch.db.models import Provider, ProviderKey

# Included by agentwatch.admin.providers under its `/api/providers` prefix.
router = APIRouter()

MAX_KEYS_PER_PROVIDER = 50
# Keys are sent in HTTP headers: visible ASCII only (a pasted trailing newline is stripped).
SecretKey = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=4096, pattern=r"^[!-~]+$"),
]


class KeyCreate(Strict):
    name: Name = "default"
    api_key: SecretKey


class KeyUpdate(Strict):
    name: Name | None = None
    is_active: bool | None = None


class ProviderKeyOut(BaseModel):
    id: int
    name: str
    masked: str = Field(description="first and last few characters; the key itself is never shown")
    is_active: bool
    created_at: datetime


ProvidersRead = Annotated[AdminContext, require("providers:read")]
ProvidersWrite = Annotated[AdminContext, require("providers:write")]


@router.get("/{provider_id}/keys", response_model=list[ProviderKeyOut])
async def list_keys(provider_id: IdPath, ctx: ProvidersRead) -> list[ProviderKeyOut]:
    provider = await get_in_org(ctx.session, Provider, provider_id, ctx.org_id)
    keys = (await keys_of(ctx, [provider.id])).get(provider.id, [])
    return [ProviderKeyOut.model_validate(key, from_attributes=True) for key in keys]


@router.post("/{provider_id}/keys", response_model=ProviderKeyOut, status_code=201)
async def add_key(provider_id: IdPath, body: KeyCreate, ctx: ProvidersWrite) -> ProviderKeyOut:
    provider = await get_in_org(ctx.session, Provider, provider_id, ctx.org_id)
    key = await add_provider_key(ctx, provider, body.name, body.api_key)
    await ctx.session.commit()
    await refresh_routing_table(ctx)
    return ProviderKeyOut.model_validate(key, from_attributes=True)


@router.patch("/{provider_id}/keys/{key_id}", response_model=ProviderKeyOut)
async def update_key(
    provider_id: IdPath, key_id: IdPath, body: KeyUpdate, ctx: ProvidersWrite
) -> ProviderKeyOut:
    """Rename a key, or take it out of (and back into) rotation."""
    key = await _key_in_org(ctx, provider_id, key_id)
    for required in ("name", "is_active"):
        if required in body.model_fields_set and getattr(body, required) is None:
            raise HTTPException(422, f"{required} cannot be null")
    before, after = apply_patch(key, body)
    await ctx.audit(
        "provider_key.updated",
        f"provider:{provider_id}/key:{key.id}",
        before=before,
        after=after,
        details={"masked": key.masked},
    )
    await ctx.session.commit()
    await refresh_routing_table(ctx)
    return ProviderKeyOut.model_validate(key, from_attributes=True)


@router.delete("/{provider_id}/keys/{key_id}", status_code=204, response_class=Response)
async def remove_key(provider_id: IdPath, key_id: IdPath, ctx: ProvidersWrite) -> Response:
    key = await _key_in_org(ctx, provider_id, key_id)
    await ctx.audit(
        "provider_key.removed",
        f"provider:{provider_id}/key:{key.id}",
        before={"name": key.name, "masked": key.masked, "is_active": key.is_active},
    )
    await ctx.session.delete(key)
    await ctx.session.commit()
    await refresh_routing_table(ctx)
    return Response(status_code=204)


async def add_provider_key(
    ctx: AdminContext, provider: Provider, name: str, plaintext: str
) -> ProviderKey:
    held = await ctx.session.scalar(
        select(func.count()).select_from(ProviderKey).where(ProviderKey.provider_id == provider.id)
    )
    if (held or 0) >= MAX_KEYS_PER_PROVIDER:
        raise HTTPException(409, f"a provider holds at most {MAX_KEYS_PER_PROVIDER} keys")
    key = ProviderKey(
        provider_id=provider.id,
        name=name,
        encrypted_key=encrypt_secret(plaintext, Keyring.from_settings(ctx.state.settings)),
        masked=mask_key(plaintext),
        is_active=True,
    )
    ctx.session.add(key)
    await flush_or_conflict(ctx.session, "the provider changed meanwhile; try again")
    await ctx.audit(
        "provider_key.added",
        f"provider:{provider.id}/key:{key.id}",
        after={"name": key.name, "masked": key.masked, "is_active": True},
    )
    return key


async def _key_in_org(ctx: AdminContext, provider_id: int, key_id: int) -> ProviderKey:
    provider = await get_in_org(ctx.session, Provider, provider_id, ctx.org_id)
    key = await ctx.session.scalar(
        select(ProviderKey).where(ProviderKey.id == key_id, ProviderKey.provider_id == provider.id)
    )
    if key is None:
        raise HTTPException(404, "no such provider key")
    return key


async def keys_of(ctx: AdminContext, provider_ids: Sequence[int]) -> dict[int, list[ProviderKey]]:
    if not provider_ids:
        return {}
    keys = await ctx.session.scalars(
        select(ProviderKey)
        .where(ProviderKey.provider_id.in_(provider_ids))
        .order_by(ProviderKey.id)
    )
    grouped: dict[int, list[ProviderKey]] = {}
    for key in keys:
        grouped.setdefault(key.provider_id, []).append(key)
    return grouped
