"""Checks on client request bodies: malformed input gets a precise 400, not an upstream 500."""

from __future__ import annotations

from typing import Any

import orjson

from agentwatch.errors import InvalidRequest

JSONObject = dict[str, Any]
_NUMBERS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
_INTEGERS = ("max_tokens", "max_completion_tokens", "n", "seed")


def parse_json_object(body: bytes) -> JSONObject:
    if not body.strip():
        raise InvalidRequest("request body is empty; expected a JSON object")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"could not parse the JSON body: {exc}") from exc
    if not isinstance(payload, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return payload


def model_name(payload: JSONObject) -> str:
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a non-empty string", param="model")
    return model


def check_chat(payload: JSONObject) -> None:
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest(
            "'messages' is required and must be a non-empty array", param="messages"
        )
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(
                f"messages[{index}] must be an object with a string 'role'",
                param=f"messages[{index}]",
            )
    _check_flag(payload, "stream")
    options = payload.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest("'stream_options' must be an object", param="stream_options")
    _check_sampling(payload)


def check_completions(payload: JSONObject) -> None:
    prompt = payload.get("prompt")
    if not (isinstance(prompt, str) or (isinstance(prompt, list) and prompt)):
        raise InvalidRequest("'prompt' is required: a string or an array", param="prompt")
    _check_flag(payload, "stream")
    _check_sampling(payload)


def check_embeddings(payload: JSONObject) -> None:
    value = payload.get("input")
    if isinstance(value, str):
        return
    if isinstance(value, list) and value and all(_embeddable(item) for item in value):
        return
    raise InvalidRequest(
        "'input' is required: a string, an array of strings, or an array of token arrays",
        param="input",
    )


def _embeddable(item: object) -> bool:
    if isinstance(item, str):
        return True
    if isinstance(item, int) and not isinstance(item, bool):
        return True
    return isinstance(item, list) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in item
    )


def _check_sampling(payload: JSONObject) -> None:
    for name in _NUMBERS:
        value = payload.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise InvalidRequest(f"'{name}' must be a number", param=name)
    for name in _INTEGERS:
        value = payload.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidRequest(f"'{name}' must be an integer", param=name)


def wants_stream(payload: JSONObject) -> bool:
    return payload.get("stream") is True


def wants_stream_usage(payload: JSONObject) -> bool:
    options = payload.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _check_flag(payload: JSONObject, name: str) -> None:
    value = payload.get(name)
    if value is not None and not isinstance(value, bool):
        raise InvalidRequest(f"'{name}' must be a boolean", param=name)
