"""A fake OpenAI chat-completions upstream on 127.0.0.1 whose answer the test scripts: a fixed
text, streamed in pieces of a chosen size (so a value can be cut across chunk boundaries).
It keeps every request body it received, to check what left the gateway."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fake_server import ThreadedServer

PROMPT_TOKENS = 9
COMPLETION_TOKENS = 7


@dataclass
class FakeScripted(ThreadedServer):
    reply: str = "Nothing to see here."
    piece: int = 3  # characters per streamed delta
    delay: float = 0.0  # seconds before answering, to keep calls in flight together
    requests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)

    def sent_text(self) -> str:
        """Every string of the last request body, joined: what the upstream got to read."""
        return orjson.dumps(self.requests[-1]).decode()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.requests.append(body)
        if self.delay:
            await asyncio.sleep(self.delay)
        usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS}
        usage["total_tokens"] = PROMPT_TOKENS + COMPLETION_TOKENS
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": "chatcmpl-scripted",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": self.reply},
                            "finish_reason": "stop",
                            "logprobs": None,
                        }
                    ],
                    "usage": usage,
                }
            )
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        pieces = [self.reply[i : i + self.piece] for i in range(0, len(self.reply), self.piece)]
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        deltas += [{"content": piece} for piece in pieces]
        for delta in deltas:
            await response.write(_frame(body["model"], [_choice(delta, None)]))
        await response.write(_frame(body["model"], [_choice({}, "stop")]))
        if (body.get("stream_options") or {}).get("include_usage"):
            await response.write(_frame(body["model"], [], usage))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        self.requests.append(body)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}
                    for i in range(len(inputs))
                ],
                "model": body["model"],
                "usage": {"prompt_tokens": 4, "total_tokens": 4},
            }
        )


def _choice(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}


def _frame(model: str, choices: list[dict[str, Any]], usage: Any = None) -> bytes:
    chunk = {
        "id": "chatcmpl-scripted",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage,
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"
