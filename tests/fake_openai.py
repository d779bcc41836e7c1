"""A fake OpenAI API on 127.0.0.1 speaking the real wire format, with failures on demand.

The upstream model id picks the behaviour, so a gateway config can route aliases to failures:
`fail-500`, `fail-429`, `fail-400`, `fail-401`, `slow-<seconds>`, `stream-forever`,
`stream-break`; any other id answers normally.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fake_server import ThreadedServer

REPLY_WORDS = ["Hello", " from", " the", " fake", " upstream", "."]
PROMPT_TOKENS = 11
COMPLETION_TOKENS = len(REPLY_WORDS)
CACHED_TOKENS = 3
TOOL_CALL_ID = "call_fake_1"
TOOL_ARGUMENTS = '{"city": "Paris"}'
TOOL_REPLY_PREFIX = "Tool result: "


@dataclass
class FakeOpenAI(ThreadedServer):
    """Runs in its own thread and loop, so synchronous SDK clients can be used in tests."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    peers: list[tuple[str, int]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/completions", self._legacy_completions)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_get("/v1/models", self._models)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        assert request.transport is not None
        self.peers.append(request.transport.get_extra_info("peername"))
        model = body["model"]
        failure = await _failure(model)
        if failure is not None:
            return failure
        if body.get("stream"):
            return await self._stream(request, body)
        tool = _tool_to_call(body)
        if tool is not None:
            return _json(_tool_call_completion(model, tool))
        if _tool_result(body) is not None:
            return _json(_text_completion(model, f"{TOOL_REPLY_PREFIX}{_tool_result(body)}"))
        return _json(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(REPLY_WORDS)},
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                ],
                "usage": _usage(),
            }
        )

    async def _stream(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        model = body["model"]
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        frame = _spaced_crlf_frame if model == "spaced-crlf" else _compact_frame
        async for chunk in _chunks(model, body):
            data = frame(chunk)
            if model == "spaced-crlf":
                # Split inside the CRLF so the gateway reads "\r" and "\n" apart.
                await response.write(data[:-3])
                await asyncio.sleep(0.005)
                data = data[-3:]
            await response.write(data)
        if model == "stream-break":
            assert request.transport is not None
            request.transport.close()
            return response
        options = body.get("stream_options") or {}
        if options.get("include_usage"):
            final = _chunk(model, None, None) | {"choices": [], "usage": _usage()}
            await response.write(frame(final))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        self.requests.append(body)
        failure = await _failure(body["model"])
        if failure is not None:
            return failure
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        return _json(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}
                    for i in range(len(inputs))
                ],
                "model": body["model"],
                "usage": {"prompt_tokens": 4 * len(inputs), "total_tokens": 4 * len(inputs)},
            }
        )

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        from tests import fake_responses_api as wire  # it imports this module's constants

        body = orjson.loads(await request.read())
        self.requests.append(body)
        failure = await _failure(body["model"])
        if failure is not None:
            return failure
        if not body.get("stream"):
            return _json(wire.response_object(body))
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(wire.stream_events(body))
        await response.write_eof()
        return response

    async def _legacy_completions(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.requests.append(body)
        model = body["model"]

        def piece(text: str, finish: str | None) -> dict[str, Any]:
            choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
            return {
                "id": "cmpl-fake",
                "object": "text_completion",
                "created": 1,
                "model": model,
                "choices": [choice],
            }

        if not body.get("stream"):
            return _json(piece("".join(REPLY_WORDS), "stop") | {"usage": _usage()})
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for word in REPLY_WORDS:
            await response.write(_compact_frame(piece(word, None)))
        await response.write(_compact_frame(piece("", "stop")))
        if (body.get("stream_options") or {}).get("include_usage"):
            await response.write(
                _compact_frame(piece("", None) | {"choices": [], "usage": _usage()})
            )
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _models(self, _request: web.Request) -> web.Response:
        return _json({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]})


async def _chunks(model: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    yield _chunk(model, {"role": "assistant", "content": ""}, None)
    tool = _tool_to_call(body)
    if tool is not None:
        call = {"index": 0, "id": TOOL_CALL_ID, "type": "function"}
        yield _chunk(
            model, {"tool_calls": [call | {"function": {"name": tool, "arguments": ""}}]}, None
        )
        for piece in ('{"city": ', '"Paris"}'):
            yield _chunk(
                model, {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}, None
            )
        yield _chunk(model, {}, "tool_calls")
        return
    result = _tool_result(body)
    if result is not None:
        yield _chunk(model, {"content": TOOL_REPLY_PREFIX}, None)
        yield _chunk(model, {"content": result}, None)
        yield _chunk(model, {}, "stop")
        return
    words = REPLY_WORDS * (10_000 if model == "stream-forever" else 1)
    for word in words:
        if model == "stream-forever":
            await asyncio.sleep(0.02)
        yield _chunk(model, {"content": word}, None)
    if model != "stream-break":
        yield _chunk(model, {}, "stop")


def _tool_to_call(body: dict[str, Any]) -> str | None:
    """The first declared tool's name, when the conversation is waiting for a tool call."""
    tools = body.get("tools") or []
    messages = body.get("messages") or []
    if not tools or (messages and messages[-1].get("role") == "tool"):
        return None
    return str(tools[0]["function"]["name"])


def _tool_result(body: dict[str, Any]) -> str | None:
    messages = body.get("messages") or []
    if messages and messages[-1].get("role") == "tool":
        content = messages[-1].get("content")
        if isinstance(content, list):
            return "".join(part.get("text", "") for part in content)
        return str(content)
    return None


def _text_completion(model: str, text: str) -> dict[str, Any]:
    message = {"role": "assistant", "content": text}
    choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [choice],
        "usage": _usage(),
    }


def _tool_call_completion(model: str, tool: str) -> dict[str, Any]:
    completion = _text_completion(model, "")
    completion["choices"][0]["message"] = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": TOOL_CALL_ID,
                "type": "function",
                "function": {"name": tool, "arguments": TOOL_ARGUMENTS},
            }
        ],
    }
    completion["choices"][0]["finish_reason"] = "tool_calls"
    return completion


def _compact_frame(chunk: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _spaced_crlf_frame(chunk: dict[str, Any]) -> bytes:
    # Some OpenAI-compatible servers pretty-print and end lines with CRLF.
    with_nulls = {"usage": None, **chunk}
    return b"data: " + json.dumps(with_nulls, indent=1).replace("\n", " ").encode() + b"\r\n\r\n"


def _chunk(model: str, delta: dict[str, Any] | None, finish: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish, "logprobs": None}],
    }


def _usage() -> dict[str, Any]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        "prompt_tokens_details": {"cached_tokens": CACHED_TOKENS},
    }


def _json(payload: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


def _error(status: int, message: str, type_: str, code: str | None) -> web.Response:
    error = {"message": message, "type": type_, "param": None, "code": code}
    return _json({"error": error}, status)


async def _failure(model: str) -> web.Response | None:
    if model.startswith("slow-"):
        await asyncio.sleep(float(model.removeprefix("slow-")))
        return None
    if model == "fail-500":
        return _error(500, "The server had an error", "server_error", None)
    if model == "fail-429":
        response = _error(429, "Rate limit reached", "requests", "rate_limit_exceeded")
        response.headers["retry-after"] = "7"
        return response
    if model == "fail-400":
        return _error(
            400,
            "This model's maximum context length is 8 tokens",
            "invalid_request_error",
            "context_length_exceeded",
        )
    if model == "fail-401":
        return _error(401, "Incorrect API key provided", "invalid_request_error", "invalid_api_key")
    return None
