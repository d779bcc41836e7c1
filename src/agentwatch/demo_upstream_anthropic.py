"""The demo upstream's Anthropic Messages API (`POST /v1/messages`, `/v1/messages/count_tokens`):
request checks and canned answers in Anthropic's wire format. HTTP framing is `demo_upstream`'s.

Like the OpenAI side it is built for speed: the stream's events after `message_start` are the
same for every request, so they are serialised once. Headers (`x-api-key`,
`anthropic-version`) are not checked; the strict fake in the tests does that.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class JsonAnswer:
    status: int
    body: bytes


@dataclass(frozen=True, slots=True)
class StreamAnswer:
    """The SSE events of one stream, one `event: NAME\\ndata: JSON\\n\\n` frame each."""

    frames: list[bytes]
    model: str


class AnthropicMessages:
    """Answers Messages requests with one canned reply, streamed as `pieces` text deltas."""

    def __init__(self, pieces: Sequence[str]) -> None:
        self._ids = itertools.count(1)  # ids need only be unique within a run
        self._text = "".join(pieces)
        self._output_tokens = len(pieces)
        text_block = {"type": "text", "text": ""}
        stop = {"stop_reason": "end_turn", "stop_sequence": None}
        tail = [_frame("content_block_start", {"index": 0, "content_block": text_block})]
        tail.append(_frame("ping", {}))
        for piece in pieces:
            delta = {"type": "text_delta", "text": piece}
            tail.append(_frame("content_block_delta", {"index": 0, "delta": delta}))
        tail.append(_frame("content_block_stop", {"index": 0}))
        usage = {"output_tokens": self._output_tokens}
        tail.append(_frame("message_delta", {"delta": stop, "usage": usage}))
        tail.append(_frame("message_stop", {}))
        self._stream_tail = tail

    def answer(self, body: bytes) -> JsonAnswer | StreamAnswer:
        try:
            payload, model = _parse(body)
            _check_message(payload)
        except _Rejected as exc:
            return _error(str(exc))
        input_tokens = max(1, len(body) // 4)
        message_id = f"msg_demo{next(self._ids):020d}"
        if payload.get("stream") is True:
            start = _message(message_id, model, [], None, _usage(input_tokens, 1))
            frames = [_frame("message_start", {"message": start}), *self._stream_tail]
            return StreamAnswer(frames, model)
        content = [{"type": "text", "text": self._text}]
        usage = _usage(input_tokens, self._output_tokens)
        return JsonAnswer(
            200, orjson.dumps(_message(message_id, model, content, "end_turn", usage))
        )

    def count_tokens(self, body: bytes) -> JsonAnswer:
        try:
            payload, _ = _parse(body)
            _check_messages(payload)
        except _Rejected as exc:
            return _error(str(exc))
        return JsonAnswer(200, orjson.dumps({"input_tokens": max(1, len(body) // 4)}))


class _Rejected(Exception):
    """The request is invalid; the message is Anthropic's wording for it."""


def _parse(body: bytes) -> tuple[JsonObject, str]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _Rejected(f"There was an issue with your request body: {exc}") from exc
    if not isinstance(payload, dict):
        raise _Rejected("Input should be a valid dictionary")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise _Rejected("model: Field required")
    return payload, model


def _check_message(payload: JsonObject) -> None:
    max_tokens = payload.get("max_tokens")
    if max_tokens is None:
        raise _Rejected("max_tokens: Field required")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise _Rejected("max_tokens: Input should be an integer greater than or equal to 1")
    _check_messages(payload)


def _check_messages(payload: JsonObject) -> None:
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _Rejected("messages: at least one message is required")


def _message(
    message_id: str, model: str, content: list[JsonObject], stop: str | None, usage: JsonObject
) -> JsonObject:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }


def _usage(input_tokens: int, output_tokens: int) -> JsonObject:
    # `message_start` reports output_tokens 1, a placeholder; `message_delta` the real count.
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _frame(name: str, data: JsonObject) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (name.encode(), orjson.dumps({"type": name, **data}))


def _error(message: str) -> JsonAnswer:
    error = {"type": "invalid_request_error", "message": message}
    return JsonAnswer(400, orjson.dumps({"type": "error", "error": error}))
