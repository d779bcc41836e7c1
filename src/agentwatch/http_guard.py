"""The gateway's outermost ASGI layer: security headers on every response and CORS by allowlist.

A pure `send` wrapper, so streamed responses pass through chunk by chunk; the `/v1` hot path
pays for one header lookup and one closure per request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from agentwatch.proxy.asgi_io import Message, Receive, Scope, Send

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Header = tuple[bytes, bytes]

# The dashboard is a same-origin SPA: nothing is loaded from, framed by or posted to elsewhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)
SECURITY_HEADERS: tuple[Header, ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
HSTS_HEADER: Header = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")

CORS_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
CORS_HEADERS = (
    "Authorization, Content-Type, X-AgentWatch-Org, X-Request-Id, x-api-key, "
    "anthropic-version, anthropic-beta"
)
CORS_MAX_AGE_SECONDS = 600
VARY_ORIGIN: Header = (b"vary", b"Origin")
ALLOW_CREDENTIALS: Header = (b"access-control-allow-credentials", b"true")
PREFLIGHT_REFUSED = b'{"detail": "cross-origin requests from this origin are not allowed"}'


class CorsPolicy:
    """Which browser origins may call the gateway; `*` admits any origin, without credentials."""

    __slots__ = ("any_origin", "origins")

    def __init__(self, origins: Iterable[str] = ()) -> None:
        listed = {_normalise_origin(o.encode("latin-1")) for o in origins}
        self.any_origin = b"*" in listed
        self.origins = frozenset(listed - {b"*"})

    @property
    def closed(self) -> bool:
        return not self.any_origin and not self.origins

    def allow(self, origin: bytes) -> list[Header]:
        """The `Access-Control-Allow-*` headers for `origin`; empty when it is not admitted."""
        if _normalise_origin(origin) in self.origins:
            return [(b"access-control-allow-origin", origin), ALLOW_CREDENTIALS]
        if self.any_origin:
            return [(b"access-control-allow-origin", b"*")]
        return []


def _normalise_origin(origin: bytes) -> bytes:
    return origin.strip().rstrip(b"/").lower()


class HttpGuard:
    """Wraps the whole gateway: adds the security headers (and HSTS when the request came over
    TLS) to every response, answers CORS preflights and marks admitted cross-origin calls."""

    def __init__(self, app: ASGIApp, cors_origins: Iterable[str] = ()) -> None:
        self.app = app
        self.cors = CorsPolicy(cors_origins)
        # With an allowlist, every answer depends on the request's Origin, even a refusal:
        # a shared cache must not hand one origin's answer to another.
        vary = [VARY_ORIGIN] if self.cors.origins else []
        self._plain = HeaderSet([*SECURITY_HEADERS, *vary])
        self._tls = HeaderSet([*SECURITY_HEADERS, HSTS_HEADER, *vary])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = dict(scope["headers"])
        extra = self._tls if _over_tls(scope, headers) else self._plain
        origin = headers.get(b"origin")
        if origin is not None:
            if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
                await self._preflight(origin, extra, send)
                return
            allowed = [] if self.cors.closed else self.cors.allow(origin)
            if allowed:
                extra = HeaderSet([*extra.headers, *allowed])
        await self.app(scope, receive, adding_headers(send, extra))

    async def _preflight(self, origin: bytes, extra: HeaderSet, send: Send) -> None:
        allowed = self.cors.allow(origin)
        if not allowed:
            body = PREFLIGHT_REFUSED
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *extra.headers,
            ]
            await send({"type": "http.response.start", "status": 403, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        headers = [
            *extra.headers,
            *allowed,
            (b"access-control-allow-methods", CORS_METHODS.encode()),
            (b"access-control-allow-headers", CORS_HEADERS.encode()),
            (b"access-control-max-age", str(CORS_MAX_AGE_SECONDS).encode()),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


def _over_tls(scope: Scope, headers: dict[bytes, bytes]) -> bool:
    if scope.get("scheme") == "https":
        return True
    # Trusted as sent: a client spoofing it on plain HTTP gains nothing, since browsers ignore
    # HSTS received over plain HTTP. A proxy chain lists one scheme per hop; the first is
    # the one the client used.
    forwarded = headers.get(b"x-forwarded-proto")
    return forwarded is not None and forwarded.split(b",", 1)[0].strip().lower() == b"https"


class HeaderSet:
    """Headers to add to a response, with their names precomputed for the overlap check."""

    __slots__ = ("headers", "names")

    def __init__(self, headers: list[Header]) -> None:
        self.headers = headers
        self.names = frozenset(name for name, _ in headers)


def adding_headers(send: Send, extra: HeaderSet) -> Send:
    """`send`, with `extra` appended to the response's headers where the app set none of the
    same name (a `Vary` of the app's own is extended instead)."""

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = merge_headers(message.get("headers", ()), extra)
        await send(message)

    return send_with_headers


def merge_headers(headers: Iterable[Header], extra: HeaderSet) -> list[Header]:
    merged = list(headers)
    # ASGI response header names are lower-case; the common case is no overlap at all.
    names = extra.names
    for name, _ in merged:
        if name in names:
            break
    else:
        merged.extend(extra.headers)
        return merged
    present = {name for name, _ in merged}
    for header in extra.headers:
        if header[0] not in present:
            merged.append(header)
        elif header[0] == b"vary":
            merged = [_extend_vary(h, header[1]) if h[0] == b"vary" else h for h in merged]
    return merged


def _extend_vary(header: Header, value: bytes) -> Header:
    listed = {v.strip().lower() for v in header[1].split(b",")}
    if value.lower() in listed or b"*" in listed:
        return header
    return (header[0], header[1] + b", " + value)
