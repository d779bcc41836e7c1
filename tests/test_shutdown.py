"""SIGTERM under load loses no usage: every answered request has its ledger row."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import BACKENDS, standard_config
from tests.fake_openai import FakeOpenAI
from tests.support import Gateway, database, new_key

REQUESTS = 120


async def fire(gateway: Gateway, key: str, stream: bool, upstream: FakeOpenAI) -> list[int]:
    seen_before = len(upstream.requests)
    limits = httpx.Limits(max_connections=REQUESTS)
    async with httpx.AsyncClient(base_url=gateway.url, limits=limits, timeout=30) as client:

        async def one(i: int) -> int:
            body = {
                "model": "slow-ish",
                "messages": [{"role": "user", "content": f"request {i}"}],
                "stream": stream and i % 2 == 0,
            }
            try:
                response = await client.post(
                    "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
                )
                await response.aread()
                return response.status_code
            except httpx.TransportError:
                return -1  # refused after shutdown began: never reached the gateway's router

        tasks = [asyncio.create_task(one(i)) for i in range(REQUESTS)]
        # SIGTERM only once every request has reached the upstream, i.e. is in flight.
        deadline = time.monotonic() + 30
        # (polled: the count lives in the fake upstream's own thread and loop)
        while len(upstream.requests) - seen_before < REQUESTS and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        assert gateway.process is not None
        gateway.process.send_signal(signal.SIGTERM)
        return list(await asyncio.gather(*tasks))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_sigterm_under_load_loses_no_usage(
    backend: str, stream: bool, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    key = new_key()
    config = standard_config(fake_openai.base_url, key, new_key())
    config = config.replace(
        "models:\n",
        "models:\n  - name: slow-ish\n    routes:\n"
        "      - provider: local\n        model: slow-1.5\n",
        1,
    )
    with database(backend, tmp_path) as url:
        gateway = Gateway(
            workdir=tmp_path,
            database_url=url,
            config=config,
            # Only the shutdown flush can save these rows: the periodic one never comes.
            env={
                "UPSTREAM_KEY": "k",
                "CI_TENANT_KEY": key,
                "AGENTWATCH_USAGE_FLUSH_SECONDS": "600",
            },
        )
        gateway.start()
        statuses = asyncio.run(fire(gateway, key, stream, fake_openai))
        assert gateway.process is not None
        # uvicorn re-raises the signal once shut down cleanly, so -SIGTERM is a clean exit.
        assert gateway.process.wait(30) in (0, -signal.SIGTERM), gateway.log_path.read_text()
        answered = [s for s in statuses if s > 0]
        assert len(answered) == REQUESTS, f"in-flight requests were dropped: {statuses}"
        assert set(answered) == {200}

        restarted = Gateway(
            workdir=tmp_path,
            database_url=url,
            config=config,
            env={**gateway.env, "AGENTWATCH_USAGE_FLUSH_SECONDS": "0.1"},
            port=gateway.port,
        )
        restarted.start()
        try:
            deadline = time.monotonic() + 10
            rows = restarted.usage(limit=1000, model="slow-ish")["data"]
            while len(rows) < len(answered) and time.monotonic() < deadline:
                time.sleep(0.1)
                rows = restarted.usage(limit=1000, model="slow-ish")["data"]
            assert len(rows) == len(answered)
            assert len({r["request_id"] for r in rows}) == len(rows)
            assert all(r["status"] == 200 and r["completion_tokens"] > 0 for r in rows)
        finally:
            restarted.stop()
