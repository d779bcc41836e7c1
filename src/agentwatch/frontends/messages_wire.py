"""Anthropic Messages <-> the pivot (OpenAI chat completions): pure translation, no I/O.

Requests are checked as they are translated, so a malformed body gets a precise 400 from the
gateway instead of an obscure one from whichever provider the alias happens to route to.
"""

from __future__ import annotations

import math
import secrets

import orjson

from agentwatch.errors import DlpBlocked, GatewayError, InvalidRequest
from agentwatch.providers.base import JSONObject, Usage

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}
# Thinking blocks are signed for Anthropic's models only; no other provider can use them.
_DROPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})
# Anthropic's ceiling for one image (about 1.15 megapixels at 750 pixels per token).
IMAGE_TOKEN_ESTIMATE = 1600


def check_request(payload: JSONObject, *, counting: bool = False) -> None:
    """The checks every Messages request gets, translated or passed through."""
    if not counting:
        max_tokens = payload.get("max_tokens")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise InvalidRequest("'max_tokens' is required and must be an integer of at least 1")
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' is required and must be a non-empty array")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise InvalidRequest(f"messages[{index}]: 'role' must be 'user' or 'assistant'")
        if not isinstance(message.get("content"), str) and not _blocks(message.get("content")):
            raise InvalidRequest(
                f"messages[{index}]: 'content' must be a string or an array of content blocks"
            )
    system = payload.get("system")
    if system is not None and not isinstance(system, str) and not _blocks(system):
        raise InvalidRequest("'system' must be a string or an array of text blocks")
    if payload.get("stream") is not None and not isinstance(payload["stream"], bool):
        raise InvalidRequest("'stream' must be a boolean")
    if payload.get("tools") is not None and not isinstance(payload["tools"], list):
        raise InvalidRequest("'tools' must be an array")


def _blocks(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(b, dict) and isinstance(b.get("type"), str) for b in value
    )


def to_chat_request(payload: JSONObject, upstream_model: str) -> JSONObject:
    """A checked Messages request as a pivot request for `upstream_model`."""
    chat: JSONObject = {
        "model": upstream_model,
        "messages": _chat_messages(payload),
        "max_tokens": payload["max_tokens"],
    }
    # top_k and thinking have no OpenAI equivalent; temperature and top_p mean the same there.
    for name in ("temperature", "top_p"):
        value = payload.get(name)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidRequest(f"'{name}' must be a number")
            chat[name] = value
    stops = payload.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise InvalidRequest("'stop_sequences' must be an array of strings")
        if stops:
            chat["stop"] = stops
    metadata = payload.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        chat["user"] = metadata["user_id"]
    tools = payload.get("tools")
    if tools:
        chat["tools"] = [_chat_tool(i, tool) for i, tool in enumerate(tools)]
        _apply_tool_choice(payload.get("tool_choice"), chat)
    if payload.get("stream") is True:
        chat["stream"] = True
    return chat


def _chat_messages(payload: JSONObject) -> list[JSONObject]:
    out: list[JSONObject] = []
    system = payload.get("system")
    if isinstance(system, list):
        system = "\n\n".join(_text(b, f"system[{i}]") for i, b in enumerate(system))
    if system:
        out.append({"role": "system", "content": system})
    for index, message in enumerate(payload["messages"]):
        content = message["content"]
        if isinstance(content, str):
            out.append({"role": message["role"], "content": content})
        elif message["role"] == "assistant":
            out.append(_assistant_message(content, f"messages[{index}]"))
        else:
            out.extend(_user_messages(content, f"messages[{index}]"))
    return out


def _assistant_message(blocks: list[JSONObject], where: str) -> JSONObject:
    texts: list[str] = []
    calls: list[JSONObject] = []
    for i, block in enumerate(blocks):
        kind, at = block["type"], f"{where}.content[{i}]"
        if kind == "text":
            texts.append(_text(block, at))
        elif kind == "tool_use":
            calls.append(_tool_call(block, at))
        elif kind not in _DROPPED_BLOCKS:
            raise InvalidRequest(f"{at}: '{kind}' blocks are not supported in assistant turns")
    # OpenAI wants content or tool_calls; an empty string keeps a thinking-only turn valid.
    message: JSONObject = {"role": "assistant", "content": "\n\n".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    return message


def _user_messages(blocks: list[JSONObject], where: str) -> list[JSONObject]:
    """Tool results become `tool` messages, which OpenAI wants right after the assistant's
    calls, so they go before the turn's own text and images."""
    results: list[JSONObject] = []
    parts: list[JSONObject] = []
    for i, block in enumerate(blocks):
        kind, at = block["type"], f"{where}.content[{i}]"
        if kind == "text":
            parts.append({"type": "text", "text": _text(block, at)})
        elif kind == "image":
            parts.append(_image_part(block, at))
        elif kind == "tool_result":
            results.append(_tool_message(block, at, parts))
        elif kind == "document" and _is_text_document(block):
            parts.append({"type": "text", "text": block["source"]["data"]})
        elif kind not in _DROPPED_BLOCKS:
            raise InvalidRequest(f"{at}: '{kind}' blocks are only supported by Anthropic models")
    if not parts:
        return results
    if all(p["type"] == "text" for p in parts):
        return [*results, {"role": "user", "content": "\n\n".join(p["text"] for p in parts)}]
    return [*results, {"role": "user", "content": parts}]


def _tool_message(block: JSONObject, at: str, images: list[JSONObject]) -> JSONObject:
    """OpenAI tool messages carry text only: images a tool returned join the user turn."""
    tool_use_id = block.get("tool_use_id")
    if not isinstance(tool_use_id, str) or not tool_use_id:
        raise InvalidRequest(f"{at}: 'tool_use_id' is required")
    content = block.get("content")
    texts: list[str] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for j, inner in enumerate(content):
            kind = inner.get("type") if isinstance(inner, dict) else None
            if kind == "image":
                images.append(_image_part(inner, f"{at}.content[{j}]"))
            else:
                texts.append(_text(inner, f"{at}.content[{j}]"))
    elif content is not None:
        raise InvalidRequest(f"{at}: 'content' must be a string or an array of blocks")
    text = "\n\n".join(texts)
    if block.get("is_error") is True:
        text = f"Error: {text}"
    return {"role": "tool", "tool_call_id": tool_use_id, "content": text}


def _text(block: object, at: str) -> str:
    text = block.get("text") if isinstance(block, dict) else None
    if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(text, str):
        raise InvalidRequest(f"{at}: expected a text block with a string 'text'")
    return text


def _image_part(block: JSONObject, at: str) -> JSONObject:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64" and isinstance(source, dict):
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
    elif kind == "url" and isinstance(source, dict) and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        raise InvalidRequest(f"{at}: an image 'source' must be of type 'base64' or 'url'")
    return {"type": "image_url", "image_url": {"url": url}}


def _is_text_document(block: JSONObject) -> bool:
    source = block.get("source")
    return (
        isinstance(source, dict)
        and source.get("type") == "text"
        and isinstance(source.get("data"), str)
    )


def _tool_call(block: JSONObject, at: str) -> JSONObject:
    call_id, name, arguments = block.get("id"), block.get("name"), block.get("input", {})
    if not isinstance(call_id, str) or not isinstance(name, str) or not isinstance(arguments, dict):
        raise InvalidRequest(
            f"{at}: a tool_use block needs a string 'id' and 'name' and an object 'input'"
        )
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": orjson.dumps(arguments).decode()},
    }


def _chat_tool(index: int, tool: object) -> JSONObject:
    kind = tool.get("type", "custom") if isinstance(tool, dict) else None
    if isinstance(tool, dict) and kind not in (None, "custom"):
        raise InvalidRequest(
            f"tools[{index}]: '{kind}' tools are only supported by Anthropic models"
        )
    if (
        not isinstance(tool, dict)
        or not isinstance(tool.get("name"), str)
        or not isinstance(tool.get("input_schema"), dict)
    ):
        raise InvalidRequest(
            f"tools[{index}]: a tool needs a string 'name' and an object 'input_schema'"
        )
    function: JSONObject = {"name": tool["name"], "parameters": tool["input_schema"]}
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _apply_tool_choice(choice: object, chat: JSONObject) -> None:
    if choice is None:
        return
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "auto":
        chat["tool_choice"] = "auto"
    elif kind == "any":
        chat["tool_choice"] = "required"
    elif kind == "none":
        chat["tool_choice"] = "none"
    elif kind == "tool" and isinstance(choice, dict) and isinstance(choice.get("name"), str):
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise InvalidRequest(
            "'tool_choice' must be of type 'auto', 'any', 'none' or 'tool' (with a 'name')"
        )
    if isinstance(choice, dict) and choice.get("disable_parallel_tool_use") is True:
        chat["parallel_tool_calls"] = False


def to_anthropic_message(completion: JSONObject, model: str, usage: Usage | None) -> JSONObject:
    """A pivot chat.completion as an Anthropic message that names the alias the client asked for."""
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    choice = choice if isinstance(choice, dict) else {}
    message = choice.get("message")
    message = message if isinstance(message, dict) else {}
    content: list[JSONObject] = []
    text = _completion_text(message.get("content"))
    if text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or new_tool_use_id(),
                "name": function.get("name") or "",
                "input": parse_arguments(function.get("arguments")),
            }
        )
    has_tool_use = any(block["type"] == "tool_use" for block in content)
    return {
        "id": message_id(completion.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason"), has_tool_use=has_tool_use),
        "stop_sequence": None,
        "usage": anthropic_usage(usage),
    }


def _completion_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # a few OpenAI-compatible servers answer with parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def stop_reason(finish_reason: object, *, has_tool_use: bool) -> str:
    reason = (
        STOP_REASONS.get(finish_reason, "end_turn")
        if isinstance(finish_reason, str)
        else "end_turn"
    )
    # Some servers end a tool-calling turn with "stop"; Anthropic clients run tools on "tool_use".
    return "tool_use" if has_tool_use and reason == "end_turn" else reason


def parse_arguments(arguments: object) -> JSONObject:
    """Tool arguments as an object; a model's malformed JSON becomes `{}`, as Anthropic's
    schema demands an object and the client can still see the call was made."""
    if not isinstance(arguments, str) or not arguments:
        return {}
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def message_id(upstream_id: object) -> str:
    if isinstance(upstream_id, str) and upstream_id:
        return (
            upstream_id
            if upstream_id.startswith("msg_")
            else "msg_" + upstream_id.removeprefix("chatcmpl-")
        )
    return "msg_" + secrets.token_hex(12)


def new_tool_use_id() -> str:
    return "toolu_" + secrets.token_hex(12)


def anthropic_usage(usage: Usage | None) -> JSONObject:
    """Anthropic counts cached and cache-written tokens apart from `input_tokens`."""
    u = usage or Usage()
    return {
        "input_tokens": max(0, u.prompt_tokens - u.cached_tokens - u.cache_write_tokens),
        "output_tokens": u.completion_tokens,
        "cache_creation_input_tokens": u.cache_write_tokens,
        "cache_read_input_tokens": u.cached_tokens,
    }


def error_type(status: int) -> str:
    return _ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def error_object(error: GatewayError) -> JSONObject:
    # A DLP refusal keeps its own type, as on /v1/chat/completions: clients match on it.
    kind = error.type if isinstance(error, DlpBlocked) else error_type(error.status)
    return {"type": "error", "error": {"type": kind, "message": error.message}}


def estimate_input_tokens(payload: JSONObject) -> int:
    """A local count for providers without one: a quarter of the characters of the JSON of
    `system`, `messages` and `tools` (about what BPE tokenizers average on English and code),
    with each image counted at Anthropic's per-image ceiling instead of by its base64 size."""
    chars = 0
    for name in ("system", "messages", "tools"):
        value = payload.get(name)
        if value is not None:
            chars += len(orjson.dumps(value).decode())
    images = 0
    for block in _image_blocks(payload.get("messages")):
        source = block.get("source")
        data = source.get("data") if isinstance(source, dict) else None
        chars -= len(data) if isinstance(data, str) else 0
        images += 1
    return max(1, math.ceil(chars / 4)) + images * IMAGE_TOKEN_ESTIMATE


def _image_blocks(messages: object) -> list[JSONObject]:
    found: list[JSONObject] = []
    for message in messages if isinstance(messages, list) else ():
        content = message.get("content") if isinstance(message, dict) else None
        for block in content if isinstance(content, list) else ():
            if not isinstance(block, dict):
                continue
            if block.get("type") == "image":
                found.append(block)
            elif block.get("type") == "tool_result" and isinstance(block.get("content"), list):
                found.extend(
                    b for b in block["content"] if isinstance(b, dict) and b.get("type") == "image"
                )
    return found
