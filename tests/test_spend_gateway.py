"""End to end: budgets and rate limits through a running gateway with the openai SDK.
200 simultaneous calls against a budget for ~50 never overshoot by more than the calls in
flight can; every refusal is a 429 in OpenAI's shape; the ledger equals what was accepted."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from aiohttp import web

from tests.conftest import BACKENDS
from tests.fake_scripted import COMPLETION_TOKENS, PROMPT_TOKENS, FakeScripted
from tests.fake_server import ThreadedServer
from tests.support import Gateway, database, gateway_on, new_key

INPUT_PER_MTOK = 1000.0  # USD: a call of 9 + 7 tokens costs 0.009 + 0.014 USD
OUTPUT_PER_MTOK = 2000.0
CALL_COST_NANOUSD = round(PROMPT_TOKENS * INPUT_PER_MTOK * 1000) + round(
    COMPLETION_TOKENS * OUTPUT_PER_MTOK * 1000
)
BUDGET_CALLS = 50
BUDGET_USD = BUDGET_CALLS * CALL_COST_NANOUSD / 1e9
ALERT_BUDGET_USD = 10 * CALL_COST_NANOUSD / 1e9  # 5 calls: soft (50 %), 8: 80 %, 10: 100 %
TENANTS = ("budgeted", "limited", "narrow", "shared", "alerting")
WEBHOOK_SECRET = "whsec-test-0123456789abcdef"


def config(upstream: str, keys: dict[str, str]) -> str:
    return f"""
providers:
  - name: scripted
    type: openai_compatible
    base_url: {upstream}
    api_key: upstream-key
models:
  - name: chat
    input_cost_per_mtok: {INPUT_PER_MTOK}
    output_cost_per_mtok: {OUTPUT_PER_MTOK}
    routes: [{{provider: scripted, model: scripted-chat}}]
teams:
  - name: research
    limits: {{max_parallel: 3}}
tenants:
  - name: budgeted
    api_keys: [{keys["budgeted"]}]
    budget: {{amount_usd: {BUDGET_USD}, period: monthly, soft_pct: 50}}
  - name: limited
    api_keys: [{keys["limited"]}]
    limits: {{rpm: 30}}
  - name: narrow
    team: research
    api_keys: [{keys["narrow"]}]
  - name: shared
    api_keys: [{keys["shared"]}]
    limits: {{per_user: {{rpm: 2}}}}
  - name: alerting
    api_keys: [{keys["alerting"]}]
    budget: {{amount_usd: {ALERT_BUDGET_USD}, period: daily, soft_pct: 50}}
dlp: {{default_action: off}}
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeScripted]:
    server = FakeScripted()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def gateway(
    request: pytest.FixtureRequest, upstream: FakeScripted, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    workdir: Path = tmp_path_factory.mktemp(f"gw-spend-{request.param}")
    keys = {name: new_key() for name in TENANTS}
    env = {"AGENTWATCH_USAGE_FLUSH_SECONDS": "0.05"}
    with gateway_on(request.param, workdir, config(upstream.base_url, keys), env) as gateway:
        gateway.keys = keys  # type: ignore[attr-defined]
        yield gateway


@pytest.fixture(autouse=True)
def no_delay(upstream: FakeScripted) -> Iterator[None]:
    upstream.delay = 0.0
    yield
    upstream.delay = 0.0


def key_of(gateway: Gateway, tenant: str) -> str:
    return str(gateway.keys[tenant])  # type: ignore[attr-defined]


async def fire(gateway: Gateway, key: str, count: int, **body: Any) -> list[httpx.Response]:
    """`count` calls at once, raw (no SDK retries), each answer kept."""
    payload = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], **body}
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(base_url=gateway.url, limits=limits, timeout=60) as client:
        calls = [
            client.post(
                "/v1/chat/completions", json=payload, headers={"authorization": f"Bearer {key}"}
            )
            for _ in range(count)
        ]
        return list(await asyncio.gather(*calls))


def ledger(gateway: Gateway, tenant: str, expected: int) -> list[dict[str, Any]]:
    rows = gateway.wait_for_usage(expected, timeout=20)
    return [r for r in rows if r["tenant"] == tenant]


def test_a_budget_holds_under_200_simultaneous_calls(
    gateway: Gateway, upstream: FakeScripted
) -> None:
    upstream.delay = 0.5  # every admitted call is still in flight when the others arrive
    answers = asyncio.run(fire(gateway, key_of(gateway, "budgeted"), 200, max_tokens=7))
    accepted = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code != 200]
    assert accepted and refused
    for answer in refused:
        assert answer.status_code == 429
        error = answer.json()["error"]
        assert (error["type"], error["code"]) == ("insufficient_quota", "budget_exceeded")
        assert int(answer.headers["retry-after"]) >= 1
    rows = ledger(gateway, "budgeted", len(answers))
    ok_rows = [r for r in rows if r["status"] == 200]
    assert len(ok_rows) == len(accepted)
    spent = sum(round(r["cost_usd"] * 1e9) for r in ok_rows)
    assert spent == len(accepted) * CALL_COST_NANOUSD  # the ledger is exactly what got through
    # The reservation covers the completion (max_tokens) exactly and the prompt by a local
    # count, so the in-flight calls can overshoot by at most their prompt cost each.
    prompt_cost = round(PROMPT_TOKENS * INPUT_PER_MTOK * 1000)
    assert spent <= BUDGET_CALLS * CALL_COST_NANOUSD + len(accepted) * prompt_cost
    assert len(accepted) >= BUDGET_CALLS * 0.8  # and the budget was not wasted either
    # Spent is now at (or just past) the budget: the next call is refused at once.
    client = openai.OpenAI(
        base_url=f"{gateway.url}/v1", api_key=key_of(gateway, "budgeted"), max_retries=0
    )
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=7
        )
    assert caught.value.code == "budget_exceeded"
    assert caught.value.type == "insufficient_quota"


def test_requests_per_minute_are_limited_with_headers(gateway: Gateway) -> None:
    key = key_of(gateway, "limited")
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)
    first = client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hi"}]
    )
    assert first.headers["x-ratelimit-limit-requests"] == "30"
    assert first.headers["x-ratelimit-remaining-requests"] == "29"
    assert first.headers["x-ratelimit-reset-requests"].endswith("s")
    answers = asyncio.run(fire(gateway, key, 40))
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 29  # 30 per minute, one already used
    refused = [a for a in answers if a.status_code == 429]
    assert len(refused) == 11
    for answer in refused:
        error = answer.json()["error"]
        assert error["code"] == "rate_limit_exceeded"
        assert int(answer.headers["retry-after"]) >= 1
        assert answer.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "rate_limit_exceeded"


def test_a_team_limits_calls_in_flight(gateway: Gateway, upstream: FakeScripted) -> None:
    upstream.delay = 0.5
    answers = asyncio.run(fire(gateway, key_of(gateway, "narrow"), 10))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 3 + [429] * 7
    upstream.delay = 0.0
    # The slots are given back when the calls end.
    after = asyncio.run(fire(gateway, key_of(gateway, "narrow"), 3))
    assert [a.status_code for a in after] == [200] * 3


def test_an_admin_api_budget_applies_at_once(gateway: Gateway) -> None:
    headers = {"authorization": f"Bearer {gateway.admin_token()}"}
    tenants = httpx.get(f"{gateway.url}/api/tenants", params={"search": "narrow"}, headers=headers)
    [tenant] = [t for t in tenants.json()["data"] if t["name"] == "narrow"]
    client = openai.OpenAI(
        base_url=f"{gateway.url}/v1", api_key=key_of(gateway, "narrow"), max_retries=0
    )
    tiny = {"budget": {"amount_usd": 1e-9, "period": "daily", "timezone": "Asia/Tokyo"}}
    patched = httpx.patch(f"{gateway.url}/api/tenants/{tenant['id']}", json=tiny, headers=headers)
    assert patched.status_code == 200, patched.text
    assert patched.json()["budget"] == {**tiny["budget"], "hard": True}
    try:
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": "hi"}]
            )
        assert caught.value.code == "budget_exceeded"
    finally:
        cleared = httpx.patch(
            f"{gateway.url}/api/tenants/{tenant['id']}", json={"budget": None}, headers=headers
        )
        assert cleared.status_code == 200
    client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])


def test_each_end_user_gets_its_own_limit(gateway: Gateway) -> None:
    client = openai.OpenAI(
        base_url=f"{gateway.url}/v1", api_key=key_of(gateway, "shared"), max_retries=0
    )

    def ask(user: str | None, header: str | None = None) -> int:
        extra = {"x-agentwatch-user": header} if header else {}
        try:
            client.chat.completions.create(
                model="chat",
                messages=[{"role": "user", "content": "hi"}],
                extra_headers=extra,
                **({"user": user} if user else {}),
            )
        except openai.RateLimitError:
            return 429
        return 200

    assert [ask("alice") for _ in range(3)] == [200, 200, 429]
    assert ask("bob") == 200
    assert [ask(None, header="carol") for _ in range(3)] == [200, 200, 429]
    assert ask(None) == 200  # no end user named: only the general limits apply


def test_bad_limits_are_refused_with_a_message(gateway: Gateway) -> None:
    headers = {"authorization": f"Bearer {gateway.admin_token()}"}
    for body in (
        {"limits": {"rpm": 0}},
        {"limits": {"rpm": "many"}},
        {"budget": {"amount_usd": -1}},
        {"budget": {"amount_usd": 5, "period": "hourly"}},
        {"budget": {"amount_usd": 5, "timezone": "Mars/Olympus"}},
        {"limits": {"burst": 3}},
    ):
        answer = httpx.post(
            f"{gateway.url}/api/tenants", json={"name": "bad", **body}, headers=headers
        )
        assert answer.status_code == 422, (body, answer.text)


@pytest.fixture(scope="module")
def replicas(
    upstream: FakeScripted, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Gateway]]:
    """Two gateway processes on one PostgreSQL database and one Redis (own key prefix)."""
    workdir: Path = tmp_path_factory.mktemp("gw-spend-replicas")
    keys = {name: new_key() for name in TENANTS}
    env = {
        "AGENTWATCH_USAGE_FLUSH_SECONDS": "0.05",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "AGENTWATCH_REDIS_PREFIX": f"aw-test-{new_key()[-12:]}:",
    }
    with database("postgres", workdir) as url:
        started: list[Gateway] = []
        try:
            for name in ("a", "b"):
                (workdir / name).mkdir()
                gateway = Gateway(
                    workdir=workdir / name,
                    database_url=url,
                    config=config(upstream.base_url, keys),
                    env=env,
                )
                gateway.keys = keys  # type: ignore[attr-defined]
                gateway.start()
                started.append(gateway)
            yield started
        finally:
            for gateway in started:
                gateway.stop()


async def fire_at_both(
    replicas: list[Gateway], tenant: str, count: int, **body: Any
) -> list[httpx.Response]:
    halves = [fire(gateway, key_of(gateway, tenant), count // 2, **body) for gateway in replicas]
    answers = await asyncio.gather(*halves)
    return [answer for half in answers for answer in half]


def test_two_replicas_hold_one_budget(replicas: list[Gateway], upstream: FakeScripted) -> None:
    upstream.delay = 0.5
    answers = asyncio.run(fire_at_both(replicas, "budgeted", 200, max_tokens=7))
    accepted = [a for a in answers if a.status_code == 200]
    assert all(a.status_code == 429 for a in answers if a.status_code != 200)
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 429} == {
        "budget_exceeded"
    }
    rows = ledger(replicas[0], "budgeted", len(answers))
    spent = sum(round(r["cost_usd"] * 1e9) for r in rows if r["status"] == 200)
    assert spent == len(accepted) * CALL_COST_NANOUSD
    prompt_cost = round(PROMPT_TOKENS * INPUT_PER_MTOK * 1000)
    # One budget for both: two separate ones would let ~2x through.
    assert spent <= BUDGET_CALLS * CALL_COST_NANOUSD + len(accepted) * prompt_cost
    assert len(accepted) >= BUDGET_CALLS * 0.8


def test_two_replicas_hold_one_rate_limit(replicas: list[Gateway]) -> None:
    answers = asyncio.run(fire_at_both(replicas, "limited", 60))
    assert [a.status_code for a in answers].count(200) == 30


@dataclass
class WebhookSink(ThreadedServer):
    """Where budget alerts are POSTed: keeps each body and its headers."""

    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/hooks/budget", self._hook)

    async def _hook(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        return web.json_response({"ok": True})


def test_budget_alerts_fire_once_per_threshold_signed(gateway: Gateway) -> None:
    sink = WebhookSink()
    sink.start()
    headers = {"authorization": f"Bearer {gateway.admin_token()}"}
    me = httpx.get(f"{gateway.url}/api/auth/me", headers=headers).json()
    hook = {
        "alert_webhook_url": f"{sink.origin}/hooks/budget",
        "alert_webhook_secret": WEBHOOK_SECRET,
    }
    try:
        org = httpx.patch(
            f"{gateway.url}/api/organizations/{me['org_id']}", json=hook, headers=headers
        )
        assert org.status_code == 200, org.text
        assert org.json()["alert_webhook_secret_set"] is True
        assert WEBHOOK_SECRET not in org.text
        client = openai.OpenAI(
            base_url=f"{gateway.url}/v1", api_key=key_of(gateway, "alerting"), max_retries=0
        )
        for _ in range(12):
            try:
                client.chat.completions.create(
                    model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=7
                )
            except openai.RateLimitError as error:
                assert error.code == "budget_exceeded"
        deadline = time.monotonic() + 20
        while len(sink.received) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # a duplicate would arrive now
        bodies = [json.loads(body) for _, body in sink.received]
        assert sorted(b["threshold"] for b in bodies) == ["100", "80", "soft"]
        for sent_headers, body in sink.received:
            stamp = sent_headers["x-agentwatch-timestamp"]
            expected = hmac.new(
                WEBHOOK_SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256
            ).hexdigest()
            assert sent_headers["x-agentwatch-signature"] == f"sha256={expected}"
        first = bodies[0]
        assert first["type"] == "budget.threshold_crossed" and first["scope"] == "tenant"
        assert first["amount_usd"] == pytest.approx(ALERT_BUDGET_USD)
    finally:
        httpx.patch(
            f"{gateway.url}/api/organizations/{me['org_id']}",
            json={"alert_webhook_url": None, "alert_webhook_secret": None},
            headers=headers,
        )
        sink.stop()


def test_budget_remaining_is_exported(gateway: Gateway) -> None:
    client = openai.OpenAI(
        base_url=f"{gateway.url}/v1", api_key=key_of(gateway, "budgeted"), max_retries=0
    )
    with contextlib.suppress(openai.RateLimitError):
        client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=7
        )
    deadline = time.monotonic() + 10
    gauge = ""
    while time.monotonic() < deadline and not gauge:
        text = httpx.get(f"{gateway.url}/metrics").text
        gauge = next(
            (line for line in text.splitlines()
             if line.startswith("agentwatch_budget_remaining_usd{") and 'scope="tenant"' in line),
            "",
        )  # fmt: skip
        time.sleep(0.05)
    assert gauge, "no budget_remaining sample"
    assert float(gauge.rsplit(" ", 1)[1]) <= BUDGET_USD
