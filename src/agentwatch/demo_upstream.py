"""A fast fake upstream with canned answers, for offline trials and benchmarks: OpenAI's chat
completions, embeddings and models, and Anthropic's Messages API (`demo_upstream_anthropic`).

Raw asyncio + httptools rather than a web framework: the benchmark measures the gateway's
added latency, so the upstream must cost as little CPU per request as we can manage. A model id
ending in `-paced` streams in two writes PACE_SECONDS apart (the first event, then the rest), so
a benchmark can tell a gateway that relays events from one that buffers them.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import signal
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import httptools
import orjson

from agentwatch.demo_upstream_anthropic import AnthropicMessages, StreamAnswer

REPLY = "Hello from the AgentWatch demo upstream."
MODEL_IDS = ("demo-chat", "demo-embedding")
EMBEDDING_DIMENSIONS = 8
PACED_SUFFIX = "-paced"
PACE_SECONDS = 0.01

_REPLY_PIECES = [REPLY.split(" ")[0]] + [" " + word for word in REPLY.split(" ")[1:]]
_COMPLETION_TOKENS = len(_REPLY_PIECES)
_EMBEDDING = [round(0.1 * (i + 1), 3) for i in range(EMBEDDING_DIMENSIONS)]
_EMBEDDING_BASE64 = base64.b64encode(struct.pack(f"<{EMBEDDING_DIMENSIONS}f", *_EMBEDDING))
_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found"}
# Ids only need to be unique within a run; a counter is cheaper than random bytes.
_ids = itertools.count(1)

JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class PacedResponse:
    """A response written in two parts, PACE_SECONDS apart."""

    first: bytes
    rest: bytes


Response = bytes | PacedResponse


class RequestRejected(Exception):
    """The request is malformed; answered with a 400 in OpenAI's error shape."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def _error_body(message: str, kind: str, param: str | None, code: str | None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}})


def _head(status: int, content_type: bytes, keep_alive: bool, length: int | None) -> bytes:
    framing = b"Transfer-Encoding: chunked" if length is None else b"Content-Length: %d" % length
    connection = b"" if keep_alive else b"Connection: close\r\n"
    head = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\n%s\r\n%s\r\n"
    return head % (status, _REASONS[status], content_type, framing, connection)


def _json_response(status: int, body: bytes, keep_alive: bool) -> bytes:
    return _head(status, b"application/json", keep_alive, len(body)) + body


def _parse_request(body: bytes) -> tuple[JsonObject, str]:
    """The JSON object in the body and the model it names."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestRejected(f"We could not parse the JSON body of your request: {exc}") from exc
    if not isinstance(payload, dict):
        raise RequestRejected("The request body must be a JSON object.")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise RequestRejected("you must provide a model parameter", "model")
    return payload, model


def _usage(prompt_tokens: int) -> JsonObject:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": _COMPLETION_TOKENS,
        "total_tokens": prompt_tokens + _COMPLETION_TOKENS,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def _chat(body: bytes, keep_alive: bool) -> Response:
    payload, model = _parse_request(body)
    if not isinstance(payload.get("messages"), list):
        raise RequestRejected("'messages' is a required property", "messages")
    prompt_tokens = max(1, len(body) // 4)
    base = {"id": f"chatcmpl-demo{next(_ids):020d}", "created": int(time.time()), "model": model}
    if payload.get("stream") is True:
        options = payload.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        return _chat_stream(base, prompt_tokens, include_usage, keep_alive)
    completion = {
        **base,
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": REPLY, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(prompt_tokens),
        "system_fingerprint": None,
    }
    return _json_response(200, orjson.dumps(completion), keep_alive)


def _chat_stream(
    base: JsonObject, prompt_tokens: int, include_usage: bool, keep_alive: bool
) -> Response:
    def chunk(delta: JsonObject, finish_reason: str | None) -> JsonObject:
        event: JsonObject = {
            **base,
            "object": "chat.completion.chunk",
            "system_fingerprint": None,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if include_usage:  # OpenAI sends "usage": null on every chunk but the last
            event["usage"] = None
        return event

    events = [chunk({"role": "assistant", "content": "", "refusal": None}, None)]
    events += [chunk({"content": piece}, None) for piece in _REPLY_PIECES]
    events.append(chunk({}, "stop"))
    if include_usage:
        last = chunk({}, None)
        last["choices"] = []
        last["usage"] = _usage(prompt_tokens)
        events.append(last)
    frames = [b"data: " + orjson.dumps(event) + b"\n\n" for event in events]
    frames.append(b"data: [DONE]\n\n")
    return _event_stream(frames, keep_alive, base["model"])


def _event_stream(frames: list[bytes], keep_alive: bool, model: str) -> Response:
    # One HTTP chunk per SSE event, as a real server flushes them; written back-to-back
    # (unless paced) because the benchmark measures the gateway, not a model's pace.
    head = _head(200, b"text/event-stream", keep_alive, None)
    chunks = [b"%x\r\n%s\r\n" % (len(frame), frame) for frame in frames]
    chunks.append(b"0\r\n\r\n")
    if model.endswith(PACED_SUFFIX):
        return PacedResponse(head + chunks[0], b"".join(chunks[1:]))
    return head + b"".join(chunks)


def _embeddings(body: bytes, keep_alive: bool) -> bytes:
    payload, model = _parse_request(body)
    raw = payload.get("input")
    if isinstance(raw, str) or (isinstance(raw, list) and raw and isinstance(raw[0], int)):
        inputs = 1  # one string, or one pre-tokenised input
    elif isinstance(raw, list) and raw:
        inputs = len(raw)
    else:
        raise RequestRejected("'input' must be a non-empty string or array", "input")
    vector: object = (
        _EMBEDDING_BASE64.decode() if payload.get("encoding_format") == "base64" else _EMBEDDING
    )
    prompt_tokens = max(1, len(body) // 4)
    result = {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": vector} for i in range(inputs)],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
    return _json_response(200, orjson.dumps(result), keep_alive)


_MODELS_BODY = orjson.dumps(
    {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": 1700000000, "owned_by": "agentwatch"}
            for name in MODEL_IDS
        ],
    }
)
_ANTHROPIC = AnthropicMessages(_REPLY_PIECES)


def _messages(body: bytes, keep_alive: bool) -> Response:
    answer = _ANTHROPIC.answer(body)
    if isinstance(answer, StreamAnswer):
        return _event_stream(answer.frames, keep_alive, answer.model)
    return _json_response(answer.status, answer.body, keep_alive)


def _count_tokens(body: bytes, keep_alive: bool) -> bytes:
    answer = _ANTHROPIC.count_tokens(body)
    return _json_response(answer.status, answer.body, keep_alive)


_POST_ROUTES: dict[bytes, Callable[[bytes, bool], Response]] = {
    b"/v1/chat/completions": _chat,
    b"/v1/embeddings": _embeddings,
    b"/v1/messages": _messages,
    b"/v1/messages/count_tokens": _count_tokens,
}


def respond(method: bytes, path: bytes, body: bytes, keep_alive: bool) -> Response:
    """The complete HTTP/1.1 response (head and body) to one request, in two parts if paced."""
    handler = _POST_ROUTES.get(path) if method == b"POST" else None
    if handler is not None:
        try:
            return handler(body, keep_alive)
        except RequestRejected as exc:
            error = _error_body(str(exc), "invalid_request_error", exc.param, None)
            return _json_response(400, error, keep_alive)
    if method == b"GET" and path == b"/v1/models":
        return _json_response(200, _MODELS_BODY, keep_alive)
    message = f"Unknown request URL: {method.decode()} {path.decode(errors='replace')}."
    return _json_response(
        404, _error_body(message, "invalid_request_error", None, "unknown_url"), keep_alive
    )


class _Connection(asyncio.Protocol):
    """One client connection; httptools calls the `on_*` methods as it parses."""

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._body: list[bytes] = []
        # Responses not yet written: only ever more than one behind a paced stream.
        self._outbox: deque[tuple[Response, bool]] = deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check here.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._close()  # no upgrades (websockets, h2c) here
        except httptools.HttpParserError:
            error = _error_body("Malformed HTTP request.", "invalid_request_error", None, None)
            if self._transport is not None:
                self._transport.write(_json_response(400, error, keep_alive=False))
            self._close()

    def on_message_begin(self) -> None:
        self._url = b""
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        # Queued, so pipelined requests get their responses in order, even behind a paced one.
        keep_alive = self._parser.should_keep_alive()
        path = self._url.partition(b"?")[0]
        response = respond(self._parser.get_method(), path, b"".join(self._body), keep_alive)
        self._outbox.append((response, keep_alive))
        if len(self._outbox) == 1:
            self._flush()

    def _flush(self) -> None:
        while self._outbox:
            response, keep_alive = self._outbox[0]
            if isinstance(response, PacedResponse):
                self._write(response.first)
                self._outbox[0] = (response.rest, keep_alive)
                asyncio.get_running_loop().call_later(PACE_SECONDS, self._flush)
                return
            self._outbox.popleft()
            self._write(response)
            if not keep_alive:
                self._close()
                return

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def start_server(host: str, port: int) -> asyncio.Server:
    """Listen on host:port in the running loop; the caller closes the returned server."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(_Connection, host, port, backlog=1024)


def serve_forever(host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM, on uvloop."""
    import uvloop

    async def run() -> None:
        server = await start_server(host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        print(f"demo upstream listening on http://{host}:{port}/v1", flush=True)
        async with server:
            await stop.wait()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run())
