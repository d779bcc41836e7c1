"""A burst beyond a provider's concurrency limit is refused at once, not queued without bound."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.fake_openai import FakeOpenAI
from tests.support import Gateway, new_key, running_gateway

BURST = 20


def config(upstream: str, key: str) -> str:
    return f"""
providers:
  - name: narrow
    type: openai_compatible
    base_url: "{upstream}"
    max_concurrency: 2
    max_queue: 2
models:
  - name: held
    retries: 0
    routes: [{{provider: narrow, model: slow-1}}]
tenants:
  - {{name: t, api_keys: ["{key}"]}}
"""


async def burst(gateway: Gateway) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=BURST)
    async with httpx.AsyncClient(base_url=gateway.url, limits=limits, timeout=30) as client:
        body = {"model": "held", "messages": [{"role": "user", "content": "hi"}]}
        headers = {"authorization": f"Bearer {gateway.tenant_key}"}
        calls = [
            client.post("/v1/chat/completions", json=body, headers=headers) for _ in range(BURST)
        ]
        return list(await asyncio.gather(*calls))


def test_burst_beyond_the_limit_is_refused_at_once(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    key = new_key()
    with running_gateway(tmp_path, config(fake_openai.base_url, key), key) as gateway:
        before = len(fake_openai.requests)
        responses = asyncio.run(burst(gateway))
        ok = [r for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code == 503]
        assert len(ok) == 4, "two running and two queued get through"
        assert len(refused) == BURST - 4
        for response in refused:
            assert response.headers["retry-after"] == "1"
            assert response.json()["error"]["code"] == "route_saturated"
        assert len(fake_openai.requests) - before == 4, "refused calls never reach the upstream"
        rows = gateway.wait_for_usage(BURST, model="held")
        assert sorted(r["status"] for r in rows) == [200] * 4 + [503] * (BURST - 4)
        # The slots come back: the next call goes through.
        again = asyncio.run(burst(gateway))
        assert sum(r.status_code == 200 for r in again) == 4
        # Slots and queue are metrics, scraped in Prometheus's text format.
        samples = {
            (sample.name, sample.labels.get("provider")): sample.value
            for family in text_string_to_metric_families(httpx.get(f"{gateway.url}/metrics").text)
            for sample in family.samples
        }
        assert samples[("agentwatch_upstream_in_flight", "narrow")] == 0
        assert samples[("agentwatch_upstream_queue_depth", "narrow")] == 0
