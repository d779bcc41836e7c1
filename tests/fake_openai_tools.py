"""A fake OpenAI chat-completions upstream on 127.0.0.1 that calls tools, in the real wire format.

With tools and no tool results yet it says `PREAMBLE` and calls the first tool with
`{"city": "Paris"}` and, when there is one, the second with `{}`; once there is a
tool result in the conversation it answers with `ANSWER_PREFIX` and those results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fake_server import ThreadedServer

PREAMBLE = ["Let me ", "check."]
FIRST_ARGUMENTS = ['{"city":', ' "Paris"}']
ANSWER_PREFIX = "Tools said: "
PROMPT_TOKENS = 40
COMPLETION_TOKENS = 9
CACHED_TOKENS = 8


@dataclass
class FakeOpenAITools(ThreadedServer):
    requests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)

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
