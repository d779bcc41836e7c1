"""With REDIS_URL set, a circuit one replica opens is open on every replica."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import openai
import redis

from tests.fake_flaky import FlakyUpstream
from tests.fake_openai import FakeOpenAI
from tests.support import Gateway, new_key

REDIS_URL = "redis://127.0.0.1:6379/0"


def replica(tmp_path: Path, name: str, config: str, key: str, prefix: str) -> Gateway:
    workdir = tmp_path / name
    workdir.mkdir()
    gateway = Gateway(
        workdir=workdir,
        database_url=f"sqlite:///{workdir / 'gw.db'}",
        config=config,
        env={"REDIS_URL": REDIS_URL, "AGENTWATCH_REDIS_PREFIX": prefix},
        tenant_key=key,
    )
    gateway.start()
    return gateway


def ask(gateway: Gateway) -> str:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.tenant_key, max_retries=0)
    reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    return reply.choices[0].message.content or ""


def test_an_open_circuit_is_shared_by_all_replicas(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    prefix = f"agentwatch-test-{secrets.token_hex(4)}:"
    flaky = FlakyUpstream()
    flaky.start()
    key = new_key()
    config = f"""
providers:
  - {{name: flaky, type: openai_compatible, base_url: "{flaky.base_url}"}}
  - {{name: steady, type: openai_compatible, base_url: "{fake_openai.base_url}"}}
models:
  - name: m
    strategy: fallback
    retries: 0
    circuit: {{failure_threshold: 2, cooldown_s: 60}}
    routes:
      - {{provider: flaky, model: gpt-4o-mini, order: 1}}
      - {{provider: steady, model: gpt-4o-mini, order: 2}}
tenants:
  - {{name: t, api_keys: ["{key}"]}}
"""
    first = replica(tmp_path, "a", config, key, prefix)
    second = replica(tmp_path, "b", config, key, prefix)
    store = redis.Redis.from_url(REDIS_URL)
    try:
        assert ask(second)  # the second replica has used the route: its breaker exists
        assert flaky.hits == 1
        for _ in range(2):  # the first replica sees two failures and opens the circuit
            assert ask(first)
        assert flaky.hits == 3
        assert list(store.scan_iter(match=f"{prefix}circuit:*")), "the open circuit is in Redis"
        time.sleep(2.5)  # a few of the replicas' one-second polls
        for _ in range(5):
            assert ask(second)
        assert flaky.hits == 3, "the second replica skipped the route the first one opened"
    finally:
        first.stop()
        second.stop()
        flaky.stop()
        for name in store.scan_iter(match=f"{prefix}*"):
            store.delete(name)
        store.close()
