"""Small ASGI helpers for the proxy: request headers, bounded body reads, JSON and SSE replies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from agentwatch.cache.policy import CacheRequest
from agentwatch.errors import BodyTooLarge, GatewayError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_CONTENT_TYPE = (b"content-type", b"application/json")
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class ClientDisconnected(Exception):
    """The client went away before the gateway answered."""


class RequestHeaders:
    """The few request headers the proxy reads, picked out in one pass."""

    __slots__ = (
        "anthropic_beta",
        "api_key",
        "cache",
        "content_length",
        "end_user",
        "request_id",
        "tags",
    )

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.api_key: str | None = None
        self.content_length: int | None = None
        self.request_id: str | None = None
        self.end_user: str | None = None
        self.anthropic_beta: str | None = None
        self.tags: frozenset[str] = frozenset()
        bearer: str | None = None
        cache_mode: bytes | None = None
        cache_ttl: bytes | None = None
        cache_control: bytes | None = None
        for name, value in raw:
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and token.strip():
                    bearer = token.strip()
            elif name == b"x-api-key":
                self.api_key = value.decode("latin-1").strip() or None
            elif name == b"content-length":
                self.content_length = int(value) if value.isdigit() else None
            elif name == b"x-request-id" and 0 < len(value) <= 128 and value.isascii():
                self.request_id = value.decode("ascii")
            elif name == b"anthropic-beta":
                self.anthropic_beta = value.decode("latin-1")
            elif name == b"x-agentwatch-user":
                user = value.decode("latin-1").strip()
                self.end_user = user if 0 < len(user) <= 256 else None
            elif name == b"x-agentwatch-tags":
                self.tags = frozenset(
                    t.strip() for t in value.decode("latin-1").split(",") if t.strip()
                )
            elif name == b"x-agentwatch-cache":
                cache_mode = value
            elif name == b"x-agentwatch-cache-ttl":
                cache_ttl = value
            elif name == b"cache-control":
                cache_control = value
        if bearer is not None:
            self.api_key = bearer
        self.cache = CacheRequest.from_headers(cache_mode, cache_ttl, cache_control)


async def read_body(receive: Receive, limit: int, declared_length: int | None) -> bytes:
    if declared_length is not None and declared_length > limit:
        raise BodyTooLarge(f"request body is {declared_length} bytes; the limit is {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def base_headers(request_id: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-request-id", request_id.encode())]


async def send_json(
    send: Send,
    status: int,
    body: bytes,
    request_id: str,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        JSON_CONTENT_TYPE,
        (b"content-length", str(len(body)).encode()),
        *base_headers(request_id),
    ]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(
    send: Send, error: GatewayError, request_id: str, body: bytes | None = None
) -> None:
    extra = [(k.encode(), v.encode()) for k, v in error.headers.items()]
    await send_json(send, error.status, body or error.to_json(), request_id, extra)


async def wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
