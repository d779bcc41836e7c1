"""Pure translation of Gemini answers into the OpenAI pivot: chat completions, usage,
embeddings, and Gemini's error bodies as gateway errors."""

from __future__ import annotations

import base64
import math
import re
import secrets
import struct

import orjson

from agentwatch.errors import (
    UpstreamError,
    UpstreamOverloaded,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
)
from agentwatch.providers.base import JSONObject, Usage, reported_count
from agentwatch.providers.gemini_wire import embedding_inputs
from agentwatch.upstream import upstream_error

_FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    **dict.fromkeys(
        ("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"),
        "content_filter",
    ),
}
_AUTH_STATUSES = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED"})
_REJECTED_STATUSES = frozenset({"INVALID_ARGUMENT", "FAILED_PRECONDITION", "OUT_OF_RANGE"})
# "The input token count (1048580) exceeds the maximum number of tokens allowed (1048576)."
_CONTEXT_LENGTH = re.compile(
    r"token count|maximum number of tokens|context (?:length|window)|too long", re.IGNORECASE
)


def chat_completion(
    response: JSONObject, *, model: str, completion_id: str, created: int
) -> tuple[JSONObject, Usage | None]:
    """A Gemini `GenerateContentResponse` as an OpenAI `chat.completion`, and its usage."""
    metadata = response.get("usageMetadata")
    choices = [_choice(c, i) for i, c in enumerate(response.get("candidates") or [])]
    if not choices:
        # No candidate at all: the prompt itself was blocked (promptFeedback.blockReason).
        blocked = bool((response.get("promptFeedback") or {}).get("blockReason"))
        message = {"role": "assistant", "content": ""}
        finish = "content_filter" if blocked else "stop"
        choices = [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}]
    completion: JSONObject = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": response.get("modelVersion") or model,
        "choices": choices,
    }
    usage = usage_from_metadata(metadata)
    if usage is not None:
        completion["usage"] = openai_usage(metadata)
    return completion, usage


def _choice(candidate: JSONObject, position: int) -> JSONObject:
    parts = (candidate.get("content") or {}).get("parts") or []
    texts = [p["text"] for p in parts if isinstance(p.get("text"), str) and not p.get("thought")]
    calls = [tool_call(p) for p in parts if isinstance(p.get("functionCall"), dict)]
    message: JSONObject = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
    }
    if calls:
        message["tool_calls"] = calls
    return {
        "index": candidate.get("index", position),
        "message": message,
        "finish_reason": finish_reason(candidate.get("finishReason"), has_calls=bool(calls)),
        "logprobs": None,
    }


def tool_call(part: JSONObject) -> JSONObject:
    """A `functionCall` part as an OpenAI tool call; Gemini gives no id, so one is made up."""
    function = part["functionCall"]
    call: JSONObject = {
        "id": f"call_{secrets.token_hex(12)}",
        "type": "function",
        "function": {
            "name": function.get("name"),
            "arguments": orjson.dumps(function.get("args") or {}).decode(),
        },
    }
    if part.get("thoughtSignature"):
        # Google's own OpenAI-compatible shape, so clients that keep it send it back.
        call["extra_content"] = {"google": {"thought_signature": part["thoughtSignature"]}}
    return call


def finish_reason(reason: str | None, *, has_calls: bool) -> str:
    # Gemini says STOP after a function call; OpenAI clients wait for `tool_calls`.
    if has_calls and reason in (None, "STOP"):
        return "tool_calls"
    return _FINISH_REASONS.get(reason or "STOP", "stop")


def usage_from_metadata(metadata: object) -> Usage | None:
    if not isinstance(metadata, dict):
        return None
    return Usage(
        # Tool-use prompt tokens (search results and the like) are billed as input.
        prompt_tokens=_count(metadata, "promptTokenCount")
        + _count(metadata, "toolUsePromptTokenCount"),
        # Thinking is billed as output, so it is completion in OpenAI's sense.
        completion_tokens=_count(metadata, "candidatesTokenCount")
        + _count(metadata, "thoughtsTokenCount"),
        cached_tokens=_count(metadata, "cachedContentTokenCount"),
        reasoning_tokens=reported_count(metadata, "thoughtsTokenCount"),
    )


def openai_usage(metadata: object) -> JSONObject:
    usage = usage_from_metadata(metadata) or Usage()
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": _count(metadata, "thoughtsTokenCount")},
    }


def _count(metadata: object, key: str) -> int:
    value = metadata.get(key) if isinstance(metadata, dict) else None
    return value if isinstance(value, int) and value > 0 else 0


def embeddings_response(response: JSONObject, payload: JSONObject) -> tuple[JSONObject, Usage]:
    """`{embeddings: [{values}]}` as an OpenAI embeddings list, in the encoding asked for."""
    texts = embedding_inputs(payload)
    vectors = [item.get("values") or [] for item in response.get("embeddings") or []]
    if len(vectors) != len(texts):
        raise UpstreamError(f"Gemini returned {len(vectors)} embeddings for {len(texts)} inputs")
    as_base64 = payload.get("encoding_format") == "base64"
    # Gemini reports no token counts for embeddings: about 4 characters per token is
    # OpenAI's own rule of thumb, and close enough to meter and price the call.
    tokens = sum(max(1, math.ceil(len(text) / 4)) for text in texts)
    body = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _base64(v) if as_base64 else v}
            for i, v in enumerate(vectors)
        ],
        "model": payload.get("model"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return body, Usage(prompt_tokens=tokens)


def _base64(vector: list[float]) -> str:
    # OpenAI's base64 encoding: little-endian float32s.
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def gemini_error(provider: str, status: int, body: bytes, retry_after: str | None) -> UpstreamError:
    """Map a Gemini error body (`{"error": {"code", "message", "status"}}`) to a gateway
    error; Gemini's `status` word is more precise than the HTTP status."""
    error = _error_object(body)
    if error is None:
        return upstream_error(provider, status, body, retry_after)
    word = error.get("status")
    message = str(error.get("message") or f"HTTP {status}")
    text = f"upstream provider '{provider}' returned {status} {word}: {message}"
    # An unknown key is a 400 INVALID_ARGUMENT with reason API_KEY_INVALID, not a 401.
    if word in _AUTH_STATUSES or "API_KEY_INVALID" in _detail_values(error, "reason"):
        return UpstreamError(text, code="upstream_auth_failed")
    if word in _REJECTED_STATUSES:
        code = "context_length_exceeded" if _CONTEXT_LENGTH.search(message) else None
        return UpstreamRejected(text, code=code)
    if word == "NOT_FOUND":
        return UpstreamRejected(text, status=404)
    if word == "RESOURCE_EXHAUSTED":
        delay = retry_after or _retry_delay(error)
        return UpstreamRateLimited(text, headers={"retry-after": delay} if delay else {})
    if word == "UNAVAILABLE":
        return UpstreamOverloaded(text)
    if word == "DEADLINE_EXCEEDED":
        return UpstreamTimeout(text)
    if word in ("INTERNAL", "UNKNOWN"):
        return UpstreamError(text)
    return upstream_error(provider, status, body, retry_after)


def _error_object(body: bytes) -> JSONObject | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(parsed, list) and parsed:  # non-SSE streams wrap the error in an array
        parsed = parsed[0]
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return error if isinstance(error, dict) else None


def _detail_values(error: JSONObject, key: str) -> list[object]:
    details = error.get("details")
    if not isinstance(details, list):
        return []
    return [d.get(key) for d in details if isinstance(d, dict) and key in d]


def _retry_delay(error: JSONObject) -> str | None:
    """Gemini sends no Retry-After header; its RetryInfo detail says e.g. `"retryDelay": "7s"`."""
    for delay in _detail_values(error, "retryDelay"):
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return str(math.ceil(float(delay[:-1])))
            except ValueError:
                continue
    return None
