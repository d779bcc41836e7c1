"""Pure translation between the pivot (OpenAI chat completions) and Anthropic's Messages API:
requests out, responses back. No I/O; streams are in `anthropic_stream`, errors in
`anthropic_errors`."""

from __future__ import annotations

from typing import Any

import orjson

from agentwatch.errors import InvalidRequest
from agentwatch.providers.base import JSONObject, Usage

# Anthropic requires `max_tokens` and OpenAI does not. 4096 is the output limit of the oldest
# Claude models still served, so a request that names no limit is valid on every model.
DEFAULT_MAX_TOKENS = 4096

_TOOL_CHOICES = {"auto": "auto", "required": "any", "none": "none"}

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def to_anthropic_request(payload: JSONObject) -> JSONObject:
    """An OpenAI chat request (model already the upstream id) as an Anthropic Messages request.
    OpenAI-only options with no Anthropic counterpart (n, seed, penalties, logprobs) are dropped."""
    messages = payload.get("messages")
    if not isinstance(messages, list):
        raise InvalidRequest("'messages' must be an array", param="messages")
    system, turns = _conversation(messages)
    request: JSONObject = {
        "model": payload.get("model"),
        "messages": turns,
        "max_tokens": _max_tokens(payload),
    }
    if system:
        request["system"] = system
    for name in ("temperature", "top_p"):
        if payload.get(name) is not None:
            request[name] = payload[name]
    stop = payload.get("stop")
    if isinstance(stop, str):
        request["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        request["stop_sequences"] = stop
    user = payload.get("user")
    if isinstance(user, str) and user:
        request["metadata"] = {"user_id": user}
    tools = payload.get("tools")
    if isinstance(tools, list) and tools:
        request["tools"] = [_tool(tool, f"tools[{i}]") for i, tool in enumerate(tools)]
        choice = _tool_choice(payload.get("tool_choice"), payload.get("parallel_tool_calls"))
        if choice is not None:
            request["tool_choice"] = choice
    if isinstance(payload.get("stream"), bool):
        request["stream"] = payload["stream"]
    return request


def _max_tokens(payload: JSONObject) -> int:
    for name in ("max_completion_tokens", "max_tokens"):
        value = payload.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return DEFAULT_MAX_TOKENS


def _conversation(messages: list[Any]) -> tuple[str | list[JSONObject], list[JSONObject]]:
    """System and developer messages become the top-level `system`; the rest become turns.
    Anthropic wants user and assistant turns to alternate and takes tool results inside a user
    turn, so consecutive messages that land on the same role share one turn."""
    system: list[JSONObject] = []
    turns: list[JSONObject] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise InvalidRequest(f"{where} must be an object", param=where)
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_content_blocks(message.get("content"), where))
            continue
        if role == "user":
            blocks = _content_blocks(message.get("content"), where)
        elif role == "assistant":
            blocks = _assistant_blocks(message, where)
        elif role == "tool":
            role, blocks = "user", [_tool_result(message, where)]
        else:
            raise InvalidRequest(f"{where}: role '{role}' cannot be sent to Anthropic", param=where)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return _system(system), turns


def _system(blocks: list[JSONObject]) -> str | list[JSONObject]:
    # Blocks only when a part asks for prompt caching; otherwise the plain string form.
    if any("cache_control" in block for block in blocks):
        return blocks
    return "\n\n".join(str(block.get("text", "")) for block in blocks)


def _content_blocks(content: object, where: str) -> list[JSONObject]:
    if content is None:
        return []
    if isinstance(content, str):
        # Anthropic rejects empty text blocks, which OpenAI clients send freely.
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise InvalidRequest(f"{where}.content must be a string or an array", param=where)
    blocks = [_part(part, f"{where}.content[{i}]") for i, part in enumerate(content)]
    return [block for block in blocks if block is not None]


def _part(part: object, where: str) -> JSONObject | None:
    if not isinstance(part, dict):
        raise InvalidRequest(f"{where} must be an object", param=where)
    kind = part.get("type")
    if kind in ("text", "refusal"):
        text = part.get(kind)
        if not isinstance(text, str):
            raise InvalidRequest(f"{where}.{kind} must be a string", param=where)
        block: JSONObject | None = {"type": "text", "text": text} if text else None
    elif kind == "image_url":
        block = _image(part.get("image_url"), where)
    else:
        raise InvalidRequest(f"{where}: content type '{kind}' cannot be sent to Anthropic")
    if block is not None and "cache_control" in part:
        block["cache_control"] = part["cache_control"]
    return block


def _image(ref: object, where: str) -> JSONObject:
    url = ref.get("url") if isinstance(ref, dict) else ref
    if isinstance(url, str) and url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        if comma and header.endswith(";base64"):
            media_type = header.split(";", 1)[0]
            return {
                "type": "image",
                "source": {"type": "base64", "media_type": media_type, "data": data},
            }
    elif isinstance(url, str) and url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise InvalidRequest(
        f"{where}: an image must be an http(s) URL or a base64 data: URL", param=where
    )


def _assistant_blocks(message: JSONObject, where: str) -> list[JSONObject]:
    blocks = _content_blocks(message.get("content"), where)
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise InvalidRequest(f"{where}.tool_calls must be an array", param=where)
    for i, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise InvalidRequest(f"{where}.tool_calls[{i}] must have a function", param=where)
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": tool_input(function.get("arguments")),
            }
        )
    return blocks


def tool_input(arguments: object) -> JSONObject:
    """Anthropic takes a call's input as a JSON object; OpenAI history carries a string that is
    often empty and, after a truncated reply, sometimes not JSON. Keep what the model wrote
    rather than fail the whole conversation over one old call."""
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {"arguments": arguments}
    return parsed if isinstance(parsed, dict) else {"arguments": parsed}


def _tool_result(message: JSONObject, where: str) -> JSONObject:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str):
        raise InvalidRequest(f"{where}.tool_call_id must be a string", param=where)
    content = message.get("content")
    return {
        "type": "tool_result",
        "tool_use_id": call_id,
        "content": content if isinstance(content, str) else _content_blocks(content, where),
    }


def _tool(tool: object, where: str) -> JSONObject:
    function = tool.get("function") if isinstance(tool, dict) else None
    if (
        not isinstance(tool, dict)
        or tool.get("type") != "function"
        or not isinstance(function, dict)
    ):
        raise InvalidRequest(f"{where}: only function tools can be sent to Anthropic", param=where)
    converted: JSONObject = {
        "name": function.get("name"),
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        converted["description"] = function["description"]
    return converted


def _tool_choice(choice: object, parallel: object) -> JSONObject | None:
    converted: JSONObject | None
    if choice is None:
        converted = None
    elif isinstance(choice, str) and choice in _TOOL_CHOICES:
        converted = {"type": _TOOL_CHOICES[choice]}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        converted = {"type": "tool", "name": choice["function"].get("name")}
    else:
        raise InvalidRequest("'tool_choice' is not one Anthropic understands", param="tool_choice")
    if parallel is False and (converted is None or converted["type"] != "none"):
        converted = {**(converted or {"type": "auto"}), "disable_parallel_tool_use": True}
    return converted


def to_chat_completion(message: JSONObject, created: int) -> JSONObject:
    """An Anthropic message as an OpenAI `chat.completion`. Thinking blocks are dropped: the
    pivot request cannot ask for them, and OpenAI's response has no place for them."""
    texts: list[str] = []
    calls: list[JSONObject] = []
    for block in message.get("content") or []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
    reply: JSONObject = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
    }
    if calls:
        reply["tool_calls"] = calls
    completion: JSONObject = {
        "id": message.get("id"),
        "object": "chat.completion",
        "created": created,
        "model": message.get("model"),
        "choices": [
            {
                "index": 0,
                "message": reply,
                "finish_reason": finish_reason(message.get("stop_reason")),
                "logprobs": None,
            }
        ],
    }
    usage = usage_from_anthropic(message.get("usage"))
    if usage is not None:
        completion["usage"] = openai_usage(usage)
    return completion


def finish_reason(stop_reason: object) -> str | None:
    if stop_reason is None:
        return None
    return FINISH_REASONS.get(str(stop_reason), "stop")


def usage_from_anthropic(usage: object) -> Usage | None:
    """Anthropic's `input_tokens` excludes cache reads and writes; OpenAI's prompt includes them."""
    if not isinstance(usage, dict):
        return None
    read = _count(usage.get("cache_read_input_tokens"))
    written = _count(usage.get("cache_creation_input_tokens"))
    return Usage(
        prompt_tokens=_count(usage.get("input_tokens")) + read + written,
        completion_tokens=_count(usage.get("output_tokens")),
        cached_tokens=read,
        cache_write_tokens=written,
    )


def openai_usage(usage: Usage) -> JSONObject:
    """Claude's thinking is inside `output_tokens`, not reported apart: no reasoning count."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
