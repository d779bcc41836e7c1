"""The declarative YAML config: parsing and validation, then idempotent application to a real DB."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agentwatch.bootstrap import bootstrap
from agentwatch.catalog import load_catalog
from agentwatch.config_file import ConfigError, GatewayConfig, load_config
from agentwatch.crypto import DecryptionError, decrypt_secret
from agentwatch.db.engine import create_engine, session_factory
from agentwatch.db.migrate import upgrade_database
from agentwatch.pricing import shipped_prices
from agentwatch.settings import normalise_database_url
from agentwatch.upstream import ProxySettings, UpstreamClient
from tests.conftest import BACKENDS
from tests.support import database

KEY = bytes(range(32))
TENANT_KEY = "tenant-key-0123456789abcdef"
CONFIG = """
# ${NOT_SET_ANYWHERE} in a comment is left alone
providers:
  - name: local
    type: openai_compatible
    base_url: ${UPSTREAM_URL:-http://127.0.0.1:9/v1}
    api_key: ${UPSTREAM_KEY}
    timeout: 3
    headers: {x-team: ${TEAM:-platform}}
models:
  - name: fast
    context_window: 128000
    routes:
      - provider: local
        model: gpt-4o-mini
tenants:
  - name: ci
    api_keys: ["${CI_KEY}"]
    models: [fast]
"""
Sessions = async_sessionmaker[AsyncSession]
ROUTES = "routes: [{provider: p, model: x}]"
TABLES = ["organizations", "providers", "provider_keys", "models", "tenants", "api_keys"]


def write(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(content)
    return path


def load(tmp_path: Path, content: str = CONFIG, **environ: str) -> GatewayConfig:
    env = {"UPSTREAM_KEY": "sk-upstream-plaintext", "CI_KEY": TENANT_KEY, **environ}
    return load_config(write(tmp_path, content), env)


def config_error(tmp_path: Path, content: str, **environ: str) -> str:
    with pytest.raises(ConfigError) as failure:
        load_config(write(tmp_path, content), environ)
    return str(failure.value)


def test_variables_are_expanded_with_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, TEAM="search")
    (provider,) = config.providers
    assert provider.api_key == "sk-upstream-plaintext"
    assert provider.base_url == "http://127.0.0.1:9/v1"
    assert provider.headers == {"x-team": "search"}
    assert provider.timeout == 3.0
    assert config.tenants[0].api_keys == [TENANT_KEY]
    assert config.tenants[0].models == ["fast"]


def test_an_empty_variable_takes_the_default_like_a_shell(tmp_path: Path) -> None:
    config = load(tmp_path, UPSTREAM_URL="", TEAM="")
    assert config.providers[0].base_url == "http://127.0.0.1:9/v1"
    assert config.providers[0].headers == {"x-team": "platform"}


def test_a_missing_variable_is_named(tmp_path: Path) -> None:
    message = config_error(tmp_path, CONFIG, CI_KEY=TENANT_KEY)
    assert "gateway.yaml, line 7: environment variable UPSTREAM_KEY is not set" in message
    assert "NOT_SET_ANYWHERE" not in message


def test_only_the_given_environment_is_used(tmp_path: Path) -> None:
    # PATH is set in the test process; an explicit empty environment must not see it.
    message = config_error(tmp_path, "providers:\n  - {name: a, type: openai, api_key: ${PATH}}\n")
    assert "PATH" in message


def test_empty_and_missing_files(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "# nothing yet\n"), {}) == GatewayConfig()
    with pytest.raises(ConfigError, match=r"cannot read config file .*absent\.yaml"):
        load_config(tmp_path / "absent.yaml", {})


def test_invalid_yaml_is_one_line_with_a_position(tmp_path: Path) -> None:
    message = config_error(tmp_path, "providers:\n  - name: a\n   type: openai\n")
    assert "not valid YAML" in message and "line 3" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("providers:\n  - {name: a, type: azure}\n", "providers.0.type"),
        ("providers:\n  - {name: a, type: openai, apikey: x}\n", "providers.0.apikey"),
        ("provider:\n  - {name: a, type: openai}\n", "provider: Extra inputs"),
        ("tenants:\n  - {name: t, api_keys: [short]}\n", "at least 20 characters"),
        ("models:\n  - {name: m, routes: []}\n", "models.0.routes"),
        ("providers: [{name: a, type: openai}, {name: a, type: gemini}]", "provider names: a"),
        (f"models: [{{name: m, {ROUTES}}}, {{name: m, {ROUTES}}}]", "duplicate model names: m"),
        ("tenants: [{name: t}, {name: t}]", "duplicate tenant names: t"),
    ],
)
def test_invalid_config_is_refused_clearly(tmp_path: Path, content: str, expected: str) -> None:
    message = config_error(tmp_path, content)
    assert expected in message
    assert message.startswith(str(tmp_path / "gateway.yaml"))


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[Sessions]:
    engine = create_engine(normalise_database_url(database_url))
    await upgrade_database(engine)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


async def apply(sessions: Sessions, config: GatewayConfig) -> int:
    return await bootstrap(
        sessions, encryption_key=KEY, config=config, admin_email=None, admin_password=None
    )


async def rows(sessions: Sessions, query: str) -> list[tuple[Any, ...]]:
    async with sessions() as session:
        return [tuple(row) for row in await session.execute(text(query))]


async def counts(sessions: Sessions) -> dict[str, object]:
    return {
        table: (await rows(sessions, f"SELECT count(*) FROM {table}"))[0][0] for table in TABLES
    }


async def test_applying_twice_changes_nothing(sessions: Sessions, tmp_path: Path) -> None:
    config = load(tmp_path)
    await apply(sessions, config)
    first = await counts(sessions)
    assert first == {
        "organizations": 1,
        "providers": 1,
        "provider_keys": 1,
        "models": len(shipped_prices()) + 1,
        "tenants": 1,
        "api_keys": 1,
    }
    await apply(sessions, config)
    assert await counts(sessions) == first


async def test_provider_keys_are_encrypted_and_rotate(sessions: Sessions, tmp_path: Path) -> None:
    await apply(sessions, load(tmp_path))
    ((blob,),) = await rows(sessions, "SELECT encrypted_key FROM provider_keys")
    assert isinstance(blob, bytes) and b"sk-upstream-plaintext" not in blob
    assert decrypt_secret(blob, KEY) == "sk-upstream-plaintext"
    with pytest.raises(DecryptionError):
        decrypt_secret(blob, bytes(32))

    await apply(sessions, load(tmp_path, UPSTREAM_KEY="sk-upstream-rotated"))
    keys = await rows(sessions, "SELECT encrypted_key, is_active FROM provider_keys ORDER BY id")
    assert [(decrypt_secret(k, KEY), bool(active)) for k, active in keys] == [
        ("sk-upstream-plaintext", False),
        ("sk-upstream-rotated", True),
    ]


async def test_tenant_keys_are_stored_only_as_hashes(sessions: Sessions, tmp_path: Path) -> None:
    await apply(sessions, load(tmp_path))
    ((key_hash, prefix, is_active),) = await rows(
        sessions, "SELECT key_hash, prefix, is_active FROM api_keys"
    )
    assert key_hash == hashlib.sha256(TENANT_KEY.encode()).hexdigest()
    assert prefix == TENANT_KEY[:8] and is_active
    everything = await rows(sessions, "SELECT * FROM api_keys")
    assert all(TENANT_KEY not in str(value) for row in everything for value in row)


async def test_a_key_cannot_belong_to_two_tenants(sessions: Sessions, tmp_path: Path) -> None:
    await apply(sessions, load(tmp_path))
    other = load(tmp_path, "tenants:\n  - name: other\n    api_keys: [${CI_KEY}]\n")
    with pytest.raises(ConfigError, match="belongs to another tenant"):
        await apply(sessions, other)
    assert (await rows(sessions, "SELECT name FROM tenants")) == [("ci",)]


async def test_a_route_to_an_unknown_provider_is_refused(
    sessions: Sessions, tmp_path: Path
) -> None:
    config = load(tmp_path, CONFIG.replace("- provider: local", "- provider: nowhere"))
    with pytest.raises(ConfigError) as refused:
        await apply(sessions, config)
    assert str(refused.value) == "model 'fast' routes to unknown provider 'nowhere'"
    assert (await counts(sessions))["providers"] == 0


async def test_shipped_prices_are_seeded_but_never_overwritten(
    sessions: Sessions, tmp_path: Path
) -> None:
    await apply(sessions, load(tmp_path))
    query = "SELECT input_cost_per_mtok, output_cost_per_mtok FROM models WHERE name = 'gpt-4o'"
    shipped = shipped_prices()["gpt-4o"]
    assert await rows(sessions, query) == [(shipped.input_per_mtok, shipped.output_per_mtok)]
    async with sessions.begin() as session:
        await session.execute(
            text("UPDATE models SET input_cost_per_mtok = 99.5 WHERE name = 'gpt-4o'")
        )
    await apply(sessions, load(tmp_path))
    assert await rows(sessions, query) == [(99.5, shipped.output_per_mtok)]


async def test_the_catalog_resolves_the_alias(sessions: Sessions, tmp_path: Path) -> None:
    org_id = await apply(sessions, load(tmp_path))
    await apply(sessions, load(tmp_path, UPSTREAM_KEY="sk-upstream-rotated"))
    client = UpstreamClient(ProxySettings())
    try:
        async with sessions() as session:
            catalog = await load_catalog(session, KEY, client)
    finally:
        await client.close()
    alias = catalog.alias(org_id, "fast")
    assert alias is not None and catalog.alias_names(org_id) == ["fast"]
    (route,) = alias.routes
    assert (route.provider_name, route.upstream_model) == ("local", "gpt-4o-mini")
    assert route.unavailable_reason is None and route.adapter is not None
    assert route.adapter.config.api_key == "sk-upstream-rotated"
    assert route.adapter.config.base_url == "http://127.0.0.1:9/v1"
    assert route.adapter.config.headers == {"x-team": "platform"}
    assert catalog.price_for(org_id, route, "fast") == shipped_prices()["gpt-4o-mini"]


def test_values_with_yaml_syntax_survive_expansion(tmp_path: Path) -> None:
    secret = 'ab#c: [1], "q" #2'
    content = (
        "providers:\n  - name: a\n    type: openai\n    api_key: ${SECRET}\n"
        "tenants:\n  - name: t\n    api_keys: [${KEY}, plain-key-0123456789abcdef]\n"
    )
    config = load_config(write(tmp_path, content), {"SECRET": secret, "KEY": secret + "x" * 20})
    assert config.providers[0].api_key == secret
    assert config.tenants[0].api_keys == [secret + "x" * 20, "plain-key-0123456789abcdef"]
