"""A fake OpenAI upstream on 127.0.0.1 for the Responses front end, in the real wire formats.

`POST /v1/chat/completions` answers by upstream model id: `tools` calls two tools (and, once
the conversation ends with tool results, answers in text), `truncated` stops at the token
limit, anything else says hello. `POST /v1/responses` is OpenAI's own Responses API, streamed
in its real event format; the model `native-break` drops the connection mid-stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fake_server import ThreadedServer

CHAT_TEXT = ["Hi", " there", "!"]
FINAL_TEXT = "It is sunny in Paris."
TOOL_CALLS = [
    ("call_weather", "get_weather", ['{"city":', '"Paris"}']),
    ("call_time", "get_time", ['{"zone":', '"CET"}']),
]
CHAT_USAGE = {"prompt": 21, "completion": 9, "cached": 5, "reasoning": 2}
NATIVE_TEXT = ["Native", " hello"]
NATIVE_USAGE = {"input": 31, "output": 7, "cached": 4}


@dataclass
class FakeResponsesUpstream(ThreadedServer):
    """Runs in its own thread and loop, so synchronous SDK clients can be used in tests."""

    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def last(self, path: str) -> dict[str, Any]:
        return next(body for seen, body in reversed(self.requests) if seen == path)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/responses", self._responses)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.requests.append(("/chat/completions", body))
        deltas = _chat_deltas(body)
        finish = "length" if body["model"] == "truncated" else "stop"
        if any("tool_calls" in d for d in deltas):
            finish = "tool_calls"
        if not body.get("stream"):
            return _json(_completion(body["model"], deltas, finish))
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for delta in deltas:
            await response.write(_data(_chunk(body["model"], delta, None)))
        await response.write(_data(_chunk(body["model"], {}, finish)))
        final = _chunk(body["model"], {}, None) | {"choices": [], "usage": _chat_usage()}
        await response.write(_data(final) + b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.requests.append(("/responses", body))
        model = body["model"]
        done = _native_response(model, "completed", "".join(NATIVE_TEXT))
        if not body.get("stream"):
            return _json(done)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for event in _native_events(model, done):
            if model == "native-break" and event["type"] == "response.output_text.done":
                assert request.transport is not None
                request.transport.close()
                return response
            kind = event["type"]
            await response.write(f"event: {kind}\ndata: ".encode() + orjson.dumps(event) + b"\n\n")
        await response.write_eof()
        return response


def _chat_deltas(body: dict[str, Any]) -> list[dict[str, Any]]:
    if body["model"] != "tools" or body["messages"][-1]["role"] == "tool":
        text = [FINAL_TEXT] if body["messages"][-1]["role"] == "tool" else CHAT_TEXT
        return [{"role": "assistant", "content": ""}, *({"content": t} for t in text)]
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": None}]
    for index, (call_id, name, pieces) in enumerate(TOOL_CALLS):
        deltas.append(
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": ""},
                    }
                ]
            }
        )
        for piece in pieces:
            deltas.append({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    return deltas


def _completion(model: str, deltas: list[dict[str, Any]], finish: str) -> dict[str, Any]:
    text = "".join(d.get("content") or "" for d in deltas)
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if finish == "tool_calls":
        message["tool_calls"] = [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": "".join(pieces)},
            }
            for call_id, name, pieces in TOOL_CALLS
        ]
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": _chat_usage(),
    }


def _chunk(model: str, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }


def _chat_usage() -> dict[str, Any]:
    prompt, completion = CHAT_USAGE["prompt"], CHAT_USAGE["completion"]
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": CHAT_USAGE["cached"]},
        "completion_tokens_details": {"reasoning_tokens": CHAT_USAGE["reasoning"]},
    }


def _native_response(model: str, status: str, text: str) -> dict[str, Any]:
    done = status == "completed"
    message = {
        "type": "message",
        "id": "msg_upstream",
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}] if done else [],
    }
    usage = {
        "input_tokens": NATIVE_USAGE["input"],
        "input_tokens_details": {
            "cached_tokens": NATIVE_USAGE["cached"],
            "cache_write_tokens": 0,
        },
        "output_tokens": NATIVE_USAGE["output"],
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": NATIVE_USAGE["input"] + NATIVE_USAGE["output"],
    }
    return {
        "id": "resp_upstream",
        "object": "response",
        "created_at": 1_700_000_000,
        "status": status,
        "model": model,
        "output": [message] if done else [],
        "usage": usage if done else None,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "metadata": {},
        "parallel_tool_calls": True,
        "temperature": 1.0,
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
    }


def _native_events(model: str, done: dict[str, Any]) -> list[dict[str, Any]]:
    started = _native_response(model, "in_progress", "")
    where = {"item_id": "msg_upstream", "output_index": 0, "content_index": 0}
    message = {**done["output"][0], "status": "in_progress", "content": []}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
        {"type": "response.output_item.added", "output_index": 0, "item": message},
        {
            "type": "response.content_part.added",
            **where,
            "part": {"type": "output_text", "text": "", "annotations": []},
        },
        *(
            {"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []}
            for piece in NATIVE_TEXT
        ),
        {
            "type": "response.output_text.done",
            **where,
            "text": "".join(NATIVE_TEXT),
            "logprobs": [],
        },
        {"type": "response.content_part.done", **where, "part": done["output"][0]["content"][0]},
        {"type": "response.output_item.done", "output_index": 0, "item": done["output"][0]},
        {"type": "response.completed", "response": done},
    ]
    return [{**event, "sequence_number": n} for n, event in enumerate(events)]


def _data(chunk: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _json(payload: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(payload), content_type="application/json")
