"""Model aliases with their routes, and catalogue prices.

An alias is validated and stored exactly as the YAML file does it (agentwatch.config_file's
`ModelSpec`/`RouteSpec`, `route_entries`, `routing_settings`), so agentwatch.catalog reads both
alike. A model without routes is a catalogue price for an upstream model id.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator
from sqlalchemy import func, select

from agentwatch.admin.catalog_refresh import refresh_routing_table
from agentwatch.admin.crud import flush_or_conflict, get_in_org
from agentwatch.admin.deps import AdminContext, require
from agentwatch.admin.fields import MAX_INT32, Cursor, IdPath, Limit, Search, Strict, like_pattern
from agentwatch.admin.pages import Page, fetch_page
from agentwatch.catalog import DEFAULT_RETRIES
from agentwatch.config_file import (
    AliasCacheSpec,
    CircuitSpec,
    ModelSpec,
    RouteSpec,
    StrategyName,
    route_entries,
    routing_settings,
)
from agentwatch.db.models import Model, Provider
from agentwatch.routing.strategies import DEFAULT_STRATEGY

router = APIRouter(prefix="/api/models", tags=["models"])

MAX_ROUTES = 50
MAX_NUMBER = 1e9
MAX_TEXT = 200
_PRICES = (
    "input_cost_per_mtok",
    "output_cost_per_mtok",
    "cached_input_cost_per_mtok",
    "cache_write_cost_per_mtok",
    "reasoning_cost_per_mtok",
)
_NOT_NULL = ("name", "routes", "strategy", "retries", "circuit", "is_active")


def _out_of_bounds(value: object, path: str) -> str | None:
    """Why `value` (or something inside it) cannot be stored, or None. The YAML schema leaves
    numbers and strings open-ended; over the API every one is bounded and finite."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float) and (not math.isfinite(value) or abs(value) > MAX_NUMBER):
        return f"{path}: must be a finite number of at most {MAX_NUMBER:g}"
    if isinstance(value, int) and abs(value) > MAX_INT32:
        return f"{path}: must be at most {MAX_INT32}"
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return f"{path}: must be at most {MAX_TEXT} characters"
    if isinstance(value, list):
        if len(value) > MAX_ROUTES:
            return f"{path}: at most {MAX_ROUTES} items"
        items = (_out_of_bounds(item, f"{path}[{i}]") for i, item in enumerate(value))
        return next((problem for problem in items if problem), None)
    if isinstance(value, BaseModel):
        fields = (
            _out_of_bounds(getattr(value, f), f"{path}.{f}") for f in type(value).model_fields
        )
        return next((problem for problem in fields if problem), None)
    return None


class _Bounded(BaseModel):
    @field_validator("*")
    @classmethod
    def _bounded(cls, value: object, info: ValidationInfo) -> object:
        problem = _out_of_bounds(value, str(info.field_name))
        if problem:
            raise ValueError(problem)
        return value


class ModelCreate(_Bounded, ModelSpec):
    """The YAML's model entry (`routes` name providers of this organisation), bounded."""

    routes: list[RouteSpec] = Field(
        default_factory=list,
        max_length=MAX_ROUTES,
        description="none: a catalogue price for an upstream model id rather than an alias",
    )
    is_active: bool = True


class ModelUpdate(_Bounded, Strict):
    """Fields sent replace the stored ones; the result is validated as a whole."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    routes: list[RouteSpec] | None = Field(default=None, max_length=MAX_ROUTES)
    strategy: StrategyName | None = None
    retries: int | None = Field(default=None, ge=0, le=10)
    circuit: CircuitSpec | None = None
    cache: AliasCacheSpec | None = None  # null: the organisation's cache setting applies
    input_cost_per_mtok: float | None = Field(default=None, ge=0)
    output_cost_per_mtok: float | None = Field(default=None, ge=0)
    cached_input_cost_per_mtok: float | None = Field(default=None, ge=0)
    cache_write_cost_per_mtok: float | None = Field(default=None, ge=0)
    reasoning_cost_per_mtok: float | None = Field(default=None, ge=0)
    context_window: int | None = Field(default=None, gt=0)
    is_active: bool | None = None


class ModelOut(BaseModel):
    id: int
    name: str
    routes: list[RouteSpec]
    strategy: str
    retries: int
    circuit: CircuitSpec
    cache: AliasCacheSpec | None
    input_cost_per_mtok: float | None
    output_cost_per_mtok: float | None
    cached_input_cost_per_mtok: float | None
    cache_write_cost_per_mtok: float | None
    reasoning_cost_per_mtok: float | None
    context_window: int | None
    is_active: bool
    created_at: datetime


ModelsRead = Annotated[AdminContext, require("models:read")]
ModelsWrite = Annotated[AdminContext, require("models:write")]


@router.get("", response_model=Page[ModelOut])
async def list_models(
    ctx: ModelsRead,
    search: Search = None,
    has_routes: bool | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[ModelOut]:
    query = select(Model).where(Model.org_id == ctx.org_id)
    if search:
        query = query.where(func.lower(Model.name).like(like_pattern(search), escape="\\"))
    if has_routes is not None:
        routed = func.coalesce(func.json_array_length(Model.routes), 0) > 0
        query = query.where(routed if has_routes else ~routed)
    rows, next_cursor = await fetch_page(ctx.session, query, Model.id, limit, cursor)
    return Page[ModelOut](data=[_out(row) for row in rows], next_cursor=next_cursor)


@router.post("", response_model=ModelOut, status_code=201)
async def create_model(body: ModelCreate, ctx: ModelsWrite) -> ModelOut:
    await _check_providers(ctx, body.routes)
    model = Model(org_id=ctx.org_id, name=body.name)
    _store(model, body)
    ctx.session.add(model)
    await flush_or_conflict(ctx.session, f"a model named {body.name!r} already exists")
    await ctx.audit("model.created", f"model:{model.id}", after=_fields(model))
    await ctx.session.commit()
    await refresh_routing_table(ctx)
    return _out(model)


@router.get("/{model_id}", response_model=ModelOut)
async def get_model(model_id: IdPath, ctx: ModelsRead) -> ModelOut:
    return _out(await get_in_org(ctx.session, Model, model_id, ctx.org_id))


@router.patch("/{model_id}", response_model=ModelOut)
async def update_model(model_id: IdPath, body: ModelUpdate, ctx: ModelsWrite) -> ModelOut:
    """Takes effect on this replica's next call; on other replicas within 10 s."""
    model = await get_in_org(ctx.session, Model, model_id, ctx.org_id)
    sent = body.model_dump(exclude_unset=True)
    for required in _NOT_NULL:
        if required in sent and sent[required] is None:
            raise HTTPException(422, f"{required} cannot be null")
    if body.routes is not None:
        await _check_providers(ctx, body.routes)
    before = _fields(model)
    try:
        spec = ModelCreate.model_validate({**before, **sent})
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        raise RequestValidationError(errors) from exc
    _store(model, spec)
    await flush_or_conflict(ctx.session, f"a model named {spec.name!r} already exists")
    after = _fields(model)
    changed = [name for name in after if after[name] != before[name]]
    await ctx.audit(
        "model.updated",
        f"model:{model.id}",
        before={name: before[name] for name in changed},
        after={name: after[name] for name in changed},
    )
    await ctx.session.commit()
    await refresh_routing_table(ctx)
    return _out(model)


@router.delete("/{model_id}", status_code=204, response_class=Response)
async def delete_model(model_id: IdPath, ctx: ModelsWrite) -> Response:
    model = await get_in_org(ctx.session, Model, model_id, ctx.org_id)
    await ctx.audit("model.deleted", f"model:{model.id}", before=_fields(model))
    await ctx.session.delete(model)
    await ctx.session.commit()
    await refresh_routing_table(ctx)
    return Response(status_code=204)


async def _check_providers(ctx: AdminContext, routes: list[RouteSpec]) -> None:
    wanted = {route.provider for route in routes}
    if not wanted:
        return
    known = set(
        await ctx.session.scalars(
            select(Provider.name).where(Provider.org_id == ctx.org_id, Provider.name.in_(wanted))
        )
    )
    unknown = sorted(wanted - known)
    if unknown:
        raise HTTPException(422, f"routes name unknown providers: {', '.join(unknown)}")


def _store(model: Model, spec: ModelCreate) -> None:
    """The columns the YAML file writes, plus the alias's own prices and context window."""
    model.name = spec.name
    model.routes = route_entries(spec)
    model.routing = routing_settings(spec)
    for column in _PRICES:
        setattr(model, column, getattr(spec, column))
    model.context_window = spec.context_window
    model.is_active = spec.is_active


def _fields(model: Model) -> dict[str, Any]:
    """The stored row in the API's shape. A route whose price is the alias's own carries it only
    because the alias's applies to routes without one (see config_file.route_entries)."""
    alias_price = {column: getattr(model, column) for column in _PRICES}
    routing = model.routing if isinstance(model.routing, dict) else {}
    circuit = routing.get("circuit")
    return {
        "name": model.name,
        "routes": [
            _route_fields(entry, alias_price)
            for entry in (model.routes if isinstance(model.routes, list) else [])
            if isinstance(entry, dict)
        ],
        "strategy": routing.get("strategy", DEFAULT_STRATEGY),
        "retries": routing.get("retries", DEFAULT_RETRIES),
        "circuit": circuit if isinstance(circuit, dict) else {},
        "cache": routing.get("cache") if isinstance(routing.get("cache"), dict) else None,
        **alias_price,
        "context_window": model.context_window,
        "is_active": model.is_active,
    }


def _route_fields(entry: dict[str, Any], alias_price: dict[str, Any]) -> dict[str, Any]:
    fields = {key: value for key, value in entry.items() if key != "price"}
    price = entry.get("price")
    if isinstance(price, dict) and {k: price.get(k) for k in _PRICES} != alias_price:
        fields.update({k: price.get(k) for k in _PRICES})
    return fields


def _out(model: Model) -> ModelOut:
    return ModelOut(id=model.id, created_at=model.created_at, **_fields(model))
