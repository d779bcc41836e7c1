"""What the admin side (everything but `/v1`) accepts, and how it refuses without leaking input.

`AdminRequestGuard` refuses oversized bodies, malformed JSON and NUL bytes or broken
percent-encoding in the URL before a route sees them; `install_error_handlers` keeps
validation errors from echoing the submitted values and turns a crash into a bare 500.
"""

from __future__ import annotations

import logging
import re
import secrets

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from agentwatch.http_guard import ASGIApp
from agentwatch.proxy.asgi_io import Message, Receive, Scope, Send

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 32
TOO_LARGE = "request body is larger than 1 MiB"
# `%` not followed by two hex digits, an encoded NUL, or a raw one.
_BAD_URL_BYTES = re.compile(rb"%(?![0-9A-Fa-f]{2})|%00|\x00")


def json_structure_problem(document: object, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """Why a parsed JSON document is refused (too deep, a NUL in a key or value), or None.

    Iterative, so a hostile document cannot exhaust the interpreter's stack.
    """
    pending: list[tuple[object, int]] = [(document, 0)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return "JSON strings may not contain NUL characters (\\u0000)"
        elif isinstance(value, dict | list):
            if depth >= max_depth:
                return f"JSON nests deeper than {max_depth} levels"
            if isinstance(value, dict):
                for key, item in value.items():
                    if "\x00" in key:
                        return "JSON keys may not contain NUL characters (\\u0000)"
                    pending.append((item, depth + 1))
            else:
                pending.extend((item, depth + 1) for item in value)
    return None


def json_body_problem(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """Why a JSON request body is refused, or None when it may reach a route."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _describe_decode_error(exc, max_depth)
    return json_structure_problem(document, max_depth)


def _describe_decode_error(exc: orjson.JSONDecodeError, max_depth: int) -> str:
    # orjson refuses lone surrogates and anything nested deeper than 1024 on its own.
    reason = exc.msg
    if "UTF-8" in reason:
        return "request body is not valid UTF-8"
    if "surrogate" in reason:
        return "JSON strings may not contain lone surrogates (unpaired \\ud800-\\udfff escapes)"
    if "depth limit" in reason:
        return f"JSON nests deeper than {max_depth} levels"
    return f"request body is not valid JSON: {exc}"


def url_problem(scope: Scope) -> str | None:
    raw_path = scope.get("raw_path")
    path_bytes = raw_path if isinstance(raw_path, bytes) else scope["path"].encode()
    if _BAD_URL_BYTES.search(path_bytes) or "\x00" in scope["path"]:
        return "the path contains a NUL byte or invalid percent-encoding"
    if _BAD_URL_BYTES.search(scope.get("query_string", b"")):
        return "the query string contains a NUL byte or invalid percent-encoding"
    return None


def _is_json(content_type: bytes | None) -> bool:
    # FastAPI parses a body with no content type as JSON too, so it is checked as JSON.
    if content_type is None:
        return True
    media_type = content_type.split(b";", 1)[0].strip().lower()
    kind, _, subtype = media_type.partition(b"/")
    return kind == b"application" and (subtype == b"json" or subtype.endswith(b"+json"))


class AdminRequestGuard:
    """Pure ASGI middleware for the FastAPI app: reads the body (at most 1 MiB), checks it,
    then replays it to the app. Every refusal is a 4xx `{"detail": ...}`."""

    def __init__(self, app: ASGIApp, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = url_problem(scope)
        if problem is not None:
            await send_detail(send, 400, problem)
            return
        headers: dict[bytes, bytes] = dict(scope["headers"])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await send_detail(send, 413, TOO_LARGE)
            return
        chunks: list[bytes] = []
        size = 0
        more_body = True
        while more_body:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # nobody is left to answer
            chunk: bytes = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            more_body = message.get("more_body", False)
            if size > self.max_body_bytes:
                await send_detail(send, 413, TOO_LARGE)
                return
        body = b"".join(chunks)
        if body and _is_json(headers.get(b"content-type")):
            problem = json_body_problem(body)
            if problem is not None:
                await send_detail(send, 400, problem)
                return
        await self.app(scope, _replay(body, receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    replayed = False

    async def receive_again() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive_again


async def send_detail(send: Send, status: int, detail: str) -> None:
    body = orjson.dumps({"detail": detail})
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def install_error_handlers(api: FastAPI) -> None:
    api.add_exception_handler(RequestValidationError, validation_error)
    api.add_exception_handler(Exception, internal_error)


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 without `input`, `ctx` or `url`: the input may be a password."""
    if not isinstance(exc, RequestValidationError):  # registered for that class only
        raise exc
    detail = [
        {"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]}
        for error in exc.errors()
    ]
    return JSONResponse({"detail": detail}, status_code=422)


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug answers a bare 500 naming a request id; Starlette re-raises the exception after
    this handler, so the server logs its traceback."""
    request_id = _request_id(request)
    log.error(
        "unhandled %s in %s %s; request id %s",
        type(exc).__name__,
        request.method,
        request.url.path,
        request_id,
    )
    return JSONResponse(
        {"detail": "internal error", "request_id": request_id},
        status_code=500,
        headers={"x-request-id": request_id},
    )


def _request_id(request: Request) -> str:
    sent = request.headers.get("x-request-id", "")
    if 0 < len(sent) <= 128 and sent.isascii() and sent.isprintable():
        return sent
    return secrets.token_hex(16)
