"""Stream translators for `/v1/responses`: pivot chunks into Responses events in one pass,
and native Responses events passed through with a Responses-shaped in-band error."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from agentwatch.errors import GatewayError, UpstreamError
from agentwatch.frontends.responses_wire import (
    finished_response,
    function_call_item,
    incomplete_reason,
    message_item,
    new_id,
    output_text,
    reasoning_tokens,
    response_usage,
)
from agentwatch.providers.base import JSONObject, Usage

_SEQUENCE = re.compile(rb'"sequence_number"\s*:\s*(\d+)')


def sse_event(kind: str, body: JSONObject) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"


def error_event(error: GatewayError, sequence_number: int) -> bytes:
    return sse_event(
        "error",
        {
            "type": "error",
            "sequence_number": sequence_number,
            "code": error.code or error.type,
            "message": error.message,
            "param": error.param,
        },
    )


@dataclass(slots=True)
class _Item:
    """One output item being streamed: its place in `output`, its opening form, and the
    text or argument pieces received so far."""

    index: int
    opened: JSONObject
    pieces: list[str] = field(default_factory=list)
    status: str = "in_progress"

    @property
    def id(self) -> str:
        return str(self.opened["id"])

    def final(self) -> JSONObject:
        joined = "".join(self.pieces)
        if self.opened["type"] == "message":
            return message_item(self.id, [output_text(joined)], self.status)
        return {**self.opened, "arguments": joined, "status": self.status}


class ResponsesStreamTranslator:
    """Pivot `chat.completion.chunk` events in, Responses events out, in the documented order.

    Items are streamed one after another, as OpenAI does: a new item (text after tool calls,
    or the next tool call) closes the one before it.
    """

    def __init__(self, shell: JSONObject) -> None:
        self._shell = shell
        self._sequence = 0
        self._started = False
        self._ended = False
        self._items: list[_Item] = []
        self._current: _Item | None = None
        self._tools: dict[int, _Item] = {}
        self._finish_reason: object = None
        self._reasoning_tokens = 0
        self._unsent = b""

    def translate(self, events: bytes) -> bytes:
        """Raises UpstreamError for an upstream's in-band error, so the call is metered as
        failed; `error()` then sends what this batch produced before it, and the failure."""
        out = bytearray()
        self._start(out)
        for event in events.split(b"\n\n"):
            data = _data(event)
            if data is None or self._ended:
                continue
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                # Not a chunk (an upstream's stray comment or keep-alive): nothing to say.
                continue
            if isinstance(chunk, dict):
                try:
                    self._chunk(chunk, out)
                except UpstreamError:
                    self._unsent = bytes(out)
                    raise
        return bytes(out)

    def finish(self, usage: Usage | None) -> bytes:
        out = bytearray()
        self._start(out)
        if self._ended:
            return bytes(out)
        reason = incomplete_reason(self._finish_reason)
        self._close(out, "incomplete" if reason else "completed")
        self._ended = True
        usage_json = response_usage(usage, self._reasoning_tokens)
        output = [item.final() for item in self._items]
        response = finished_response(self._shell, output, reason, usage_json)
        self._emit(
            out, "response.incomplete" if reason else "response.completed", response=response
        )
        return bytes(out)

    def error(self, error: GatewayError) -> bytes:
        out = bytearray(self._unsent)
        self._unsent = b""
        self._start(out)
        self._fail(out, error)
        return bytes(out)

    def _emit(self, out: bytearray, kind: str, **fields: Any) -> None:
        out += sse_event(kind, {"type": kind, "sequence_number": self._sequence, **fields})
        self._sequence += 1

    def _start(self, out: bytearray) -> None:
        if not self._started:
            self._started = True
            self._emit(out, "response.created", response=self._shell)
            self._emit(out, "response.in_progress", response=self._shell)

    def _fail(self, out: bytearray, error: GatewayError) -> None:
        out += error_event(error, self._sequence)
        self._sequence += 1
        self._ended = True
        code = "rate_limit_exceeded" if error.status == 429 else "server_error"
        response = {
            **self._shell,
            "status": "failed",
            "output": [item.final() for item in self._items],
            "error": {"code": code, "message": error.message},
        }
        self._emit(out, "response.failed", response=response)

    def _chunk(self, chunk: JSONObject, out: bytearray) -> None:
        error = chunk.get("error")
        if error is not None:
            message = error.get("message") if isinstance(error, dict) else None
            raise UpstreamError(f"the upstream stream failed: {message or error}")
        if chunk.get("usage") is not None:
            self._reasoning_tokens = reasoning_tokens(chunk["usage"])
        for choice in chunk.get("choices") or ():
            # `n` > 1 has no Responses equivalent: the first choice is the answer.
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                self._text(text, out)
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    self._tool_call(call, out)
            if choice.get("finish_reason") is not None:
                self._finish_reason = choice["finish_reason"]

    def _open(self, opened: JSONObject, out: bytearray) -> _Item:
        self._close(out, "completed")
        item = _Item(index=len(self._items), opened=opened)
        self._items.append(item)
        self._current = item
        self._emit(out, "response.output_item.added", output_index=item.index, item=opened)
        return item

    def _text(self, text: str, out: bytearray) -> None:
        item = self._current
        if item is None or item.opened["type"] != "message":
            opened = message_item(new_id("msg"), [], "in_progress")
            item = self._open(opened, out)
            self._emit(
                out,
                "response.content_part.added",
                item_id=item.id,
                output_index=item.index,
                content_index=0,
                part=output_text(""),
            )
        item.pieces.append(text)
        self._emit(
            out,
            "response.output_text.delta",
            item_id=item.id,
            output_index=item.index,
            content_index=0,
            delta=text,
            logprobs=[],
        )

    def _tool_call(self, call: JSONObject, out: bytearray) -> None:
        index = call.get("index", 0)
        function = call.get("function") or {}
        item = self._tools.get(index)
        call_id = call.get("id")
        # Some servers send every call without an index; a new id still means a new call.
        if item is None or (call_id and call_id != item.opened["call_id"]):
            opened = function_call_item(
                new_id("fc"),
                call_id or new_id("call"),
                function.get("name") or "",
                "",
                "in_progress",
            )
            item = self._tools[index] = self._open(opened, out)
        arguments = function.get("arguments")
        if not isinstance(arguments, str) or not arguments:
            return
        # A delta for a call already closed (providers that interleave calls) still reaches
        # the final response, though its `done` events have gone.
        item.pieces.append(arguments)
        if item is self._current:
            self._emit(
                out,
                "response.function_call_arguments.delta",
                item_id=item.id,
                output_index=item.index,
                delta=arguments,
            )

    def _close(self, out: bytearray, status: str) -> None:
        item = self._current
        if item is None:
            return
        self._current = None
        item.status = status
        joined = "".join(item.pieces)
        where: JSONObject = {"item_id": item.id, "output_index": item.index}
        if item.opened["type"] == "message":
            self._emit(
                out, "response.output_text.done", **where, content_index=0, text=joined, logprobs=[]
            )
            part = output_text(joined)
            self._emit(out, "response.content_part.done", **where, content_index=0, part=part)
        else:
            self._emit(out, "response.function_call_arguments.done", **where, arguments=joined)
        self._emit(out, "response.output_item.done", output_index=item.index, item=item.final())


class NativeResponsesRelay:
    """For upstreams that speak Responses themselves: events pass through untouched; only a
    failure after the first byte is written here, as the `error` event Responses clients read."""

    def __init__(self) -> None:
        self._next_sequence = 0

    def translate(self, events: bytes) -> bytes:
        at = events.rfind(b'"sequence_number"')
        if at >= 0:
            found = _SEQUENCE.match(events, at)
            if found is not None:
                self._next_sequence = int(found.group(1)) + 1
        return events

    def finish(self, usage: Usage | None) -> bytes:
        return b""

    def error(self, error: GatewayError) -> bytes:
        return error_event(error, self._next_sequence)


def _data(event: bytes) -> bytes | None:
    """The `data` of one SSE event; None for events without one and for `[DONE]`."""
    lines = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
    if not lines or lines == [b"[DONE]"]:
        return None
    return lines[0] if len(lines) == 1 else b"\n".join(lines)
