"""The pivot's stream (OpenAI chat.completion.chunk events) as Anthropic's Messages stream.

Anthropic clients validate the event order (`message_start`, then per block `content_block_start`
/ `content_block_delta`... / `content_block_stop`, then `message_delta` and `message_stop`), so
the translator keeps just enough state to open and close blocks in that order as chunks arrive.
"""

from __future__ import annotations

import orjson

from agentwatch.errors import GatewayError, UpstreamError
from agentwatch.frontends.messages_wire import (
    anthropic_usage,
    error_object,
    message_id,
    new_tool_use_id,
    stop_reason,
)
from agentwatch.providers.base import JSONObject, Usage

_EVENT_END = b"\n\n"
_MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


def sse_event(name: bytes, data: JSONObject) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(data) + _EVENT_END


class MessagesStreamTranslator:
    """One per stream; `model` is the alias the client asked for, echoed in `message_start`."""

    __slots__ = (
        "_failure",
        "_model",
        "_next_index",
        "_open_index",
        "_open_kind",
        "_started",
        "_stop_reason",
        "_tool_id",
        "_tool_key",
        "_tool_used",
        "_usage",
    )

    def __init__(self, model: str) -> None:
        self._model = model
        self._started = False
        self._next_index = 0
        self._open_index = 0
        self._open_kind: str | None = None  # "text", "tool_use", or None when no block is open
        self._tool_key: int | str | None = None  # the open tool call's OpenAI index (or id)
        self._tool_id: str | None = None
        self._tool_used = False
        self._stop_reason: str | None = None
        self._usage: Usage | None = None
        self._failure: GatewayError | None = None

    def translate(self, events: bytes) -> bytes:
        if self._failure is not None:
            raise self._failure
        out: list[bytes] = []
        for event in events.split(_EVENT_END):
            data = _data(event)
            if data is None or data == b"[DONE]":
                continue
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                # Raised on the next call, so what this batch already translated still goes out.
                self._failure = UpstreamError("the upstream stream sent an event that is not JSON")
                break
            if isinstance(chunk, dict):
                self._chunk(chunk, out)
                if self._failure is not None:
                    break
        return b"".join(out)

    def finish(self, usage: Usage | None) -> bytes:
        if self._failure is not None:
            raise self._failure
        out: list[bytes] = []
        if not self._started:
            out.append(self._message_start(None, None))
        self._close(out)
        reason = stop_reason(self._stop_reason, has_tool_use=self._tool_used)
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": None},
            "usage": anthropic_usage(usage or self._usage),
        }
        out.append(sse_event(b"message_delta", delta))
        out.append(_MESSAGE_STOP)
        return b"".join(out)

    def error(self, error: GatewayError) -> bytes:
        return sse_event(b"error", error_object(error))

    def _chunk(self, chunk: JSONObject, out: list[bytes]) -> None:
        usage = Usage.from_openai(chunk.get("usage"))
        if usage is not None:
            self._usage = usage
        if not self._started:
            out.append(self._message_start(chunk.get("id"), usage))
        error = chunk.get("error")
        if error is not None:
            message = error.get("message") if isinstance(error, dict) else error
            self._failure = UpstreamError(f"the upstream stream failed: {message}")
            return
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return  # the usage-only chunk, or a keep-alive
        choice = choices[0]
        delta = choice.get("delta")
        if isinstance(delta, dict):
            text = delta.get("content")
            if isinstance(text, str) and text:
                self._text(text, out)
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                for call in calls:
                    if isinstance(call, dict):
                        self._tool_call(call, out)
        finish = choice.get("finish_reason")
        if isinstance(finish, str):
            self._stop_reason = finish

    def _message_start(self, upstream_id: object, usage: Usage | None) -> bytes:
        self._started = True
        start_usage = anthropic_usage(usage)
        message: JSONObject = {
            "id": message_id(upstream_id),
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**start_usage, "output_tokens": 1},
        }
        return sse_event(b"message_start", {"type": "message_start", "message": message})

    def _text(self, text: str, out: list[bytes]) -> None:
        if self._open_kind != "text":
            self._open(out, {"type": "text", "text": ""})
        delta = {"type": "text_delta", "text": text}
        out.append(_delta(self._open_index, delta))

    def _tool_call(self, call: JSONObject, out: list[bytes]) -> None:
        index, call_id = call.get("index"), call.get("id")
        key = index if isinstance(index, int) else call_id if isinstance(call_id, str) else None
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        # A new OpenAI index, or a new id at the same index (some servers reuse index 0),
        # starts a new tool_use block; later pieces of one call carry neither.
        new_id = isinstance(call_id, str) and call_id and call_id != self._tool_id
        if self._open_kind != "tool_use" or key != self._tool_key or new_id:
            tool_id = call_id if isinstance(call_id, str) and call_id else new_tool_use_id()
            name = function.get("name")
            block = {
                "type": "tool_use",
                "id": tool_id,
                "name": name if isinstance(name, str) else "",
                "input": {},
            }
            self._open(out, block)
            self._tool_key, self._tool_id, self._tool_used = key, tool_id, True
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            delta = {"type": "input_json_delta", "partial_json": arguments}
            out.append(_delta(self._open_index, delta))

    def _open(self, out: list[bytes], block: JSONObject) -> None:
        self._close(out)
        self._open_index, self._next_index = self._next_index, self._next_index + 1
        self._open_kind = block["type"]
        start = {"type": "content_block_start", "index": self._open_index, "content_block": block}
        out.append(sse_event(b"content_block_start", start))

    def _close(self, out: list[bytes]) -> None:
        if self._open_kind is None:
            return
        stop = {"type": "content_block_stop", "index": self._open_index}
        out.append(sse_event(b"content_block_stop", stop))
        self._open_kind, self._tool_key, self._tool_id = None, None, None


class NativeStreamRelay:
    """For streams that already are Anthropic events: passes them on byte for byte, but frames
    a gateway failure as Anthropic's `event: error`, since the SDKs skip an unnamed `data:`."""

    __slots__ = ()

    def translate(self, events: bytes) -> bytes:
        return events

    def finish(self, usage: Usage | None) -> bytes:
        return b""

    def error(self, error: GatewayError) -> bytes:
        return sse_event(b"error", error_object(error))


def _delta(index: int, delta: JSONObject) -> bytes:
    return sse_event(
        b"content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
    )


def _data(event: bytes) -> bytes | None:
    """The data of one SSE event; the pivot's events are a single `data:` line."""
    event = event.strip()
    if event.startswith(b"data:") and b"\n" not in event:
        return event[5:].strip()
    lines = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None
