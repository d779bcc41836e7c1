"""A fake upstream that reports the same usage streamed or not, and can stall mid-stream.

OpenAI chat completions and Anthropic Messages on one 127.0.0.1 server. The model id picks
the behaviour: containing `no-usage`, no usage at all (not even when a stream is asked for
it); containing `stall`, STALL_AFTER content events and then nothing until the client goes
(no usage: an OpenAI stream reports it last; Anthropic's `message_start` gives the input);
anything else answers WORDS with USAGE (Anthropic: ANTHROPIC_USAGE)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fake_server import ThreadedServer

WORDS = [" hello", " world", " there", " hello", " world"]
STALL_AFTER = 3
STALL_SECONDS = 60.0
USAGE = {
    "prompt_tokens": 40,
    "completion_tokens": 25,
    "total_tokens": 65,
    "prompt_tokens_details": {"cached_tokens": 8},
    "completion_tokens_details": {"reasoning_tokens": 10},
}
ANTHROPIC_USAGE = {"input_tokens": 30, "cache_read_input_tokens": 5, "output_tokens": 12}
ANTHROPIC_STALL_INPUT = 50


@dataclass
class FakeMetered(ThreadedServer):
    requests: list[dict[str, Any]] = field(default_factory=list)
    hung_up: list[str] = field(default_factory=list)  # models whose stream the gateway left

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/messages", self._messages)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.requests.append(body)
        model = body["model"]
        if not body.get("stream"):
            answer = _chunk(model, {"role": "assistant", "content": "".join(WORDS)})
            answer["object"] = "chat.completion"
            answer["choices"][0]["message"] = answer["choices"][0].pop("delta")
            answer["choices"][0]["finish_reason"] = "stop"
            if "no-usage" not in model:
                answer["usage"] = USAGE
            return web.Response(body=orjson.dumps(answer), content_type="application/json")
        response = await _sse(request)
        words = WORDS[:STALL_AFTER] if "stall" in model else WORDS
        events = [_chunk(model, {"role": "assistant", "content": ""})]
        events += [_chunk(model, {"content": word}) for word in words]
        await response.write(b"".join(_data(event) for event in events))
        if "stall" in model:
            return await self._stall(model, response)
        await response.write(_data(_chunk(model, {}, "stop")))
        include = (body.get("stream_options") or {}).get("include_usage")
        if include and "no-usage" not in model:
            await response.write(_data(_chunk(model, None) | {"choices": [], "usage": USAGE}))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.requests.append(body)
        model = body["model"]
        text = "".join(WORDS)
        if not body.get("stream"):
            message = _message(model, [{"type": "text", "text": text}], ANTHROPIC_USAGE)
            message["stop_reason"] = "end_turn"
            return web.Response(body=orjson.dumps(message), content_type="application/json")
        response = await _sse(request)
        stall = "stall" in model
        start_usage = (
            {"input_tokens": ANTHROPIC_STALL_INPUT, "output_tokens": 1}
            if stall
            else {**ANTHROPIC_USAGE, "output_tokens": 1}
        )
        events = [
            ("message_start", {"message": _message(model, [], start_usage)}),
            ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        ]
        for word in WORDS[:STALL_AFTER] if stall else WORDS:
            delta = {"type": "text_delta", "text": word}
            events.append(("content_block_delta", {"index": 0, "delta": delta}))
        await response.write(b"".join(_event(name, data) for name, data in events))
        if stall:
            return await self._stall(model, response)
        closing = [
            ("content_block_stop", {"index": 0}),
            (
                "message_delta",
                {
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": ANTHROPIC_USAGE["output_tokens"]},
                },
            ),
            ("message_stop", {}),
        ]
        await response.write(b"".join(_event(name, data) for name, data in closing))
        await response.write_eof()
        return response

    async def _stall(self, model: str, response: web.StreamResponse) -> web.StreamResponse:
        try:
            await asyncio.sleep(STALL_SECONDS)
        except asyncio.CancelledError:
            self.hung_up.append(model)
            raise
        return response


async def _sse(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    return response


def _chunk(model: str, delta: dict[str, Any] | None, finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-metered",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}],
    }


def _data(chunk: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _message(model: str, content: list[dict[str, Any]], usage: dict[str, int]) -> dict[str, Any]:
    return {
        "id": "msg_metered",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps({"type": name, **data}) + b"\n\n"
