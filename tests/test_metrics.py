"""Prometheus /metrics: every call counted once with its latency, tokens and cost, behind an
optional bearer token, and correct across two worker processes."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import standard_config
from tests.fake_openai import COMPLETION_TOKENS, PROMPT_TOKENS, FakeOpenAI
from tests.metrics_support import scrape, total
from tests.support import Gateway, new_key

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Say hello"}]
METRICS_TOKEN = secrets.token_urlsafe(16)


def start_gateway(workdir: Path, upstream: FakeOpenAI, **env: str) -> Gateway:
    tenant_key = new_key()
    gateway = Gateway(
        workdir=workdir,
        database_url=f"sqlite:///{workdir / 'gw.db'}",
        config=standard_config(upstream.base_url, tenant_key, new_key()),
        env={"UPSTREAM_KEY": "upstream-secret", "CI_TENANT_KEY": tenant_key, **env},
        tenant_key=tenant_key,
    )
    gateway.start()
    return gateway


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    upstream = FakeOpenAI()
    upstream.start()
    gateway = start_gateway(
        tmp_path_factory.mktemp("metrics"), upstream, AGENTWATCH_METRICS_TOKEN=METRICS_TOKEN
    )
    try:
        yield gateway
    finally:
        gateway.stop()
        upstream.stop()


def test_metrics_need_the_bearer_token_when_one_is_set(gateway: Gateway) -> None:
    assert httpx.get(f"{gateway.url}/metrics").status_code == 401
    wrong = httpx.get(f"{gateway.url}/metrics", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401
    right = httpx.get(
        f"{gateway.url}/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"}
    )
    assert right.status_code == 200 and "agentwatch_requests_total" in right.text


def test_each_call_is_counted_with_latency_tokens_and_cost(gateway: Gateway) -> None:
    before = scrape(gateway.url, METRICS_TOKEN)
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.tenant_key, max_retries=0)
    for _ in range(3):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    for _ in range(2):
        list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))  # type: ignore[call-overload]
    refused = httpx.post(
        f"{gateway.url}{CHAT}",
        headers={"authorization": "Bearer not-a-key"},
        json={"model": "gpt-4o-mini", "messages": MESSAGES},
    )
    assert refused.status_code == 401
    after = scrape(gateway.url, METRICS_TOKEN)

    def grew(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    ok = {"endpoint": CHAT, "model": "gpt-4o-mini", "provider": "local"}
    assert grew("agentwatch_requests_total", status="200", tenant="ci", **ok) == 5
    assert grew("agentwatch_requests_total", status="401", endpoint=CHAT) == 1
    assert grew("agentwatch_request_duration_seconds_count", **ok) == 5
    assert grew("agentwatch_upstream_duration_seconds_count", **ok) == 5
    assert grew("agentwatch_gateway_overhead_seconds_count", **ok) == 5
    assert grew("agentwatch_time_to_first_token_seconds_count", **ok) == 2
    assert grew("agentwatch_time_per_output_token_seconds_count", **ok) == 2
    assert grew("agentwatch_request_duration_seconds_bucket", le="+Inf", **ok) == 5
    tokens = {"model": "gpt-4o-mini", "provider": "local", "tenant": "ci"}
    assert grew("agentwatch_tokens_total", type="input", **tokens) == 5 * PROMPT_TOKENS
    assert grew("agentwatch_tokens_total", type="output", **tokens) == 5 * COMPLETION_TOKENS
    assert grew("agentwatch_cost_usd_total", **tokens) > 0
    assert total(after, "agentwatch_usage_backlog") >= 0


def test_two_workers_count_every_call_once(
    fake_openai: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> None:
    gateway = start_gateway(tmp_path_factory.mktemp("workers"), fake_openai, AGENTWATCH_WORKERS="2")
    sent = 60
    try:

        def one(_: int) -> int:
            # A connection per call, so the kernel spreads them over both workers' accepts.
            response = httpx.post(
                f"{gateway.url}{CHAT}",
                headers={"authorization": f"Bearer {gateway.tenant_key}"},
                json={"model": "gpt-4o-mini", "messages": MESSAGES},
            )
            return response.status_code

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(one, range(sent))) == [200] * sent
        files = list((gateway.workdir / "data" / "prometheus-multiproc").glob("counter_*.db"))
        assert len(files) >= 2, files  # one per worker process
        # Every scrape, whichever worker answers it, adds up all of them.
        for _ in range(4):
            samples = scrape(gateway.url)
            assert total(samples, "agentwatch_requests_total", status="200") == sent
            assert total(samples, "agentwatch_request_duration_seconds_count") == sent
    finally:
        gateway.stop()
