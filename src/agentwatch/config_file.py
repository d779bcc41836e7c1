"""Declarative YAML configuration: parsed, `${VAR}`-expanded, validated, applied idempotently."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from agentwatch.crypto import (
    MIN_TENANT_KEY_LENGTH,
    DecryptionError,
    Keys,
    decrypt_secret,
    encrypt_secret,
    hash_tenant_key,
    key_prefix,
)
from agentwatch.db.models import ApiKey, Model, Provider, ProviderKey, Team, Tenant
from agentwatch.dlp.policy import DlpPolicy
from agentwatch.spend.specs import BudgetSpec, LimitsSpec, stored

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
ProviderTypeName = Literal["openai", "anthropic", "gemini", "openrouter", "openai_compatible"]
StrategyName = Literal["weighted", "fallback", "least-latency", "lowest-cost"]


class ConfigError(ValueError):
    """The configuration file cannot be read or is not valid; the message says where."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProviderSpec(_Strict):
    name: str = Field(min_length=1, max_length=200)
    type: ProviderTypeName
    base_url: str | None = None
    api_key: str | None = None
    api_keys: list[str] = Field(default_factory=list, description="rotated on 401/403/429")
    timeout: float | None = Field(default=None, gt=0, description="seconds")
    headers: dict[str, str] = Field(default_factory=dict)
    max_concurrency: int | None = Field(default=None, ge=1)
    max_queue: int | None = Field(default=None, ge=0)


class PriceSpec(_Strict):
    input_cost_per_mtok: float | None = Field(default=None, ge=0)
    output_cost_per_mtok: float | None = Field(default=None, ge=0)
    cached_input_cost_per_mtok: float | None = Field(default=None, ge=0)
    cache_write_cost_per_mtok: float | None = Field(default=None, ge=0)
    reasoning_cost_per_mtok: float | None = Field(default=None, ge=0)  # default: output rate

    def is_set(self) -> bool:
        return self.input_cost_per_mtok is not None or self.output_cost_per_mtok is not None


class RouteSpec(PriceSpec):
    provider: str = Field(min_length=1)
    model: str = Field(min_length=1)
    weight: float = Field(default=1.0, ge=0)
    order: int | None = Field(default=None, description="fallback order, lowest first")
    timeout_s: float | None = Field(default=None, gt=0, description="idle seconds between bytes")
    connect_timeout_s: float | None = Field(default=None, gt=0)
    first_byte_timeout_s: float | None = Field(default=None, gt=0)
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    tags: list[str] = Field(default_factory=list)
    context_window: int | None = Field(default=None, gt=0)


class CircuitSpec(_Strict):
    failure_threshold: int = Field(default=5, ge=1)
    cooldown_s: float = Field(default=30.0, gt=0)
    half_open_probes: int = Field(default=1, ge=1)


class AliasCacheSpec(_Strict):
    """The response cache for one alias: on (or off) whatever its organisation says."""

    enabled: bool = True
    ttl_seconds: int = Field(default=300, ge=1, le=7 * 24 * 3600)


class ModelSpec(PriceSpec):
    name: str = Field(min_length=1, max_length=200)
    routes: list[RouteSpec] = Field(min_length=1)
    context_window: int | None = Field(default=None, gt=0)
    strategy: StrategyName = "weighted"
    retries: int = Field(default=2, ge=0, le=10)
    circuit: CircuitSpec = Field(default_factory=CircuitSpec)
    cache: AliasCacheSpec | None = None  # None: the organisation's setting applies


class TeamSpec(_Strict):
    name: str = Field(min_length=1, max_length=200)
    limits: LimitsSpec | None = None
    budget: BudgetSpec | None = None


class TenantSpec(_Strict):
    name: str = Field(min_length=1, max_length=200)
    api_keys: list[str] = Field(default_factory=list)
    models: list[str] | None = None
    team: str | None = Field(default=None, min_length=1, max_length=200)
    limits: LimitsSpec | None = None
    budget: BudgetSpec | None = None

    @field_validator("api_keys")
    @classmethod
    def _long_enough(cls, keys: list[str]) -> list[str]:
        for key in keys:
            if len(key) < MIN_TENANT_KEY_LENGTH:
                raise ValueError(
                    f"tenant API keys must be at least {MIN_TENANT_KEY_LENGTH} characters"
                )
        return keys


class GatewayConfig(_Strict):
    providers: list[ProviderSpec] = Field(default_factory=list)
    models: list[ModelSpec] = Field(default_factory=list)
    teams: list[TeamSpec] = Field(default_factory=list)
    tenants: list[TenantSpec] = Field(default_factory=list)
    # The DLP policy of every organisation that has no override of its own in the database.
    dlp: DlpPolicy = Field(default_factory=DlpPolicy)

    @model_validator(mode="after")
    def _references_resolve(self) -> GatewayConfig:
        for kind, names in (
            ("provider", [p.name for p in self.providers]),
            ("model", [m.name for m in self.models]),
            ("team", [t.name for t in self.teams]),
            ("tenant", [t.name for t in self.tenants]),
        ):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"duplicate {kind} names: {', '.join(duplicates)}")
        return self


def expand_variables(text: str, environ: Mapping[str, str]) -> str:
    """Expand `${VAR}` and `${VAR:-default}` in one line of YAML.

    A value that stands alone as a YAML scalar is quoted when it holds characters YAML would
    read as syntax (`#`, `: `, brackets, quotes...), so a secret like `abc #1` stays intact.
    """

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = environ.get(name)
        if default is not None and not value:
            value = default  # as in a shell, `:-` also replaces an empty value
        if value is None:
            raise ConfigError(f"environment variable {name} is not set (use ${{{name}:-default}})")
        if _PLAIN_SAFE.fullmatch(value) or not _stands_alone(text, match):
            return value
        return json.dumps(value)

    return _VARIABLE.sub(substitute, text)


_PLAIN_SAFE = re.compile(r"[A-Za-z0-9_./@+=~%$-][A-Za-z0-9_./@+=~%$:-]*")


def _stands_alone(line: str, match: re.Match[str]) -> bool:
    before = line[: match.start()].rstrip()
    after = line[match.end() :].lstrip()
    opens = before == "" or before.endswith((":", "-", "[", ",", "{"))
    closes = after == "" or after.startswith(("#", ",", "]", "}"))
    return opens and closes


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> GatewayConfig:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    env = os.environ if environ is None else environ
    lines: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            lines.append(line if line.lstrip().startswith("#") else expand_variables(line, env))
        except ConfigError as exc:
            raise ConfigError(f"{path}, line {number}: {exc}") from exc
    try:
        raw = yaml.safe_load("\n".join(lines)) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {_yaml_problem(exc)}") from exc
    try:
        return GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from exc


def _yaml_problem(exc: yaml.YAMLError) -> str:
    # PyYAML's own message spans several lines and quotes the source; keep errors to one line.
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(exc).split())


async def apply_config(
    session: AsyncSession, config: GatewayConfig, org_id: int, encryption_key: Keys
) -> None:
    """Create or update everything the file names; leave everything else alone."""
    known_providers = {p.name for p in config.providers} | set(
        await session.scalars(select(Provider.name).where(Provider.org_id == org_id))
    )
    for model in config.models:
        for route in model.routes:
            if route.provider not in known_providers:
                raise ConfigError(
                    f"model '{model.name}' routes to unknown provider '{route.provider}'"
                )
    for spec in config.providers:
        await _apply_provider(session, spec, org_id, encryption_key)
    for model_spec in config.models:
        await _apply_model(session, model_spec, org_id)
    teams = {spec.name: await _apply_team(session, spec, org_id) for spec in config.teams}
    for tenant_spec in config.tenants:
        team_id = None
        if tenant_spec.team is not None:
            team_id = teams.get(tenant_spec.team) or await session.scalar(
                select(Team.id).where(Team.org_id == org_id, Team.name == tenant_spec.team)
            )
            if team_id is None:
                raise ConfigError(
                    f"tenant '{tenant_spec.name}' names unknown team '{tenant_spec.team}'"
                )
        await _apply_tenant(session, tenant_spec, org_id, team_id)


async def _apply_provider(
    session: AsyncSession, spec: ProviderSpec, org_id: int, encryption_key: Keys
) -> None:
    provider = await session.scalar(
        select(Provider).where(Provider.org_id == org_id, Provider.name == spec.name)
    )
    if provider is None:
        provider = Provider(org_id=org_id, name=spec.name, extra={})
        session.add(provider)
    provider.type = spec.type
    provider.base_url = spec.base_url
    provider.timeout_seconds = spec.timeout
    provider.extra = spec.model_dump(
        include={"headers", "max_concurrency", "max_queue"}, exclude_none=True
    )
    provider.is_active = True
    await session.flush()
    keys = (
        await session.scalars(select(ProviderKey).where(ProviderKey.provider_id == provider.id))
    ).all()
    wanted = list(dict.fromkeys([*([spec.api_key] if spec.api_key else []), *spec.api_keys]))
    kept: set[str] = set()
    for key in sorted(keys, key=lambda k: k.id):
        plaintext = next((w for w in wanted if _decrypts_to(key, w, encryption_key)), None)
        key.is_active = plaintext is not None and plaintext not in kept
        if key.is_active and plaintext is not None:
            kept.add(plaintext)
            key.masked = mask_key(plaintext)
    for plaintext in wanted:
        if plaintext not in kept:
            session.add(
                ProviderKey(
                    provider_id=provider.id,
                    name="config",
                    encrypted_key=encrypt_secret(plaintext, encryption_key),
                    masked=mask_key(plaintext),
                )
            )


def mask_key(plaintext: str) -> str:
    """What the admin API shows for a provider key: `sk-a…wxyz`; a short key shows at most its
    last 2 characters."""
    if len(plaintext) >= 12:
        return f"{plaintext[:4]}…{plaintext[-4:]}"
    return f"…{plaintext[-2:]}" if len(plaintext) >= 8 else "…"


def _decrypts_to(key: ProviderKey, plaintext: str, encryption_key: Keys) -> bool:
    try:
        return decrypt_secret(key.encrypted_key, encryption_key) == plaintext
    except DecryptionError:
        return False


async def _apply_model(session: AsyncSession, spec: ModelSpec, org_id: int) -> None:
    model = await session.scalar(
        select(Model).where(Model.org_id == org_id, Model.name == spec.name)
    )
    if model is None:
        model = Model(org_id=org_id, name=spec.name)
        session.add(model)
    model.routes = route_entries(spec)
    model.routing = routing_settings(spec)
    if spec.context_window is not None:
        model.context_window = spec.context_window
    model.is_active = True


def route_entries(spec: ModelSpec) -> list[dict[str, Any]]:
    """The alias's routes as stored in `Model.routes` (the YAML and the admin API alike);
    a route without prices of its own carries the alias's."""
    return [_route_dict(route, spec) for route in spec.routes]


def routing_settings(spec: ModelSpec) -> dict[str, Any]:
    """How the routes are used, as stored in `Model.routing`."""
    settings: dict[str, Any] = {
        "strategy": spec.strategy,
        "retries": spec.retries,
        "circuit": spec.circuit.model_dump(),
    }
    if spec.cache is not None:
        settings["cache"] = spec.cache.model_dump()
    return settings


def _route_dict(route: RouteSpec, model: ModelSpec) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "provider": route.provider,
        "model": route.model,
        "weight": route.weight,
        **route.model_dump(
            include={
                "order",
                "timeout_s",
                "connect_timeout_s",
                "first_byte_timeout_s",
                "rpm",
                "tpm",
                "tags",
                "context_window",
            },
            exclude_none=True,
        ),
    }
    price: PriceSpec = route if route.is_set() else model
    if price.is_set():
        entry["price"] = {
            "input_cost_per_mtok": price.input_cost_per_mtok,
            "output_cost_per_mtok": price.output_cost_per_mtok,
            "cached_input_cost_per_mtok": price.cached_input_cost_per_mtok,
            "cache_write_cost_per_mtok": price.cache_write_cost_per_mtok,
            "reasoning_cost_per_mtok": price.reasoning_cost_per_mtok,
        }
    return entry


def _apply_controls(row: Team | Tenant, spec: TeamSpec | TenantSpec) -> None:
    """Limits and budget as the file says; a key the file leaves out keeps what the admin API
    set (write `limits: null` to clear)."""
    if "limits" in spec.model_fields_set:
        row.limits = stored(spec.limits)
    if "budget" in spec.model_fields_set:
        row.budget = stored(spec.budget)


async def _apply_team(session: AsyncSession, spec: TeamSpec, org_id: int) -> int:
    team = await session.scalar(select(Team).where(Team.org_id == org_id, Team.name == spec.name))
    if team is None:
        team = Team(org_id=org_id, name=spec.name)
        session.add(team)
    _apply_controls(team, spec)
    await session.flush()
    return team.id


async def _apply_tenant(
    session: AsyncSession, spec: TenantSpec, org_id: int, team_id: int | None
) -> None:
    tenant = await session.scalar(
        select(Tenant).where(Tenant.org_id == org_id, Tenant.name == spec.name)
    )
    if tenant is None:
        tenant = Tenant(org_id=org_id, name=spec.name)
        session.add(tenant)
    tenant.allowed_models = spec.models
    tenant.is_active = True
    if spec.team is not None:
        tenant.team_id = team_id
    _apply_controls(tenant, spec)
    await session.flush()
    for key in spec.api_keys:
        digest = hash_tenant_key(key)
        existing = await session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
        if existing is None:
            session.add(
                ApiKey(tenant_id=tenant.id, key_hash=digest, prefix=key_prefix(key), name="config")
            )
        elif existing.tenant_id != tenant.id:
            raise ConfigError(
                f"an API key of tenant '{spec.name}' already belongs to another tenant"
            )
        else:
            existing.is_active = True
