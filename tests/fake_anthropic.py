"""A fake Anthropic Messages API on 127.0.0.1 speaking the real wire format, failures on demand.

It checks requests the way the real API does (required `max_tokens`, alternating user and
assistant turns, no unknown fields, tool results answering tool calls), so a translation bug
fails a test instead of passing silently. The model id picks the behaviour: `fail-529`,
`fail-429`, `fail-400`, `fail-401`, `fail-500`; `stream-error` (an `error` event mid-stream);
`stream-cut` (a clean end before `message_stop`); `choppy-crlf` (CRLF line ends, each event
split across two writes). Given `tools` and no tool result yet, it calls the first tool; given
a tool result, it quotes it; otherwise it says REPLY_WORDS.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fake_server import ThreadedServer

REPLY_WORDS = ["Hello", " from", " fake", " Claude", "."]
INPUT_TOKENS = 12  # uncached input, as Anthropic counts it
CACHE_READ_TOKENS = 5
CACHE_CREATION_TOKENS = 3
PROMPT_TOKENS = INPUT_TOKENS + CACHE_READ_TOKENS + CACHE_CREATION_TOKENS  # OpenAI's sense
START_OUTPUT_TOKENS = 1  # the placeholder `message_start` reports, as the real API does
OUTPUT_TOKENS = 9
COUNTED_TOKENS = 42
TOOL_PREAMBLE = "Let me check."
TOOL_INPUT = {"city": "Paris"}
TOOL_INPUT_PIECES = ["", '{"city"', ': "Par', 'is"}']
TOOL_USE_ID = "toolu_01FakeWeather"
MESSAGE_FIELDS = {
    "model",
    "messages",
    "max_tokens",
    "system",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "metadata",
    "tools",
    "tool_choice",
    "stream",
    "thinking",
    "service_tier",
}
COUNT_FIELDS = {"model", "messages", "system", "tools", "tool_choice", "thinking"}


@dataclass
class FakeAnthropic(ThreadedServer):
    """Runs in its own thread and loop, so synchronous SDK clients can be used in tests."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)

    async def _received(self, request: web.Request) -> dict[str, Any]:
        body: dict[str, Any] = orjson.loads(await request.read())
        self.requests.append(body)
        # Repeated headers are joined, as HTTP allows, so a header sent twice shows in tests.
        self.headers.append(
            {k.lower(): ", ".join(request.headers.getall(k)) for k in request.headers}
        )
        self.paths.append(request.path)
        return body

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await self._received(request)
        refusal = _refusal(request, body, MESSAGE_FIELDS)
        if refusal is not None:
            return refusal
        blocks, stop_reason = _reply(body)
        if body.get("stream"):
            return await _stream(request, body["model"], blocks, stop_reason)
        return _json(
            {
                "id": "msg_01FakeReply",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": blocks,
                "stop_reason": stop_reason,
                "stop_sequence": None,
                "usage": _usage(OUTPUT_TOKENS),
            }
        )

    async def _count_tokens(self, request: web.Request) -> web.Response:
        body = await self._received(request)
        refusal = _refusal(request, body, COUNT_FIELDS)
        return refusal or _json({"input_tokens": COUNTED_TOKENS})


def _refusal(request: web.Request, body: dict[str, Any], fields: set[str]) -> web.Response | None:
    if not request.headers.get("x-api-key"):
        return _error(401, "authentication_error", "x-api-key header is required")
    if not request.headers.get("anthropic-version"):
        return _error(400, "invalid_request_error", "anthropic-version: header is required")
    failure = _failure(str(body.get("model")))
    if failure is not None:
        return failure
    extra = sorted(set(body) - fields)
    if extra:
        return _error(400, "invalid_request_error", f"{extra[0]}: Extra inputs are not permitted")
    problem = _invalid(body, needs_max_tokens=fields is MESSAGE_FIELDS)
    return _error(400, "invalid_request_error", problem) if problem else None


def _invalid(body: dict[str, Any], *, needs_max_tokens: bool) -> str | None:
    if needs_max_tokens and not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    if not isinstance(body.get("system", ""), str | list):
        return "system: Input should be a valid string or list"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    open_calls: set[str] = set()
    for i, message in enumerate(messages):
        role = message.get("role")
        if role != ("user" if i % 2 == 0 else "assistant"):
            return f"messages.{i}.role: roles must alternate between user and assistant"
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for block in blocks:
            if block["type"] == "text" and not block["text"]:
                return f"messages.{i}: text content blocks must be non-empty"
            if block["type"] == "tool_use":
                if role != "assistant" or not isinstance(block.get("input"), dict):
                    return f"messages.{i}: tool_use needs an assistant turn and an object input"
                open_calls.add(block["id"])
            if block["type"] == "tool_result":
                if role != "user" or block["tool_use_id"] not in open_calls:
                    return f"messages.{i}: tool_result for an unknown tool_use id"
                open_calls.discard(block["tool_use_id"])
    return None


def _reply(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    last = body["messages"][-1]["content"]
    results = [b for b in last if b["type"] == "tool_result"] if isinstance(last, list) else []
    if results:
        content = results[0]["content"]
        said = content if isinstance(content, str) else "".join(b["text"] for b in content)
        return [{"type": "text", "text": f"The tool said: {said}"}], "end_turn"
    if body.get("tools"):
        call = {
            "type": "tool_use",
            "id": TOOL_USE_ID,
            "name": body["tools"][0]["name"],
            "input": TOOL_INPUT,
        }
        return [{"type": "text", "text": TOOL_PREAMBLE}, call], "tool_use"
    return [{"type": "text", "text": "".join(REPLY_WORDS)}], "end_turn"


async def _stream(
    request: web.Request, model: str, blocks: list[dict[str, Any]], stop_reason: str
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    frames = [
        f"event: {name}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"
        for name, data in _events(model, blocks, stop_reason)
    ]
    if model == "stream-error":
        # One write: the error event arrives in the same read as the text before it.
        await response.write(b"".join(frames))
        assert request.transport is not None
        request.transport.close()
        return response
    for frame in frames:
        if model != "choppy-crlf":
            await response.write(frame)
            continue
        # Split between the final CR and LF, so a CRLF straddles two reads.
        frame = frame.replace(b"\n", b"\r\n")
        for piece in (frame[:-1], frame[-1:]):
            await response.write(piece)
            await asyncio.sleep(0.002)
    await response.write_eof()
    return response


def _events(
    model: str, blocks: list[dict[str, Any]], stop_reason: str
) -> list[tuple[str, dict[str, Any]]]:
    start: dict[str, Any] = {
        "id": "msg_01FakeStream",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _usage(START_OUTPUT_TOKENS),
    }
    events: list[tuple[str, dict[str, Any]]] = [("message_start", {"message": start})]
    for index, block in enumerate(blocks):
        opening: dict[str, Any]
        if block["type"] == "text":
            opening = {"type": "text", "text": ""}
            words = REPLY_WORDS if block["text"] == "".join(REPLY_WORDS) else [block["text"]]
            deltas = [{"type": "text_delta", "text": word} for word in words]
        else:
            opening = {**block, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in TOOL_INPUT_PIECES]
        events.append(("content_block_start", {"index": index, "content_block": opening}))
        if index == 0:
            events.append(("ping", {}))
        events += [("content_block_delta", {"index": index, "delta": d}) for d in deltas]
        if model == "stream-error":
            overloaded = {"type": "overloaded_error", "message": "Overloaded"}
            events.append(("error", {"error": overloaded}))
            break
        if model == "stream-cut":
            break
        events.append(("content_block_stop", {"index": index}))
    else:
        delta = {"delta": {"stop_reason": stop_reason, "stop_sequence": None}}
        events.append(("message_delta", delta | {"usage": {"output_tokens": OUTPUT_TOKENS}}))
        events.append(("message_stop", {}))
    return [(name, {"type": name, **data}) for name, data in events]


def _usage(output_tokens: int) -> dict[str, int]:
    return {
        "input_tokens": INPUT_TOKENS,
        "cache_creation_input_tokens": CACHE_CREATION_TOKENS,
        "cache_read_input_tokens": CACHE_READ_TOKENS,
        "output_tokens": output_tokens,
    }


def _json(payload: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


def _error(status: int, kind: str, message: str) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return _json(body | {"request_id": "req_01Fake"}, status)


def _failure(model: str) -> web.Response | None:
    if model == "fail-529":
        return _error(529, "overloaded_error", "Overloaded")
    if model == "fail-429":
        response = _error(429, "rate_limit_error", "Number of request tokens exceeds your limit")
        response.headers["retry-after"] = "7"
        return response
    if model == "fail-400":
        return _error(400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000")
    if model == "fail-401":
        return _error(401, "authentication_error", "invalid x-api-key")
    if model == "fail-500":
        return _error(500, "api_error", "Internal server error")
    return None
