"""`/api/models`: aliases stored as the YAML file stores them, routed at once on change."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import select

from agentwatch.db.engine import create_engine, session_factory
from agentwatch.db.models import Model
from agentwatch.settings import normalise_database_url
from tests.admin_support import bearer
from tests.conftest import BACKENDS
from tests.fake_openai import FakeOpenAI
from tests.support import Gateway, gateway_on

ROUTES: list[dict[str, Any]] = [
    {
        "provider": "yaml-up",
        "model": "gpt-4o-mini",
        "weight": 3,
        "order": 2,
        "timeout_s": 30,
        "connect_timeout_s": 2,
        "first_byte_timeout_s": 10,
        "rpm": 60,
        "tpm": 100000,
        "tags": ["eu", "fast"],
        "context_window": 128000,
    },
    {
        "provider": "yaml-up",
        "model": "my-own-model",
        "input_cost_per_mtok": 1.5,
        "output_cost_per_mtok": 6,
        "cached_input_cost_per_mtok": 0.5,
    },
]
ALIAS: dict[str, Any] = {
    "strategy": "fallback",
    "retries": 1,
    "circuit": {"failure_threshold": 3, "cooldown_s": 5, "half_open_probes": 2},
    "input_cost_per_mtok": 1000,
    "output_cost_per_mtok": 2000,
    "context_window": 64000,
    "routes": ROUTES,
}


def config(upstream_url: str) -> str:
    return f"""
providers:
  - name: yaml-up
    type: openai_compatible
    base_url: {upstream_url}
    api_key: upstream-secret
models:
  - name: yaml-alias
    strategy: fallback
    retries: 1
    circuit: {{failure_threshold: 3, cooldown_s: 5, half_open_probes: 2}}
    input_cost_per_mtok: 1000
    output_cost_per_mtok: 2000
    context_window: 64000
    routes:
      - provider: yaml-up
        model: gpt-4o-mini
        weight: 3
        order: 2
        timeout_s: 30
        connect_timeout_s: 2
        first_byte_timeout_s: 10
        rpm: 60
        tpm: 100000
        tags: [eu, fast]
        context_window: 128000
      - provider: yaml-up
        model: my-own-model
        input_cost_per_mtok: 1.5
        output_cost_per_mtok: 6
        cached_input_cost_per_mtok: 0.5
"""


@pytest.fixture(scope="module", params=BACKENDS)
def gateway(
    request: pytest.FixtureRequest,
    fake_openai: FakeOpenAI,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    with gateway_on(
        request.param,
        tmp_path_factory.mktemp(f"models-{request.param}"),
        config(fake_openai.base_url),
    ) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def tenant(gateway: Gateway) -> str:
    created = gateway.cli("keys", "create", "--tenant", "models-test")
    assert created.returncode == 0, created.stderr
    return created.stdout.strip()


def api(gateway: Gateway) -> httpx.Client:
    return httpx.Client(base_url=f"{gateway.url}/api", headers=bearer(gateway.admin_token()))


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def stored(gateway: Gateway, name: str) -> Model:
    async def read() -> Model:
        engine = create_engine(normalise_database_url(gateway.database_url))
        try:
            async with session_factory(engine)() as session:
                model = await session.scalar(select(Model).where(Model.name == name))
                assert model is not None
                return model
        finally:
            await engine.dispose()

    return asyncio.run(read())


def upstream_model(gateway: Gateway, key: str, alias: str, upstream: FakeOpenAI) -> str:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)
    client.chat.completions.create(model=alias, messages=[{"role": "user", "content": "hi"}])
    return str(upstream.requests[-1]["model"])


def test_an_alias_is_stored_as_the_yaml_file_stores_it(gateway: Gateway) -> None:
    with api(gateway) as client:
        created = client.post("/models", json={"name": "api-alias", **ALIAS})
        assert created.status_code == 201, created.text
        body = created.json()
    from_yaml, from_api = stored(gateway, "yaml-alias"), stored(gateway, "api-alias")
    assert from_api.routes == from_yaml.routes
    assert from_api.routing == from_yaml.routing
    assert from_api.context_window == from_yaml.context_window == 64000
    assert from_api.routes[0]["price"]["input_cost_per_mtok"] == 1000  # the alias's applies
    assert (from_api.input_cost_per_mtok, from_api.output_cost_per_mtok) == (1000, 2000)
    # The API answers in the shape it was given: a route shows only prices of its own.
    assert body["routes"][0]["input_cost_per_mtok"] is None
    assert body["routes"][1]["cached_input_cost_per_mtok"] == 0.5
    assert body["routes"][0]["tags"] == ["eu", "fast"]
    assert (body["strategy"], body["retries"], body["circuit"]["half_open_probes"]) == (
        "fallback",
        1,
        2,
    )


def test_keys_from_the_config_file_show_masked(gateway: Gateway) -> None:
    with api(gateway) as client:
        listed = client.get("/providers", params={"search": "yaml-up"}).json()["data"]
    assert [key["masked"] for key in listed[0]["keys"]] == ["upst…cret"]
    assert "upstream-secret" not in str(listed)


def test_a_route_change_takes_effect_on_the_next_call(
    gateway: Gateway, fake_openai: FakeOpenAI, tenant: str
) -> None:
    alias = unique("moving")
    with api(gateway) as client:
        route = {"provider": "yaml-up", "model": "first-upstream"}
        model = client.post("/models", json={"name": alias, "routes": [route]}).json()
        assert upstream_model(gateway, tenant, alias, fake_openai) == "first-upstream"
        route["model"] = "second-upstream"
        patched = client.patch(f"/models/{model['id']}", json={"routes": [route]})
        assert patched.status_code == 200, patched.text
        assert upstream_model(gateway, tenant, alias, fake_openai) == "second-upstream"
        # Settings not sent are kept.
        client.patch(f"/models/{model['id']}", json={"strategy": "lowest-cost"})
        again = client.get(f"/models/{model['id']}").json()
        assert [r["model"] for r in again["routes"]] == ["second-upstream"]
        assert again["strategy"] == "lowest-cost"
        assert client.delete(f"/models/{model['id']}").status_code == 204
    gone = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=tenant, max_retries=0)
    with pytest.raises(openai.BadRequestError, match="model"):
        gone.chat.completions.create(model=alias, messages=[{"role": "user", "content": "hi"}])


def test_alias_prices_follow_into_routes_without_their_own(gateway: Gateway) -> None:
    alias = unique("priced")
    with api(gateway) as client:
        model = client.post("/models", json={"name": alias, **ALIAS}).json()
        patched = client.patch(f"/models/{model['id']}", json={"input_cost_per_mtok": 500})
        assert patched.status_code == 200, patched.text
        assert patched.json()["routes"][0]["input_cost_per_mtok"] is None
        assert patched.json()["routes"][1]["input_cost_per_mtok"] == 1.5
    routes = stored(gateway, alias).routes
    assert routes[0]["price"]["input_cost_per_mtok"] == 500
    assert routes[1]["price"]["input_cost_per_mtok"] == 1.5


def test_listing_filters_and_pages(gateway: Gateway) -> None:
    prefix = unique("list")
    with api(gateway) as client:
        priced = client.post(
            "/models",
            json={"name": f"{prefix}-upstream-id", "input_cost_per_mtok": 1, "routes": []},
        )
        assert priced.status_code == 201, priced.text
        route = {"provider": "yaml-up", "model": "m"}
        client.post("/models", json={"name": f"{prefix}-alias", "routes": [route]})
        names = [m["name"] for m in client.get("/models", params={"search": prefix}).json()["data"]]
        assert names == [f"{prefix}-upstream-id", f"{prefix}-alias"]
        for has_routes, expected in ((True, "alias"), (False, "upstream-id")):
            page = client.get("/models", params={"search": prefix, "has_routes": has_routes})
            assert [m["name"] for m in page.json()["data"]] == [f"{prefix}-{expected}"]
        first = client.get("/models", params={"search": prefix, "limit": 1}).json()
        second = client.get(
            "/models", params={"search": prefix, "limit": 1, "cursor": first["next_cursor"]}
        ).json()
        assert [first["data"][0]["name"], second["data"][0]["name"]] == names
        assert second["next_cursor"] is None


def test_unknown_providers_and_duplicates_are_refused(gateway: Gateway) -> None:
    alias = unique("strict")
    with api(gateway) as client:
        unknown = {"provider": "nowhere", "model": "m"}
        refused = client.post("/models", json={"name": alias, "routes": [unknown]})
        assert refused.status_code == 422 and "nowhere" in refused.json()["detail"]
        model = client.post(
            "/models", json={"name": alias, "routes": [{"provider": "yaml-up", "model": "m"}]}
        ).json()
        assert client.patch(f"/models/{model['id']}", json={"routes": [unknown]}).status_code == 422
        assert client.post("/models", json={"name": alias}).status_code == 409
        renamed = client.patch(f"/models/{model['id']}", json={"name": "yaml-alias"})
        assert renamed.status_code == 409
        for field in ("name", "routes", "retries", "circuit", "strategy"):
            nulled = client.patch(f"/models/{model['id']}", json={field: None})
            assert nulled.status_code == 422, field
        actions = {
            e["action"]
            for e in client.get("/audit-logs", params={"target": f"model:{model['id']}"}).json()[
                "data"
            ]
        }
        assert actions == {"model.created"}  # refused writes leave no trace


@pytest.mark.parametrize(
    "change",
    [
        {"routes": [{"provider": "yaml-up", "model": "m", "weight": 1e308}]},
        {"routes": [{"provider": "yaml-up", "model": "m", "weight": -1}]},
        {"routes": [{"provider": "yaml-up", "model": "m", "context_window": 2**40}]},
        {"routes": [{"provider": "yaml-up", "model": "m" * 201}]},
        {"routes": [{"provider": "yaml-up", "model": "m", "tags": ["t"] * 51}]},
        {"routes": [{"provider": "yaml-up", "model": "m", "tags": ["t" * 201]}]},
        {"routes": [{"provider": "yaml-up", "model": "m", "surprise": 1}]},
        {"routes": [{"provider": "yaml-up", "model": "m"}] * 51},
        {"retries": 11},
        {"strategy": "random"},
        {"circuit": {"failure_threshold": 2**40}},
        {"circuit": {"cooldown_s": 0}},
        {"input_cost_per_mtok": -1},
        {"output_cost_per_mtok": 1e300},
        {"context_window": 2**31},
        {"org_id": 2},
    ],
)
def test_out_of_bounds_models_are_422(gateway: Gateway, change: dict[str, Any]) -> None:
    with api(gateway) as client:
        created = client.post("/models", json={"name": unique("bad"), **change})
        assert created.status_code == 422, created.text
        model = client.post("/models", json={"name": unique("good")}).json()
        patched = client.patch(f"/models/{model['id']}", json=change)
        assert patched.status_code == 422, patched.text
