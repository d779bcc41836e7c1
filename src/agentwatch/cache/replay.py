"""A cached answer as an OpenAI stream (chat chunks or legacy completion chunks, then
`[DONE]`), and a finished OpenAI stream back into the complete answer the cache stores.
Pure functions over JSON and SSE bytes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import orjson

DONE = b"data: [DONE]\n\n"
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
STREAMABLE = frozenset({CHAT, COMPLETIONS})


def _event(document: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(document) + b"\n\n"


def replay_stream(endpoint: str, body: bytes, include_usage: bool) -> list[bytes]:
    """The SSE events a client that asked for a stream gets for the cached `body`."""
    answer = orjson.loads(body)
    head = {key: answer[key] for key in ("id", "created", "model") if key in answer}
    if answer.get("system_fingerprint") is not None:
        head["system_fingerprint"] = answer["system_fingerprint"]
    choices = [c for c in answer.get("choices") or [] if isinstance(c, dict)]
    events: list[bytes] = []
    if endpoint == CHAT:
        head["object"] = "chat.completion.chunk"
        for choice in choices:
            index = choice.get("index", 0)
            for delta in _chat_deltas(choice.get("message") or {}):
                chunk = {"index": index, "delta": delta, "logprobs": None, "finish_reason": None}
                events.append(_event({**head, "choices": [chunk]}))
            end = {"index": index, "delta": {}, "finish_reason": choice.get("finish_reason")}
            events.append(_event({**head, "choices": [end]}))
    else:
        head["object"] = "text_completion"
        for choice in choices:
            index = choice.get("index", 0)
            text = {"index": index, "text": choice.get("text") or "", "logprobs": None}
            events.append(_event({**head, "choices": [{**text, "finish_reason": None}]}))
            end = {"index": index, "text": "", "finish_reason": choice.get("finish_reason")}
            events.append(_event({**head, "choices": [{**end, "logprobs": None}]}))
    if include_usage and answer.get("usage") is not None:
        events.append(_event({**head, "choices": [], "usage": answer["usage"]}))
    events.append(DONE)
    return events


def _chat_deltas(message: dict[str, Any]) -> Iterator[dict[str, Any]]:
    first: dict[str, Any] = {"role": message.get("role", "assistant")}
    if message.get("content") is not None:
        first["content"] = message["content"]
    if message.get("refusal") is not None:
        first["refusal"] = message["refusal"]
    yield first
    for position, tool_call in enumerate(message.get("tool_calls") or []):
        yield {"tool_calls": [{**tool_call, "index": position}]}


def assemble_answer(endpoint: str, events: Iterable[bytes], usage: dict[str, Any] | None) -> bytes:
    """The complete JSON answer a finished stream amounts to (`usage` as the upstream
    reported it, in OpenAI's shape)."""
    head: dict[str, Any] = {}
    choices: dict[int, dict[str, Any]] = {}
    for chunk in _chunks(events):
        for key in ("id", "created", "model", "system_fingerprint"):
            if key in chunk and key not in head:
                head[key] = chunk[key]
        for part in chunk.get("choices") or []:
            index = part.get("index", 0)
            choice = choices.setdefault(index, {"index": index, "finish_reason": None})
            if part.get("finish_reason") is not None:
                choice["finish_reason"] = part["finish_reason"]
            if endpoint == CHAT:
                _add_delta(choice.setdefault("message", {"role": "assistant"}), part)
            else:
                choice["text"] = choice.get("text", "") + (part.get("text") or "")
    ordered = [choices[index] for index in sorted(choices)]
    for choice in ordered:
        message = choice.get("message")
        if message is not None:
            message.setdefault("content", None)
            if "tool_calls" in message:
                message["tool_calls"] = [
                    message["tool_calls"][i] for i in sorted(message["tool_calls"])
                ]
        choice["logprobs"] = None
    kind = "chat.completion" if endpoint == CHAT else "text_completion"
    return orjson.dumps({**head, "object": kind, "choices": ordered, "usage": usage})


def _add_delta(message: dict[str, Any], part: dict[str, Any]) -> None:
    delta = part.get("delta") or {}
    if isinstance(delta.get("role"), str):
        message["role"] = delta["role"]
    for field in ("content", "refusal"):
        if isinstance(delta.get(field), str):
            message[field] = (message.get(field) or "") + delta[field]
    for call in delta.get("tool_calls") or []:
        calls: dict[int, dict[str, Any]] = message.setdefault("tool_calls", {})
        index = call.get("index", 0)
        entry = calls.setdefault(index, {"type": "function", "function": {"arguments": ""}})
        if call.get("id"):
            entry["id"] = call["id"]
        if call.get("type"):
            entry["type"] = call["type"]
        function = call.get("function") or {}
        if function.get("name"):
            entry["function"]["name"] = function["name"]
        entry["function"]["arguments"] += function.get("arguments") or ""


def _chunks(events: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    for event in events:
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]" or not data:
                continue
            chunk = orjson.loads(data)
            if isinstance(chunk, dict):
                yield chunk
