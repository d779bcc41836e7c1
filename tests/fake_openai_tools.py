"""A fake OpenAI chat-completions upstream on 127.0.0.1 that calls tools, in the real wire format.

With tools and no tool results yet it says `PREAMBLE` and calls the first tool with
`{"city": "Paris"}` and, when there is one, the second with `{}`; once there is a
tool result in the conversation it answers with `ANSWER_PREFIX` and those results.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

PREAMBLE = ["Let me ", "check."]
FIRST_ARGUMENTS = ['{"city":', ' "Paris"}']
ANSWER_PREFIX = "Tools said: "
PROMPT_TOKENS = 40
COMPLETION_TOKENS = 9
CACHED_TOKENS = 8


@dataclass
class FakeOpenAITools:
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._start())
            ready.set()
            self._loop.run_forever()
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="fake-openai-tools")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake OpenAI tools upstream did not start")

    def stop(self) -> None:
        assert self._loop is not None and self._runner is not None and self._thread is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.requests.append(body)
        text, calls = _reply(body)
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
            if calls:
                message["tool_calls"] = [_whole_call(c) for c in calls]
            choice = {"index": 0, "message": message, "finish_reason": _finish(calls)}
            completion = {"id": "chatcmpl-tools", "object": "chat.completion", "choices": [choice]}
            return web.Response(
                body=orjson.dumps(completion | {"usage": _usage()}),
                content_type="application/json",
            )
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(_event({"role": "assistant", "content": ""}))
        for piece in text:
            await response.write(_event({"content": piece}))
        for index, (call_id, name, pieces) in enumerate(calls):
            head = {"index": index, "id": call_id, "type": "function"}
            await response.write(
                _event({"tool_calls": [head | {"function": {"name": name, "arguments": ""}}]})
            )
            for piece in pieces:
                call = {"index": index, "function": {"arguments": piece}}
                await response.write(_event({"tool_calls": [call]}))
        await response.write(_event({}, _finish(calls)))
        if (body.get("stream_options") or {}).get("include_usage"):
            final = {"id": "chatcmpl-tools", "object": "chat.completion.chunk", "choices": []}
            await response.write(b"data: " + orjson.dumps(final | {"usage": _usage()}) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


Call = tuple[str, str, list[str]]  # id, name, argument pieces


def _reply(body: dict[str, Any]) -> tuple[list[str], list[Call]]:
    messages = body["messages"]
    results = [m["content"] for m in messages if m["role"] == "tool"]
    if results:
        return [ANSWER_PREFIX + " | ".join(results)], []
    tools = body.get("tools") or []
    calls: list[Call] = []
    if tools:
        calls.append(("call_first", tools[0]["function"]["name"], FIRST_ARGUMENTS))
    if len(tools) > 1:
        calls.append(("call_second", tools[1]["function"]["name"], ["{}"]))
    return PREAMBLE, calls


def _whole_call(call: Call) -> dict[str, Any]:
    call_id, name, pieces = call
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": "".join(pieces)},
    }


def _finish(calls: list[Call]) -> str:
    return "tool_calls" if calls else "stop"


def _event(delta: dict[str, Any], finish: str | None = None) -> bytes:
    chunk = {
        "id": "chatcmpl-tools",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _usage() -> dict[str, Any]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        "prompt_tokens_details": {"cached_tokens": CACHED_TOKENS},
    }
