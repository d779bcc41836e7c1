"""OpenAI Responses API requests onto the pivot (chat completions), and chat completions back
into Response objects. Pure translation: no I/O.

The gateway keeps no conversations, so anything that points at stored state is refused and
clients send the whole history in `input`, as they do with `store: false`.
"""

from __future__ import annotations

import secrets
import time

from agentwatch.errors import InvalidRequest
from agentwatch.providers.base import JSONObject, Usage

_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
_STATEFUL = ("previous_response_id", "conversation")
_TOOL_CHOICES = ("none", "auto", "required")
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


def chat_request(request: JSONObject) -> JSONObject:
    """The pivot request for a Responses request; `model` is still the client's alias."""
    for name in _STATEFUL:
        if request.get(name) is not None:
            raise InvalidRequest(
                f"'{name}' needs stored conversation state, which this gateway does not keep;"
                " send the whole conversation in 'input' instead",
                param=name,
            )
    if _flag(request, "background"):
        raise InvalidRequest("background responses are not supported", param="background")
    messages = _instructions(request.get("instructions")) + _messages(request.get("input"))
    if not messages:
        raise InvalidRequest("'input' has no messages", param="input")
    chat: JSONObject = {"model": request["model"], "messages": messages}
    tools = _tools(request.get("tools"))
    choice = request.get("tool_choice")
    tool_choice = None if choice is None else _tool_choice(choice)
    parallel = _flag(request, "parallel_tool_calls")
    # Chat completions refuses tool settings without tools, where Responses ignores them.
    if tools:
        chat["tools"] = tools
        if tool_choice is not None:
            chat["tool_choice"] = tool_choice
        if parallel is not None:
            chat["parallel_tool_calls"] = parallel
    for name in ("temperature", "top_p"):
        value = request.get(name)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidRequest(f"'{name}' must be a number", param=name)
            chat[name] = value
    max_output = request.get("max_output_tokens")
    if max_output is not None:
        if isinstance(max_output, bool) or not isinstance(max_output, int) or max_output < 1:
            raise InvalidRequest(
                "'max_output_tokens' must be a positive integer", param="max_output_tokens"
            )
        chat["max_tokens"] = max_output
    response_format = _response_format(request.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    if _flag(request, "stream"):
        chat["stream"] = True
    return chat


def _flag(request: JSONObject, name: str) -> bool | None:
    value = request.get(name)
    if value is not None and not isinstance(value, bool):
        raise InvalidRequest(f"'{name}' must be a boolean", param=name)
    return value


def _instructions(value: object) -> list[JSONObject]:
    if value is None:
        return []
    if not isinstance(value, str):
        raise InvalidRequest("'instructions' must be a string", param="instructions")
    return [{"role": "system", "content": value}]


def _messages(value: object) -> list[JSONObject]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        raise InvalidRequest(
            "'input' is required: a string or an array of input items", param="input"
        )
    messages: list[JSONObject] = []
    for index, item in enumerate(value):
        param = f"input[{index}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{param} must be an object", param=param)
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item, param))
        elif kind == "function_call":
            _add_tool_call(messages, item, param)
        elif kind == "function_call_output":
            messages.append(_tool_result(item, param))
        elif kind == "reasoning":
            # Reasoning items are one model's private scratch work (often encrypted); another
            # model can use none of it, and the visible answer is in the message items.
            continue
        else:
            raise InvalidRequest(
                f"{param}: input items of type '{kind}' are not supported on this provider",
                param=param,
            )
    return messages


def _message(item: JSONObject, param: str) -> JSONObject:
    role = item.get("role")
    if not isinstance(role, str) or role not in _ROLES:
        raise InvalidRequest(
            f"{param}.role must be 'user', 'assistant', 'system' or 'developer'",
            param=f"{param}.role",
        )
    # Plain OpenAI-style servers often lack the newer 'developer' role; 'system' means the same.
    role = _ROLES[role]
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise InvalidRequest(
            f"{param}.content must be a string or an array of content parts",
            param=f"{param}.content",
        )
    parts = [_part(part, role, f"{param}.content[{i}]") for i, part in enumerate(content)]
    # One text part as a plain string: the form every OpenAI-style server accepts.
    if len(parts) == 1 and parts[0]["type"] == "text":
        return {"role": role, "content": parts[0]["text"]}
    return {"role": role, "content": parts}


def _part(part: object, role: str, param: str) -> JSONObject:
    if not isinstance(part, dict):
        raise InvalidRequest(f"{param} must be an object", param=param)
    kind = part.get("type")
    if kind in ("input_text", "output_text", "refusal"):
        text = part.get("refusal" if kind == "refusal" else "text")
        if not isinstance(text, str):
            raise InvalidRequest(f"{param} has no text", param=param)
        return {"type": "text", "text": text}
    if kind == "input_image" and role == "user":
        url = part.get("image_url")
        if not isinstance(url, str):
            raise InvalidRequest(
                f"{param}: only images given by 'image_url' (a URL or data URL) are supported"
                " on this provider",
                param=param,
            )
        image: JSONObject = {"url": url}
        if isinstance(part.get("detail"), str):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    raise InvalidRequest(
        f"{param}: content parts of type '{kind}' are not supported in {role} messages"
        " on this provider",
        param=param,
    )


def _strings(item: JSONObject, names: tuple[str, ...], param: str) -> list[str]:
    values = [item.get(name) for name in names]
    for name, value in zip(names, values, strict=True):
        if not isinstance(value, str):
            raise InvalidRequest(f"{param}.{name} must be a string", param=f"{param}.{name}")
    return [str(value) for value in values]


def _add_tool_call(messages: list[JSONObject], item: JSONObject, param: str) -> None:
    call_id, name, arguments = _strings(item, ("call_id", "name", "arguments"), param)
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    # Calls made in one turn belong to one assistant message, with any text the model wrote.
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _tool_result(item: JSONObject, param: str) -> JSONObject:
    (call_id,) = _strings(item, ("call_id",), param)
    output = item.get("output")
    if isinstance(output, list):
        texts = [
            p.get("text")
            for p in output
            if isinstance(p, dict) and p.get("type") in ("input_text", "output_text")
        ]
        if len(texts) != len(output) or not all(isinstance(t, str) for t in texts):
            raise InvalidRequest(
                f"{param}.output: only text is supported in tool results on this provider",
                param=f"{param}.output",
            )
        output = "".join(str(t) for t in texts)
    if not isinstance(output, str):
        raise InvalidRequest(
            f"{param}.output must be a string or an array of text parts",
            param=f"{param}.output",
        )
    return {"role": "tool", "tool_call_id": call_id, "content": output}


def _tools(value: object) -> list[JSONObject]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRequest("'tools' must be an array", param="tools")
    tools: list[JSONObject] = []
    for index, tool in enumerate(value):
        param = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise InvalidRequest(f"{param} must be an object", param=param)
        kind = tool.get("type")
        if kind != "function":
            raise InvalidRequest(
                f"tools of type '{kind}' are not supported on this provider;"
                " only 'function' tools are",
                param=param,
            )
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest(f"{param}.name must be a non-empty string", param=f"{param}.name")
        function: JSONObject = {"name": name}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        tools.append({"type": "function", "function": function})
    return tools


def _tool_choice(choice: object) -> str | JSONObject:
    if isinstance(choice, str) and choice in _TOOL_CHOICES:
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = choice.get("name")
        if isinstance(name, str) and name:
            return {"type": "function", "function": {"name": name}}
    raise InvalidRequest(
        "'tool_choice' must be 'none', 'auto', 'required' or"
        ' {"type": "function", "name": ...} on this provider',
        param="tool_choice",
    )


def _response_format(text: object) -> JSONObject | None:
    if text is None:
        return None
    if not isinstance(text, dict):
        raise InvalidRequest("'text' must be an object", param="text")
    spec = text.get("format")
    if spec is None:
        return None
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        assert isinstance(spec, dict)
        name, schema = spec.get("name"), spec.get("schema")
        if not isinstance(name, str) or not isinstance(schema, dict):
            raise InvalidRequest(
                "a 'json_schema' format needs a string 'name' and an object 'schema'",
                param="text.format",
            )
        json_schema: JSONObject = {"name": name, "schema": schema}
        for key in ("description", "strict"):
            if spec.get(key) is not None:
                json_schema[key] = spec[key]
        return {"type": "json_schema", "json_schema": json_schema}
    raise InvalidRequest(
        "'text.format.type' must be 'text', 'json_object' or 'json_schema'",
        param="text.format",
    )


def response_shell(request: JSONObject, model: str) -> JSONObject:
    """The Response object before any output: a new id, the client's alias, and the request
    settings every Response repeats back (with the API's defaults)."""
    return {
        "id": new_id("resp"),
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "model": model,
        "output": [],
        "usage": None,
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "metadata": request.get("metadata") or {},
        "parallel_tool_calls": request.get("parallel_tool_calls") is not False,
        "temperature": request.get("temperature"),
        "top_p": request.get("top_p"),
        "tool_choice": request.get("tool_choice") or "auto",
        "tools": request.get("tools") or [],
        "text": request.get("text") or {"format": {"type": "text"}},
        "store": False,  # nothing is kept, whatever the request asked
    }


def incomplete_reason(finish_reason: object) -> str | None:
    """Why a response stopped early, in Responses terms; None when it completed."""
    return _INCOMPLETE.get(finish_reason) if isinstance(finish_reason, str) else None


def message_item(item_id: str, content: list[JSONObject], status: str) -> JSONObject:
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": content,
    }


def output_text(text: str) -> JSONObject:
    return {"type": "output_text", "text": text, "annotations": []}


def function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str
) -> JSONObject:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def response_usage(usage: Usage | None, reasoning_tokens: int = 0) -> JSONObject | None:
    if usage is None:
        return None
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def reasoning_tokens(usage: object) -> int:
    """`completion_tokens_details.reasoning_tokens` from a chat `usage` object, or 0."""
    details = usage.get("completion_tokens_details") if isinstance(usage, dict) else None
    count = details.get("reasoning_tokens") if isinstance(details, dict) else None
    return count if isinstance(count, int) and count > 0 else 0


def finished_response(
    shell: JSONObject, output: list[JSONObject], reason: str | None, usage: JSONObject | None
) -> JSONObject:
    """The final Response: `completed`, or `incomplete` with the reason it stopped."""
    return {
        **shell,
        "status": "incomplete" if reason else "completed",
        "completed_at": None if reason else int(time.time()),
        "output": output,
        "usage": usage,
        "incomplete_details": {"reason": reason} if reason else None,
    }


def response_from_chat(
    completion: JSONObject, shell: JSONObject, usage: Usage | None
) -> JSONObject:
    """A pivot `chat.completion` as a Response object."""
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    choice = choice if isinstance(choice, dict) else {}
    message = choice.get("message")
    message = message if isinstance(message, dict) else {}
    reason = incomplete_reason(choice.get("finish_reason"))
    output: list[JSONObject] = []
    parts: list[JSONObject] = []
    text, refusal = message.get("content"), message.get("refusal")
    if isinstance(text, str) and text:
        parts.append(output_text(text))
    if isinstance(refusal, str) and refusal:
        parts.append({"type": "refusal", "refusal": refusal})
    if parts:
        output.append(message_item(new_id("msg"), parts, "incomplete" if reason else "completed"))
    for call in message.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        output.append(
            function_call_item(
                new_id("fc"),
                call.get("id") or new_id("call"),
                function.get("name") or "",
                function.get("arguments") or "",
                "completed",
            )
        )
    raw_usage = completion.get("usage")
    return finished_response(
        shell, output, reason, response_usage(usage, reasoning_tokens(raw_usage))
    )
