"""OpenAI's own Responses API wire format, for the fake OpenAI upstream's `/v1/responses`.

Answers like the chat fake: a function call when the request declares tools and has no
function output yet, a text quoting the function output once it has one, else a greeting.
"""

from __future__ import annotations

from typing import Any

import orjson

from tests.fake_openai import (
    CACHED_TOKENS,
    COMPLETION_TOKENS,
    PROMPT_TOKENS,
    REPLY_WORDS,
    TOOL_ARGUMENTS,
    TOOL_CALL_ID,
    TOOL_REPLY_PREFIX,
)


def response_object(body: dict[str, Any], status: str = "completed") -> dict[str, Any]:
    done = status == "completed"
    return {
        "id": "resp_fake",
        "object": "response",
        "created_at": 1_700_000_000,
        "status": status,
        "model": body["model"],
        "output": output_items(body) if done else [],
        "usage": _usage() if done else None,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "metadata": {},
        "parallel_tool_calls": True,
        "temperature": 1.0,
        "tool_choice": "auto",
        "tools": body.get("tools") or [],
        "top_p": 1.0,
    }


def output_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    tool = _tool_to_call(body)
    if tool is not None:
        call = {"type": "function_call", "id": "fc_fake", "call_id": TOOL_CALL_ID, "name": tool}
        return [call | {"arguments": TOOL_ARGUMENTS, "status": "completed"}]
    output = _function_output(body)
    text = "".join(REPLY_WORDS) if output is None else TOOL_REPLY_PREFIX + output
    part = {"type": "output_text", "text": text, "annotations": []}
    return [{"type": "message", "id": "msg_fake", "status": "completed", "role": "assistant",
             "content": [part]}]  # fmt: skip


def stream_events(body: dict[str, Any]) -> bytes:
    started = response_object(body, "in_progress")
    done = response_object(body)
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
    ]
    item = done["output"][0]
    if item["type"] == "function_call":
        where = {"item_id": item["id"], "output_index": 0}
        events += [
            {"type": "response.output_item.added", "output_index": 0,
             "item": item | {"arguments": "", "status": "in_progress"}},
            *({"type": "response.function_call_arguments.delta", **where, "delta": piece}
              for piece in (TOOL_ARGUMENTS[:9], TOOL_ARGUMENTS[9:])),
            {"type": "response.function_call_arguments.done", **where, "arguments": TOOL_ARGUMENTS},
        ]  # fmt: skip
    else:
        text = item["content"][0]["text"]
        where = {"item_id": item["id"], "output_index": 0, "content_index": 0}
        empty = {"type": "output_text", "text": "", "annotations": []}
        events += [
            {"type": "response.output_item.added", "output_index": 0,
             "item": item | {"status": "in_progress", "content": []}},
            {"type": "response.content_part.added", **where, "part": empty},
            *({"type": "response.output_text.delta", **where, "delta": word, "logprobs": []}
              for word in (text[:5], text[5:])),
            {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
            {"type": "response.content_part.done", **where, "part": item["content"][0]},
        ]  # fmt: skip
    events += [
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": done},
    ]
    return b"".join(
        f"event: {event['type']}\ndata: ".encode()
        + orjson.dumps(event | {"sequence_number": n})
        + b"\n\n"
        for n, event in enumerate(events)
    )


def _tool_to_call(body: dict[str, Any]) -> str | None:
    tools = body.get("tools") or []
    if not tools or _function_output(body) is not None:
        return None
    return str(tools[0]["name"])


def _function_output(body: dict[str, Any]) -> str | None:
    items = body.get("input")
    if not isinstance(items, list):
        return None
    outputs = [i for i in items if isinstance(i, dict) and i.get("type") == "function_call_output"]
    return str(outputs[-1]["output"]) if outputs else None


def _usage() -> dict[str, Any]:
    return {
        "input_tokens": PROMPT_TOKENS,
        "input_tokens_details": {"cached_tokens": CACHED_TOKENS, "cache_write_tokens": 0},
        "output_tokens": COMPLETION_TOKENS,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
    }
