"""`/api/providers`: providers and their write-only keys, end to end through `/v1`; the key's
plaintext reaches the upstream and nowhere else (responses, audit log, log file, database)."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import httpx
import openai
import pytest
from sqlalchemy import select

from agentwatch.config_file import ProviderTypeName, mask_key
from agentwatch.db.engine import create_engine
from agentwatch.db.models import Base
from agentwatch.providers.registry import known_types
from agentwatch.settings import normalise_database_url
from tests.admin_support import add_user, bearer, login_token
from tests.conftest import BACKENDS
from tests.fake_openai import FakeOpenAI
from tests.support import Gateway, gateway_on

PASSWORD = "a long enough test password 42"


@pytest.fixture(scope="module", params=BACKENDS)
def gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    with gateway_on(
        request.param, tmp_path_factory.mktemp(f"providers-{request.param}"), "providers: []\n"
    ) as gateway:
        yield gateway


class Api:
    """An admin API client that keeps every response body, to search them for secrets."""

    def __init__(self, gateway: Gateway, token: str | None = None) -> None:
        self.client = httpx.Client(
            base_url=f"{gateway.url}/api", headers=bearer(token or gateway.admin_token())
        )
        self.seen: list[str] = []

    def __call__(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.client.request(method, path, **kwargs)
        self.seen.append(response.text)
        return response


def secret() -> str:
    return f"sk-live-{secrets.token_hex(20)}"


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def tenant_key(gateway: Gateway) -> str:
    created = gateway.cli("keys", "create", "--tenant", unique("tenant"))
    assert created.returncode == 0, created.stderr
    return created.stdout.strip()


def chat(gateway: Gateway, key: str, model: str) -> str | None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}]
    )
    return reply.choices[0].message.content


def upstream_header(upstream: FakeOpenAI, name: str) -> str | None:
    headers = {key.lower(): value for key, value in upstream.headers[-1].items()}
    return headers.get(name)


def database_values(database_url: str) -> list[object]:
    """Every text, JSON and binary value in every table of the schema."""

    async def read() -> list[object]:
        engine = create_engine(normalise_database_url(database_url))
        values: list[object] = []
        try:
            async with engine.connect() as connection:
                for table in Base.metadata.sorted_tables:
                    for row in await connection.execute(select(table)):
                        values.extend(v for v in row if isinstance(v, str | bytes | dict | list))
        finally:
            await engine.dispose()
        return values

    return asyncio.run(read())


def assert_nowhere(gateway: Gateway, api: Api, plaintexts: list[str]) -> None:
    audit = api("GET", "/audit-logs", params={"limit": 500})
    assert audit.status_code == 200, audit.text
    assert any(entry["action"] == "provider_key.added" for entry in audit.json()["data"])
    log = gateway.log_path.read_bytes()
    stored = [
        v if isinstance(v, str | bytes) else json.dumps(v)
        for v in database_values(gateway.database_url)
    ]
    assert any(isinstance(v, bytes) for v in stored)  # the encrypted keys were read
    files = []
    if gateway.database_url.startswith("sqlite"):
        path = Path(gateway.database_url.removeprefix("sqlite:///"))
        files = [p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists()]
        assert files
    for plaintext in plaintexts:
        raw = plaintext.encode()
        assert not any(plaintext in body for body in api.seen), "in an /api response"
        assert raw not in log, "in the gateway's log"
        assert not any(raw in v if isinstance(v, bytes) else plaintext in v for v in stored)
        assert not any(raw in content for content in files), "in the SQLite files"


def test_provider_types_are_the_registrys() -> None:
    assert set(get_args(ProviderTypeName)) == set(known_types())


def test_masks_show_only_the_ends() -> None:
    assert mask_key("sk-abcdefghijklmnopwxyz") == "sk-a…wxyz"
    assert mask_key("abcdefghij") == "…ij"
    assert mask_key("short") == "…"


def test_provider_and_key_added_over_the_api_serve_v1_and_never_leak(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    api = Api(gateway)
    first, second = secret(), secret()
    created = api(
        "POST",
        "/providers",
        json={
            "name": unique("up"),
            "type": "openai_compatible",
            "base_url": fake_openai.base_url,
            "timeout_seconds": 5,
            "headers": {"X-Team": "platform"},
            "api_key": first,
        },
    )
    assert created.status_code == 201, created.text
    provider = created.json()
    assert provider["keys"] == [
        {
            "id": provider["keys"][0]["id"],
            "name": "default",
            "masked": mask_key(first),
            "is_active": True,
            "created_at": provider["keys"][0]["created_at"],
        }
    ]
    added = api("POST", f"/providers/{provider['id']}/keys", json={"name": "b", "api_key": second})
    assert added.status_code == 201, added.text
    assert added.json()["masked"] == f"{second[:4]}…{second[-4:]}"
    alias = unique("chat")
    route = {"provider": provider["name"], "model": "gpt-4o-mini"}
    model = api("POST", "/models", json={"name": alias, "routes": [route]})
    assert model.status_code == 201, model.text

    key = tenant_key(gateway)
    assert chat(gateway, key, alias) == "Hello from the fake upstream."
    assert upstream_header(fake_openai, "authorization") == f"Bearer {first}"
    assert upstream_header(fake_openai, "x-team") == "platform"

    # Taking the first key out of rotation sends the next call with the second, at once.
    first_id = provider["keys"][0]["id"]
    paused = api("PATCH", f"/providers/{provider['id']}/keys/{first_id}", json={"is_active": False})
    assert paused.status_code == 200 and paused.json()["is_active"] is False
    chat(gateway, key, alias)
    assert upstream_header(fake_openai, "authorization") == f"Bearer {second}"

    listed = api("GET", "/providers", params={"search": provider["name"][3:]})
    assert [p["id"] for p in listed.json()["data"]] == [provider["id"]]
    assert [k["masked"] for k in listed.json()["data"][0]["keys"]] == [
        mask_key(first),
        mask_key(second),
    ]
    assert api("GET", f"/providers/{provider['id']}").json()["keys"][1]["name"] == "b"
    assert len(api("GET", f"/providers/{provider['id']}/keys").json()) == 2
    assert api("GET", "/providers", params={"type": "openai"}).json()["data"] == []
    # A refused body never echoes what was sent (it may hold a key).
    refused = api("POST", "/providers", json={"name": "x", "type": "nope", "api_key": first})
    assert refused.status_code == 422
    removed = api("DELETE", f"/providers/{provider['id']}/keys/{first_id}")
    assert removed.status_code == 204
    actions = [
        e["action"]
        for e in api("GET", "/audit-logs", params={"action": "provider_key."}).json()["data"]
    ]
    assert {"provider_key.added", "provider_key.updated", "provider_key.removed"} <= set(actions)
    assert_nowhere(gateway, api, [first, second])


def test_provider_crud_filters_and_rename(gateway: Gateway, fake_openai: FakeOpenAI) -> None:
    api = Api(gateway)
    name = unique("crud")
    body = {"name": name, "type": "openai_compatible", "base_url": fake_openai.base_url}
    provider = api("POST", "/providers", json=body).json()
    assert provider["keys"] == [] and provider["headers"] == {} and provider["is_active"] is True
    assert api("POST", "/providers", json=body).status_code == 409
    other = api("POST", "/providers", json={**body, "name": unique("other")}).json()
    clash = api("PATCH", f"/providers/{other['id']}", json={"name": name})
    assert clash.status_code == 409, clash.text  # found by the API fuzz: once a 500
    alias = unique("renamed-alias")
    api("POST", "/models", json={"name": alias, "routes": [{"provider": name, "model": "m"}]})

    patched = api(
        "PATCH",
        f"/providers/{provider['id']}",
        json={"name": f"{name}-2", "max_concurrency": 4, "timeout_seconds": None},
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["name"], patched.json()["max_concurrency"]) == (f"{name}-2", 4)
    assert patched.json()["base_url"] == fake_openai.base_url
    routes = api("GET", "/models", params={"search": alias}).json()["data"][0]["routes"]
    assert routes[0]["provider"] == f"{name}-2"
    assert chat(gateway, tenant_key(gateway), alias) == "Hello from the fake upstream."

    inactive = api("PATCH", f"/providers/{provider['id']}", json={"is_active": False}).json()
    assert inactive["is_active"] is False
    only_inactive = api("GET", "/providers", params={"is_active": False}).json()["data"]
    assert [p["id"] for p in only_inactive] == [provider["id"]]
    assert api("PATCH", f"/providers/{provider['id']}", json={"name": None}).status_code == 422

    in_use = api("DELETE", f"/providers/{provider['id']}")
    assert in_use.status_code == 409 and alias in in_use.json()["detail"]
    model_id = api("GET", "/models", params={"search": alias}).json()["data"][0]["id"]
    assert api("DELETE", f"/models/{model_id}").status_code == 204
    assert api("DELETE", f"/providers/{provider['id']}").status_code == 204
    assert api("GET", f"/providers/{provider['id']}").status_code == 404
    updated = api("GET", "/audit-logs", params={"target": f"provider:{provider['id']}"})
    entries = {e["action"]: e for e in updated.json()["data"]}
    assert set(entries) >= {"provider.created", "provider.updated", "provider.deleted"}


@pytest.mark.parametrize(
    "body",
    [
        {"type": "not-a-provider"},
        {"type": "openai", "base_url": "ftp://example.com"},
        {"type": "openai", "base_url": "http://"},
        {"type": "openai", "base_url": "https://example.com:99999"},
        {"type": "openai", "base_url": "https://" + "a" * 2000 + ".com"},
        {"type": "openai", "timeout_seconds": 0},
        {"type": "openai", "timeout_seconds": 3601},
        {"type": "openai", "headers": {"Authorization": "Bearer x"}},
        {"type": "openai", "headers": {"x-api-key": "x"}},
        {"type": "openai", "headers": {"bad name": "x"}},
        {"type": "openai", "headers": {"X-A": "line\r\nbreak"}},
        {"type": "openai", "headers": {f"X-{i}": "v" for i in range(51)}},
        {"type": "openai", "max_concurrency": 0},
        {"type": "openai", "max_queue": 2**63},
        {"type": "openai", "api_key": ""},
        {"type": "openai", "api_key": "k" * 4097},
        {"type": "openai", "api_key": "two words"},
        {"type": "openai", "org_id": 2},
    ],
)
def test_invalid_providers_are_422(gateway: Gateway, body: dict[str, Any]) -> None:
    api = Api(gateway)
    response = api("POST", "/providers", json={"name": unique("bad"), **body})
    assert response.status_code == 422, response.text


def test_keys_are_bounded_and_belong_to_their_provider(gateway: Gateway) -> None:
    api = Api(gateway)
    one = api("POST", "/providers", json={"name": unique("a"), "type": "openai"}).json()
    two = api("POST", "/providers", json={"name": unique("b"), "type": "openai"}).json()
    key = api("POST", f"/providers/{one['id']}/keys", json={"api_key": "\n" + secret() + " \n"})
    assert key.status_code == 201 and key.json()["name"] == "default"
    # A key is reached only through its own provider.
    assert api("GET", f"/providers/{two['id']}/keys").json() == []
    for method in ("PATCH", "DELETE"):
        wrong = api(method, f"/providers/{two['id']}/keys/{key.json()['id']}", json={})
        assert wrong.status_code == 404, wrong.text
    assert api("POST", f"/providers/{one['id']}/keys", json={}).status_code == 422
    too_many = [
        api("POST", f"/providers/{two['id']}/keys", json={"api_key": f"k-{i:04d}"}).status_code
        for i in range(51)
    ]
    assert too_many == [201] * 50 + [409]


def test_other_organisations_providers_look_absent(gateway: Gateway) -> None:
    email = f"{unique('other')}@example.com"
    add_user(gateway.database_url, email, PASSWORD, role="org_admin", org=unique("org"))
    theirs = Api(gateway, login_token(gateway.url, email, PASSWORD))
    ours = Api(gateway)
    name = unique("shared-name")  # the same provider name may exist in both organisations
    their_provider = theirs(
        "POST", "/providers", json={"name": name, "type": "openai", "api_key": secret()}
    ).json()
    our_provider = ours("POST", "/providers", json={"name": name, "type": "openai"}).json()
    their_key = their_provider["keys"][0]["id"]
    their_model = theirs(
        "POST", "/models", json={"name": unique("m"), "routes": [{"provider": name, "model": "x"}]}
    ).json()

    for api, provider, key in ((ours, their_provider, their_key), (theirs, our_provider, 1)):
        pid = provider["id"]
        assert api("GET", f"/providers/{pid}").status_code == 404
        assert api("PATCH", f"/providers/{pid}", json={"is_active": False}).status_code == 404
        assert api("GET", f"/providers/{pid}/keys").status_code == 404
        assert api("POST", f"/providers/{pid}/keys", json={"api_key": "k"}).status_code == 404
        assert api("PATCH", f"/providers/{pid}/keys/{key}", json={}).status_code == 404
        assert api("DELETE", f"/providers/{pid}/keys/{key}").status_code == 404
        assert api("DELETE", f"/providers/{pid}").status_code == 404
        assert pid not in [p["id"] for p in api("GET", "/providers").json()["data"]]
    # Our own provider, their key id: still absent.
    wrong_pair = ours("DELETE", f"/providers/{our_provider['id']}/keys/{their_key}")
    assert wrong_pair.status_code == 404
    for method in ("GET", "DELETE"):
        assert ours(method, f"/models/{their_model['id']}").status_code == 404
    assert ours("PATCH", f"/models/{their_model['id']}", json={"retries": 0}).status_code == 404
    assert their_model["id"] not in [m["id"] for m in ours("GET", "/models").json()["data"]]
    assert theirs("GET", f"/providers/{their_provider['id']}").status_code == 200


def test_viewers_read_but_do_not_write(gateway: Gateway) -> None:
    email = f"{unique('viewer')}@example.com"
    add_user(gateway.database_url, email, PASSWORD, role="viewer")
    viewer = Api(gateway, login_token(gateway.url, email, PASSWORD))
    assert viewer("GET", "/providers").status_code == 200
    assert viewer("POST", "/providers", json={"name": "v", "type": "openai"}).status_code == 403
    assert viewer("GET", "/models").status_code == 200
    assert viewer("POST", "/models", json={"name": "v"}).status_code == 403
