"""A fake Gemini API on 127.0.0.1 speaking the real wire format, with failures on demand.

`POST /v1beta/models/<model>:generateContent`, `:streamGenerateContent?alt=sse` and
`:batchEmbedContents`. The model id picks the behaviour: `thinking`, `safety`, `blocked`,
`stream-error`, `fail-400`, `fail-403`, `fail-404`, `fail-429`, `fail-500`, `fail-503`,
`fail-504`; any other id answers with text, or with a function call when the request declares
tools and its last turn is not a function response. Like Gemini, it rejects a wrong
`x-goog-api-key` (400 API_KEY_INVALID), roles other than user/model, JSON-schema keywords
outside Gemini's subset, and function responses that are not objects.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fake_server import ThreadedServer

API_KEY = "gemini-secret"
REPLY_PARTS = ["Hello", " from", " fake", " Gemini."]
PROMPT_TOKENS = 12
CANDIDATES_TOKENS = 5
CACHED_TOKENS = 4
THOUGHTS_TOKENS = 9
THOUGHT_TEXT = "Let me think about the answer."
THINKING_ANSWER = "42"
CALL_ARGS = {"city": "Paris"}
RETRY_DELAY_SECONDS = 7
CONTEXT_MESSAGE = (
    "The input token count (1048580) exceeds the maximum number of tokens allowed (1048576)."
)
SCHEMA_KEYS = {
    "type", "format", "title", "description", "nullable", "enum", "items", "properties",
    "required", "anyOf", "minItems", "maxItems", "minProperties", "maxProperties", "minLength",
    "maxLength", "pattern", "minimum", "maximum", "example", "default", "propertyOrdering",
}  # fmt: skip
FAILURES: dict[str, tuple[int, str, str]] = {
    "fail-400": (400, "INVALID_ARGUMENT", CONTEXT_MESSAGE),
    "fail-403": (403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers."),
    "fail-404": (404, "NOT_FOUND", "models/fail-404 is not found for API version v1beta."),
    "fail-429": (429, "RESOURCE_EXHAUSTED", "You exceeded your current quota."),
    "fail-500": (500, "INTERNAL", "An internal error has occurred."),
    "fail-503": (503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
    "fail-504": (504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}


@dataclass
class Received:
    model: str
    method: str
    query: dict[str, str]
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeGemini(ThreadedServer):
    """Runs in its own thread and loop, so synchronous SDK clients can be used in tests."""

    received: list[Received] = field(default_factory=list)

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    def last(self, method: str) -> Received:
        return next(r for r in reversed(self.received) if r.method == method)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1beta/models/{target}", self._dispatch)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["target"].rpartition(":")
        body = orjson.loads(await request.read())
        self.received.append(
            Received(model, method, dict(request.query), dict(request.headers), body)
        )
        if request.headers.get("x-goog-api-key") != API_KEY:
            return _error(400, "INVALID_ARGUMENT", "API key not valid.", reason="API_KEY_INVALID")
        if model in FAILURES:
            return _error(*FAILURES[model])
        if method == "batchEmbedContents":
            return _embeddings(model, body)
        problem = _invalid(body)
        if problem is not None:
            return _error(400, "INVALID_ARGUMENT", problem)
        events = _answer(model, body)
        if method == "generateContent":
            return _json(_merge(events))
        if method == "streamGenerateContent" and request.query.get("alt") == "sse":
            return await _stream(request, model, events)
        return _error(404, "NOT_FOUND", f"unknown method {method}")


def _answer(model: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The response as the stream events Gemini would send; merged for `generateContent`."""
    usage = {"promptTokenCount": PROMPT_TOKENS}
    done = {
        "promptTokenCount": PROMPT_TOKENS,
        "candidatesTokenCount": CANDIDATES_TOKENS,
        "totalTokenCount": PROMPT_TOKENS + CANDIDATES_TOKENS,
        "cachedContentTokenCount": CACHED_TOKENS,
    }
    if model == "blocked":
        return [{"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": usage}]
    if model == "safety":
        ratings = [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH"}]
        candidate = {"finishReason": "SAFETY", "index": 0, "safetyRatings": ratings}
        return [{"candidates": [candidate], "usageMetadata": usage}]
    if model == "thinking":
        thinking = done | {"thoughtsTokenCount": THOUGHTS_TOKENS}
        return [
            _event([{"text": THOUGHT_TEXT, "thought": True}], None, usage),
            _event([{"text": THINKING_ANSWER}], "STOP", thinking),
        ]
    contents = body.get("contents") or []
    last_parts = contents[-1]["parts"] if contents else []
    results = [p["functionResponse"] for p in last_parts if "functionResponse" in p]
    if results:
        text = "The tool said: " + json.dumps(results[0]["response"], sort_keys=True)
        return [_event([{"text": text}], "STOP", done)]
    declarations = [d for t in body.get("tools") or [] for d in t.get("functionDeclarations", [])]
    if declarations:
        call = {"functionCall": {"name": declarations[0]["name"], "args": CALL_ARGS}}
        return [_event([call], "STOP", done)]
    events = [_event([{"text": word}], None, usage) for word in REPLY_PARTS]
    events[-1] = _event([{"text": REPLY_PARTS[-1]}], "STOP", done)
    if model == "stream-error":
        events[1:] = [{"error": {"code": 503, "status": "UNAVAILABLE", "message": "overloaded"}}]
    return events


def _event(parts: list[dict[str, Any]], finish: str | None, usage: dict[str, Any]) -> Any:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": "fake-gemini-001"}


def _merge(events: list[dict[str, Any]]) -> dict[str, Any]:
    merged = dict(events[-1])
    if "candidates" in merged:
        parts = [
            p
            for e in events
            for c in e["candidates"]
            for p in c.get("content", {}).get("parts", [])
        ]
        if parts:
            merged["candidates"] = [merged["candidates"][0] | {"content": {"parts": parts}}]
    return merged


async def _stream(
    request: web.Request, model: str, events: list[dict[str, Any]]
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    for event in events:
        # Gemini ends lines with CRLF; splitting the last CR from its LF makes the gateway
        # join a line end that arrives in two reads.
        frame = b"data: " + orjson.dumps(event) + b"\r\n\r\n"
        await response.write(frame[:-1])
        await asyncio.sleep(0.002)
        await response.write(frame[-1:])
    await response.write_eof()
    return response


def _embeddings(model: str, body: dict[str, Any]) -> web.Response:
    requests = body.get("requests") or []
    for item in requests:
        if item.get("model") != f"models/{model}":
            return _error(400, "INVALID_ARGUMENT", "request model does not match the URL model")
    vectors = []
    for index, item in enumerate(requests):
        size = item.get("outputDimensionality", 3)
        vectors.append({"values": [round(0.1 * (index + 1), 3)] * size})
    return _json({"embeddings": vectors})


def _invalid(body: dict[str, Any]) -> str | None:
    unknown = set(body) - {"contents", "systemInstruction", "tools", "toolConfig",
                           "generationConfig", "safetySettings"}  # fmt: skip
    if unknown:
        return f"Invalid JSON payload received. Unknown name {sorted(unknown)[0]!r}"
    for content in body.get("contents") or []:
        if content.get("role") not in ("user", "model"):
            return f"Please use a valid role: user, model. Got {content.get('role')!r}"
        for part in content.get("parts") or []:
            result = part.get("functionResponse")
            if result is not None and not isinstance(result.get("response"), dict):
                return "Invalid value at 'functionResponse.response' (google.protobuf.Struct)"
    for tool in body.get("tools") or []:
        for declaration in tool.get("functionDeclarations") or []:
            problem = _invalid_schema(declaration.get("parameters") or {})
            if problem:
                return problem
    return None


def _invalid_schema(schema: dict[str, Any]) -> str | None:
    for key, value in schema.items():
        if key not in SCHEMA_KEYS:
            return f"Invalid JSON payload received. Unknown name {key!r}"
        subs = value.values() if key == "properties" else [value] if key == "items" else []
        for sub in subs:
            problem = _invalid_schema(sub)
            if problem:
                return problem
    return None


def _json(payload: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


def _error(code: int, status: str, message: str, reason: str | None = None) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if reason:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason}]
    if status == "RESOURCE_EXHAUSTED":
        # Gemini sends no Retry-After header; the delay is in a RetryInfo detail.
        retry = {
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": f"{RETRY_DELAY_SECONDS}s",
        }
        error["details"] = [retry]
    return _json({"error": error}, code)
