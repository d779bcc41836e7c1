"""A provider with several upstream keys rests a throttled or refused key and uses the next."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import openai
import orjson
from aiohttp import web

from tests.fake_openai import _text_completion
from tests.fake_server import ThreadedServer
from tests.support import Gateway, new_key


@dataclass
class KeyedUpstream(ThreadedServer):
    """Answers 429 to `throttled` keys, 401 to `refused` ones, and normally to the rest."""

    throttled: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)
    seen: Counter[str] = field(default_factory=Counter)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)

    async def _chat(self, request: web.Request) -> web.Response:
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        self.seen[key] += 1
        if key in self.throttled:
            error = {"error": {"message": "slow down", "type": "requests", "code": None}}
            return web.json_response(error, status=429, headers={"retry-after": "30"})
        if key in self.refused:
            error = {"error": {"message": "bad key", "type": "invalid_request_error", "code": None}}
            return web.json_response(error, status=401)
        body = orjson.loads(await request.read())
        return web.json_response(_text_completion(body["model"], "ok"))


def test_throttled_and_refused_keys_are_rested(tmp_path: Path) -> None:
    upstream = KeyedUpstream(throttled={"key-a"}, refused={"key-b"})
    upstream.start()
    tenant = new_key()
    config = f"""
providers:
  - name: pool
    type: openai_compatible
    base_url: {upstream.origin}/v1
    api_keys: [key-a, key-b, key-c]
models:
  - name: m
    retries: 0
    routes: [{{provider: pool, model: gpt-4o-mini}}]
tenants:
  - {{name: t, api_keys: ["{tenant}"]}}
"""
    gateway = Gateway(
        workdir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'gw.db'}",
        config=config,
        tenant_key=tenant,
    )
    gateway.start()
    try:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=tenant, max_retries=0)
        for _ in range(5):
            reply = client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
            assert reply.choices[0].message.content == "ok"
        # Each bad key was tried once, then rested; every call after the first used key-c.
        assert upstream.seen == Counter({"key-a": 1, "key-b": 1, "key-c": 5})
        rows = gateway.wait_for_usage(5, model="m")
        assert sorted(r["attempts"] for r in rows) == [1, 1, 1, 1, 3]
        assert {r["status"] for r in rows} == {200}
    finally:
        gateway.stop()
        upstream.stop()
