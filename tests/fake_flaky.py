"""A fake OpenAI chat upstream whose health is switched at run time, counting the requests it
gets: for circuit-breaker recovery tests."""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson
from aiohttp import web

from tests.fake_server import ThreadedServer

REPLY = "flaky but fine"


@dataclass
class FlakyUpstream(ThreadedServer):
    mode: str = "fail"  # "fail": HTTP 500; "ok": a normal chat completion
    hits: int = 0

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)

    async def _chat(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        self.hits += 1
        if self.mode == "fail":
            error = {"message": "flaky upstream is down", "type": "server_error", "code": None}
            return web.json_response({"error": error}, status=500)
        completion = {
            "id": "chatcmpl-flaky",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": REPLY},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
        }
        return web.json_response(completion)
