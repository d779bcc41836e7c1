"""The exact response cache through a running gateway (SQLite, PostgreSQL, PostgreSQL with
the Redis store), with the official openai SDK as the client: off by default, hit and miss,
TTL expiry, no hit across organisations, `no-store` / `no-cache`, streamed replay, and a hit
metered with zero upstream cost and its savings."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import redis

from tests.fake_scripted import COMPLETION_TOKENS, PROMPT_TOKENS, FakeScripted
from tests.support import Gateway, gateway_on, new_key

REDIS_URL = "redis://127.0.0.1:6379/0"
PRICE = "    input_cost_per_mtok: 2.0\n    output_cost_per_mtok: 8.0\n"
SAVED_USD = (PROMPT_TOKENS * 2.0 + COMPLETION_TOKENS * 8.0) / 1e6


def config(upstream: str) -> str:
    return (
        "providers:\n"
        f"  - name: scripted\n    type: openai_compatible\n    base_url: {upstream}\n"
        "models:\n"
        f"  - name: cached\n{PRICE}    routes:\n      - provider: scripted\n        model: up\n"
        "  - name: always-cached\n    cache: {enabled: true, ttl_seconds: 60}\n"
        "    routes:\n      - provider: scripted\n        model: up\n"
        "tenants:\n  - name: ci\n    api_keys: [${CI_TENANT_KEY}]\n"
    )


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeScripted]:
    server = FakeScripted(reply="The cached answer, in several pieces.")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql", "redis"])
def gateway(
    request: pytest.FixtureRequest, upstream: FakeScripted, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    backend = "postgresql" if request.param == "redis" else request.param
    key = new_key()
    env = {"CI_TENANT_KEY": key}
    if request.param == "redis":
        env |= {"REDIS_URL": REDIS_URL, "AGENTWATCH_REDIS_PREFIX": f"t{secrets.token_hex(4)}:"}
    workdir = tmp_path_factory.mktemp(f"cache-{request.param}")
    with gateway_on(backend, workdir, config(upstream.base_url), env) as gw:
        gw.tenant_key = key
        yield gw


def client(gateway: Gateway, key: str | None = None, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{gateway.url}/v1",
        api_key=key or gateway.tenant_key,
        max_retries=0,
        default_headers=headers,
    )


def ask(openai_client: openai.OpenAI, prompt: str, **options: Any) -> Any:
    return openai_client.chat.completions.with_raw_response.create(
        model="cached", messages=[{"role": "user", "content": prompt}], **options
    )


def unique(name: str) -> str:
    return f"{name} {secrets.token_hex(6)}"


def admin(gateway: Gateway, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {gateway.admin_token()}", **kwargs.pop("headers", {})}
    return httpx.request(method, f"{gateway.url}{path}", headers=headers, **kwargs)


def own_org(gateway: Gateway) -> int:
    return int(admin(gateway, "GET", "/api/auth/me").json()["org_id"])


def test_the_cache_is_off_by_default(gateway: Gateway, upstream: FakeScripted) -> None:
    prompt, before = unique("off"), len(upstream.requests)
    first, second = ask(client(gateway), prompt), ask(client(gateway), prompt)
    assert "x-agentwatch-cache" not in first.headers
    assert "x-agentwatch-cache" not in second.headers
    assert len(upstream.requests) == before + 2


def test_a_hit_is_the_stored_answer_metered_at_zero_cost(
    gateway: Gateway, upstream: FakeScripted
) -> None:
    on = client(gateway, **{"x-agentwatch-cache": "on"})
    prompt, before = unique("hit"), len(upstream.requests)
    miss = ask(on, prompt)
    hit = ask(on, prompt)
    assert miss.headers["x-agentwatch-cache"] == "miss"
    assert hit.headers["x-agentwatch-cache"] == "hit"
    assert len(upstream.requests) == before + 1
    assert hit.parse().choices[0].message.content == miss.parse().choices[0].message.content
    assert hit.parse().usage == miss.parse().usage
    # Different sampling: another entry.
    assert ask(on, prompt, temperature=0.5).headers["x-agentwatch-cache"] == "miss"
    (paid,) = gateway.wait_for_usage(1, request_id=miss.headers["x-request-id"])
    (free,) = gateway.wait_for_usage(1, request_id=hit.headers["x-request-id"])
    assert not paid["cache_hit"] and paid["cost_usd"] == pytest.approx(SAVED_USD)
    assert free["cache_hit"] and free["status"] == 200 and free["cost_usd"] == 0
    assert free["saved_usd"] == pytest.approx(SAVED_USD)
    assert (free["prompt_tokens"], free["completion_tokens"]) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    assert free["provider"] is None and free["attempts"] == 0


def test_entries_expire_after_their_ttl(gateway: Gateway, upstream: FakeScripted) -> None:
    short = client(gateway, **{"x-agentwatch-cache": "on", "x-agentwatch-cache-ttl": "1"})
    prompt = unique("ttl")
    assert ask(short, prompt).headers["x-agentwatch-cache"] == "miss"
    assert ask(short, prompt).headers["x-agentwatch-cache"] == "hit"
    deadline = time.monotonic() + 15
    while ask(short, prompt).headers["x-agentwatch-cache"] == "hit":
        assert time.monotonic() < deadline, "the entry never expired"
        time.sleep(0.2)


def test_streamed_calls_replay_from_and_fill_the_cache(
    gateway: Gateway, upstream: FakeScripted
) -> None:
    on = client(gateway, **{"x-agentwatch-cache": "on"})
    for first_streams in (False, True):
        prompt, before = unique(f"stream {first_streams}"), len(upstream.requests)
        first = ask(on, prompt, stream=first_streams)
        # A stream's body is read by parse(): the whole first answer before the second call.
        first_chunks = list(first.parse()) if first_streams else []
        second = ask(on, prompt, stream=not first_streams, stream_options=None)
        assert first.headers["x-agentwatch-cache"] == "miss"
        assert second.headers["x-agentwatch-cache"] == "hit", first_streams
        assert len(upstream.requests) == before + 1
        chunks = first_chunks or list(second.parse())
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == upstream.reply
        plain = (second if first_streams else first).parse()
        assert plain.choices[0].message.content == upstream.reply
    # A hit streamed with usage asked for ends with the usage chunk.
    prompt = unique("usage")
    ask(on, prompt)
    replay = ask(on, prompt, stream=True, stream_options={"include_usage": True})
    assert replay.headers["x-agentwatch-cache"] == "hit"
    chunks = list(replay.parse())
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == PROMPT_TOKENS
    (row,) = gateway.wait_for_usage(1, request_id=replay.headers["x-request-id"])
    assert row["cache_hit"] and row["stream"] and row["cost_usd"] == 0


def test_organisation_setting_and_cache_control(gateway: Gateway, upstream: FakeScripted) -> None:
    org = own_org(gateway)
    enabled = {"settings": {"cache": {"enabled": True, "ttl_seconds": 300}}}
    assert admin(gateway, "PATCH", f"/api/organizations/{org}", json=enabled).status_code == 200
    try:
        plain = client(gateway)
        prompt, before = unique("org"), len(upstream.requests)
        assert ask(plain, prompt).headers["x-agentwatch-cache"] == "miss"
        assert ask(plain, prompt).headers["x-agentwatch-cache"] == "hit"
        # no-store: neither read nor written.
        no_store = client(gateway, **{"cache-control": "no-store"})
        assert "x-agentwatch-cache" not in ask(no_store, prompt).headers
        fresh = unique("no-store")
        ask(no_store, fresh)
        assert ask(plain, fresh).headers["x-agentwatch-cache"] == "miss"
        # no-cache: not read, but the new answer is stored.
        no_cache = client(gateway, **{"cache-control": "no-cache"})
        other = unique("no-cache")
        assert ask(no_cache, other).headers["x-agentwatch-cache"] == "miss"
        assert ask(no_cache, other).headers["x-agentwatch-cache"] == "miss"
        assert ask(plain, other).headers["x-agentwatch-cache"] == "hit"
        # The header turns it off for one call.
        off = client(gateway, **{"x-agentwatch-cache": "off"})
        assert "x-agentwatch-cache" not in ask(off, prompt).headers
        assert len(upstream.requests) == before + 7
    finally:
        disabled = {"settings": {}}
        assert admin(gateway, "PATCH", f"/api/organizations/{org}", json=disabled).is_success
    assert "x-agentwatch-cache" not in ask(client(gateway), prompt).headers


def test_no_hit_across_organisations(gateway: Gateway, upstream: FakeScripted) -> None:
    other = admin(gateway, "POST", "/api/organizations", json={"name": unique("other")})
    assert other.status_code == 201, other.text
    as_other = {"x-agentwatch-org": str(other.json()["id"])}
    provider = {"name": "scripted", "type": "openai_compatible", "base_url": upstream.base_url}
    made = admin(gateway, "POST", "/api/providers", json=provider, headers=as_other)
    assert made.status_code == 201, made.text
    model = {"name": "cached", "routes": [{"provider": "scripted", "model": "up"}]}
    made = admin(gateway, "POST", "/api/models", json=model, headers=as_other)
    assert made.status_code == 201, made.text
    tenant = admin(gateway, "POST", "/api/tenants", json={"name": "t"}, headers=as_other).json()
    key = admin(gateway, "POST", f"/api/tenants/{tenant['id']}/keys", json={}, headers=as_other)
    assert key.status_code == 201, key.text
    ours = client(gateway, **{"x-agentwatch-cache": "on"})
    theirs = client(gateway, key.json()["key"], **{"x-agentwatch-cache": "on"})
    prompt, before = unique("orgs"), len(upstream.requests)
    assert ask(ours, prompt).headers["x-agentwatch-cache"] == "miss"
    assert ask(theirs, prompt).headers["x-agentwatch-cache"] == "miss"
    assert ask(theirs, prompt).headers["x-agentwatch-cache"] == "hit"
    assert ask(ours, prompt).headers["x-agentwatch-cache"] == "hit"
    assert len(upstream.requests) == before + 2


def test_the_redis_store_holds_entries_under_the_prefix(gateway: Gateway) -> None:
    prefix = gateway.env.get("AGENTWATCH_REDIS_PREFIX")
    on = client(gateway, **{"x-agentwatch-cache": "on"})
    prompt = unique("redis")
    ask(on, prompt)
    if prefix is None:
        return  # the in-process store: nothing in Redis to look at
    connection = redis.Redis.from_url(REDIS_URL)
    try:
        ttls = [connection.ttl(key) for key in connection.keys(f"{prefix}cache:*")]
        # Every entry expires (-1: none; -2: expired since listed, from the 1 s TTL test).
        assert any(0 < ttl <= 300 for ttl in ttls) and -1 not in ttls
    finally:
        connection.close()


def test_an_alias_can_turn_the_cache_on_by_itself(gateway: Gateway, upstream: FakeScripted) -> None:
    prompt, before = unique("alias"), len(upstream.requests)
    messages = [{"role": "user", "content": prompt}]
    plain = client(gateway).chat.completions.with_raw_response
    first = plain.create(model="always-cached", messages=messages)  # type: ignore[arg-type]
    second = plain.create(model="always-cached", messages=messages)  # type: ignore[arg-type]
    assert (first.headers["x-agentwatch-cache"], second.headers["x-agentwatch-cache"]) == (
        "miss",
        "hit",
    )
    assert len(upstream.requests) == before + 1
    # The request's header still wins over the alias.
    off = client(gateway, **{"x-agentwatch-cache": "off"}).chat.completions.with_raw_response
    assert (
        "x-agentwatch-cache"
        not in off.create(
            model="always-cached",
            messages=messages,  # type: ignore[arg-type]
        ).headers
    )
    models = admin(gateway, "GET", "/api/models", params={"search": "always"}).json()["data"]
    assert [m["cache"] for m in models if m["name"] == "always-cached"] == [
        {"enabled": True, "ttl_seconds": 60}
    ]
