"""Pure translation of OpenAI pivot requests into Gemini's wire format (`generateContent`,
`batchEmbedContents`). Responses go back through `gemini_response` and `gemini_stream`."""

from __future__ import annotations

from typing import Any

import orjson

from agentwatch.errors import InvalidRequest
from agentwatch.providers.base import JSONObject

_ROLES = {"user": "user", "assistant": "model", "tool": "user", "function": "user"}
_TOOL_MODES = {"auto": "AUTO", "required": "ANY", "none": "NONE"}
_SAMPLING = (
    ("temperature", "temperature"),
    ("top_p", "topP"),
    ("n", "candidateCount"),
    ("seed", "seed"),
    ("presence_penalty", "presencePenalty"),
    ("frequency_penalty", "frequencyPenalty"),
)
# Gemini answers 400 "Unknown name" for any JSON-schema keyword outside its OpenAPI subset
# ($schema, additionalProperties, strict, $defs, ...), so only this subset is sent.
# fmt: off
_SCHEMA_KEYS = frozenset({
    "type", "format", "title", "description", "nullable", "enum", "items", "properties",
    "required", "anyOf", "minItems", "maxItems", "minProperties", "maxProperties", "minLength",
    "maxLength", "pattern", "minimum", "maximum", "example", "default", "propertyOrdering",
})
# fmt: on
_MAX_SCHEMA_DEPTH = 32
# Gemini needs a MIME type for a URL; the extension is all a request tells us.
_MIME_BY_EXTENSION = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "heic": "image/heic",
    "heif": "image/heif",
    "pdf": "application/pdf",
    "wav": "audio/wav",
    "mp3": "audio/mp3",
    "mp4": "video/mp4",
}


def generate_content_request(payload: JSONObject) -> JSONObject:
    """An OpenAI chat request as a Gemini `generateContent` body (the model goes in the URL)."""
    messages = payload.get("messages") or []
    # A tool result names its call by id; Gemini's functionResponse needs the function name.
    call_names = {
        call["id"]: _object(call.get("function")).get("name")
        for message in messages
        if message.get("role") == "assistant"
        for call in message.get("tool_calls") or []
        if isinstance(call, dict) and call.get("id")
    }
    system: list[JSONObject] = []
    contents: list[JSONObject] = []
    for index, message in enumerate(messages):
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_text_items(message.get("content"), index))
            continue
        if role not in _ROLES:
            raise InvalidRequest(
                f"messages[{index}]: role '{role}' cannot be sent to Gemini",
                param=f"messages[{index}].role",
            )
        parts = _turn_parts(message, index, call_names)
        if not parts:
            continue  # Gemini rejects a turn without parts
        if contents and contents[-1]["role"] == _ROLES[role]:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": _ROLES[role], "parts": parts})
    request: JSONObject = {"contents": contents}
    if system:
        request["systemInstruction"] = {"parts": system}
    tools = payload.get("tools")
    if tools:
        request["tools"] = [
            {"functionDeclarations": [_declaration(t, i) for i, t in enumerate(tools)]}
        ]
        if payload.get("tool_choice") is not None:
            request["toolConfig"] = {"functionCallingConfig": _calling_mode(payload["tool_choice"])}
    config = _generation_config(payload)
    if config:
        request["generationConfig"] = config
    return request


def _turn_parts(message: JSONObject, index: int, call_names: dict[str, Any]) -> list[JSONObject]:
    role = message["role"]
    if role == "user":
        return _user_parts(message.get("content"), index)
    if role == "assistant":
        calls = [_function_call_part(_object(call)) for call in message.get("tool_calls") or []]
        return [*_user_parts(message.get("content"), index), *calls]
    call_id = message.get("tool_call_id")
    # A legacy `function` message, or a tool message from a client that adds it, has the name.
    name = call_names.get(call_id) if isinstance(call_id, str) else None
    name = name or message.get("name")
    if not isinstance(name, str):
        raise InvalidRequest(
            f"messages[{index}]: tool_call_id '{call_id}' matches no earlier assistant tool call",
            param=f"messages[{index}].tool_call_id",
        )
    text = "".join(p.get("text", "") for p in _text_items(message.get("content"), index))
    return [{"functionResponse": {"name": name, "response": as_object(text)}}]


def _user_parts(content: object, index: int) -> list[JSONObject]:
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [{"text": content}]
    if not isinstance(content, list):
        raise InvalidRequest(
            f"messages[{index}].content must be a string or an array of content parts",
            param=f"messages[{index}].content",
        )
    return [_content_part(part, index) for part in content]


def _text_items(content: object, index: int) -> list[JSONObject]:
    return [p for p in _user_parts(content, index) if "text" in p]


def _content_part(part: object, index: int) -> JSONObject:
    item: JSONObject = part if isinstance(part, dict) else {}
    kind = item.get("type")
    if kind in ("text", "refusal"):
        return {"text": str(item.get(kind) or "")}
    if kind == "image_url":
        image = item.get("image_url")
        return _media_part(image.get("url") if isinstance(image, dict) else image, index)
    if kind == "input_audio" and isinstance(item.get("input_audio"), dict):
        audio = item["input_audio"]
        mime = f"audio/{audio.get('format')}"
        return {"inlineData": {"mimeType": mime, "data": audio.get("data")}}
    if kind == "file" and isinstance(item.get("file"), dict):
        return _media_part(item["file"].get("file_data"), index)
    raise InvalidRequest(
        f"messages[{index}]: a content part of type '{kind}' cannot be sent to Gemini",
        param=f"messages[{index}].content",
    )


def _media_part(url: object, index: int) -> JSONObject:
    if isinstance(url, str) and url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        if comma and header.endswith(";base64"):
            mime = header.removesuffix(";base64") or "application/octet-stream"
            return {"inlineData": {"mimeType": mime, "data": data}}
    elif isinstance(url, str) and url.startswith(("https://", "http://", "gs://")):
        extension = url.split("?", 1)[0].rsplit(".", 1)[-1].lower()
        mime = _MIME_BY_EXTENSION.get(extension, "image/jpeg")
        return {"fileData": {"mimeType": mime, "fileUri": url}}
    raise InvalidRequest(
        f"messages[{index}]: a media URL must be a base64 data: URL or an http(s) URL",
        param=f"messages[{index}].content",
    )


def _function_call_part(call: JSONObject) -> JSONObject:
    function = _object(call.get("function"))
    arguments = function.get("arguments") or "{}"
    part: JSONObject = {
        "functionCall": {"name": function.get("name"), "args": as_object(arguments)}
    }
    # Gemini 2.5+ signs its reasoning; the signature must come back with the call it rode on.
    signature = _object(_object(call.get("extra_content")).get("google")).get("thought_signature")
    if signature:
        part["thoughtSignature"] = signature
    return part


def as_object(text: str) -> JSONObject:
    """Gemini needs a JSON object for function args and results: wrap anything else."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"result": text}
    return value if isinstance(value, dict) else {"result": value}


def _declaration(tool: object, index: int) -> JSONObject:
    function = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise InvalidRequest(
            f"tools[{index}] must be a function tool with a name", param=f"tools[{index}]"
        )
    declaration: JSONObject = {"name": function["name"]}
    if function.get("description"):
        declaration["description"] = function["description"]
    parameters = gemini_schema(function.get("parameters"))
    if parameters.get("properties"):  # Gemini rejects an OBJECT with no properties
        declaration["parameters"] = parameters
    return declaration


def gemini_schema(schema: object, defs: JSONObject | None = None, depth: int = 0) -> JSONObject:
    """A JSON schema cut down to what Gemini accepts, with local `$ref`s inlined."""
    if not isinstance(schema, dict):
        return {}
    if depth > _MAX_SCHEMA_DEPTH:
        raise InvalidRequest("a tool or response schema is recursive or too deeply nested")
    if defs is None:
        defs = {**(schema.get("definitions") or {}), **(schema.get("$defs") or {})}
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = defs.get(ref.rsplit("/", 1)[-1])
        if target is None:
            raise InvalidRequest(f"schema reference '{ref}' is not defined in the schema")
        inlined = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return gemini_schema(inlined, defs, depth + 1)
    out: JSONObject = {}
    for key, value in schema.items():
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: gemini_schema(sub, defs, depth + 1) for name, sub in value.items()}
        elif key == "items":
            out[key] = gemini_schema(value, defs, depth + 1)
        elif key == "anyOf" and isinstance(value, list):
            out[key] = [gemini_schema(sub, defs, depth + 1) for sub in value]
        elif key == "type" and isinstance(value, list):
            # Gemini takes one type: ["string", "null"] is a nullable string.
            kinds = [kind for kind in value if kind != "null"]
            out["type"] = kinds[0] if kinds else "null"
            if "null" in value:
                out["nullable"] = True
        elif key == "const":
            out["enum"] = [value]
        elif key in _SCHEMA_KEYS:
            out[key] = value
    return out


def _calling_mode(choice: object) -> JSONObject:
    if isinstance(choice, str) and choice in _TOOL_MODES:
        return {"mode": _TOOL_MODES[choice]}
    function = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        return {"mode": "ANY", "allowedFunctionNames": [function["name"]]}
    raise InvalidRequest(
        "'tool_choice' must be 'auto', 'required', 'none' or a named function",
        param="tool_choice",
    )


def _generation_config(payload: JSONObject) -> JSONObject:
    config = {gemini: payload[ours] for ours, gemini in _SAMPLING if payload.get(ours) is not None}
    limit = payload.get("max_completion_tokens") or payload.get("max_tokens")
    if limit is not None:
        config["maxOutputTokens"] = limit
    stop = payload.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else stop
    response_format = _object(payload.get("response_format"))
    if response_format.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = _object(response_format.get("json_schema")).get("schema")
        if schema:
            config["responseSchema"] = gemini_schema(schema)
    return config


def embed_request(payload: JSONObject, resource: str) -> JSONObject:
    """An OpenAI embeddings request as a `batchEmbedContents` body for `models/<id>`."""
    texts = embedding_inputs(payload)
    options: JSONObject = {}
    if payload.get("dimensions") is not None:
        options["outputDimensionality"] = payload["dimensions"]
    return {
        "requests": [
            {"model": resource, "content": {"parts": [{"text": text}]}, **options} for text in texts
        ]
    }


def embedding_inputs(payload: JSONObject) -> list[str]:
    value = payload.get("input")
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        # Token-id arrays are OpenAI's tokenizer; Gemini embeds text only.
        raise InvalidRequest(
            "Gemini embeds text: 'input' must be a string or an array of strings", param="input"
        )
    return texts


def _object(value: object) -> JSONObject:
    return value if isinstance(value, dict) else {}
