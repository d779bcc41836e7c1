"""A small HTTP/1.1 client for upstream calls: keep-alive pools, streamed bodies, proxies.

aiohttp spends several hundred microseconds of CPU per request; this client, built on
asyncio protocols and the httptools parser, spends a fraction of that, and the gateway's
hot path is mostly this client.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import unquote, urlsplit

import httptools

MAX_IDLE_PER_ORIGIN = 512
IDLE_SECONDS = 60.0
HIGH_WATER_BYTES = 1 << 20


class HttpClientError(Exception):
    """The exchange with the server failed before a complete response arrived."""


class ConnectFailed(HttpClientError):
    pass


class ReadTimedOut(HttpClientError, TimeoutError):
    pass


class ConnectionClosed(HttpClientError):
    pass


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent in the request line

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConnectFailed(f"unsupported URL {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.scheme, parts.hostname, port, path)

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


class Response:
    """Status and headers at once; the body as it arrives. Release it, or close it."""

    def __init__(self, connection: _Connection) -> None:
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self._connection = connection
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._complete = False
        self._error: BaseException | None = None
        self._released = False

    def header(self, name: str) -> str | None:
        wanted = name.lower().encode()
        for key, value in reversed(self.raw_headers):
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None

    async def read(self) -> bytes:
        parts = [chunk async for chunk in self.iter_chunks()]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        while True:
            if self._chunks:
                # Whatever has arrived goes out as one piece: fewer, larger writes downstream.
                chunk = self._chunks.popleft() if len(self._chunks) == 1 else b"".join(self._chunks)
                self._chunks.clear()
                self._buffered = 0
                self._connection.resume()
                yield chunk
                continue
            if self._error is not None:
                raise self._error
            if self._complete:
                return
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def release(self) -> None:
        """Give the connection back to the pool if the body was read to the end."""
        if not self._released:
            self._released = True
            self._connection.finished(reusable=self._complete and self._error is None)

    def close(self) -> None:
        if not self._released:
            self._released = True
            self._connection.finished(reusable=False)

    def _feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered >= HIGH_WATER_BYTES:
            self._connection.pause()
        self._wake()

    def _finish(self, error: BaseException | None) -> None:
        if error is None:
            self._complete = True
        elif not self._complete:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class _Connection(asyncio.Protocol):
    def __init__(self, pool: Pool, key: tuple[str, str, int, str | None]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.used = False
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpResponseParser(self)
        self._response: Response | None = None
        self._head: asyncio.Future[Response] | None = None
        self._got_bytes = False
        self._keep_alive = True
        self._ends_at_close = False
        self._timeout = 0.0
        self._idle_timeout = 0.0
        self._last_activity = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._paused = False
        self._tunnel: asyncio.Future[bytes] | None = None
        self._tunnel_buffer = b""

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._last_activity = self._loop.time()
        if self._tunnel is not None:
            self._tunnel_buffer += data
            if b"\r\n\r\n" in self._tunnel_buffer and not self._tunnel.done():
                self._tunnel.set_result(self._tunnel_buffer)
            return
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionClosed(f"malformed HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_timer()
        if self._tunnel is not None and not self._tunnel.done():
            self._tunnel.set_exception(ConnectFailed("proxy closed the connection"))
        if self._ends_at_close and self._response is not None and not self._head_pending:
            # No Content-Length and not chunked (HTTP/1.0 style): the close ends the body.
            self._response._finish(None)
        self._fail(ConnectionClosed("the server closed the connection"))

    @property
    def _head_pending(self) -> bool:
        return self._head is not None and not self._head.done()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._response is not None
        self._response.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        response = self._response
        assert response is not None
        response.status = self._parser.get_status_code()
        self._keep_alive = self._parser.should_keep_alive()
        framed = any(
            name.lower() in (b"content-length", b"transfer-encoding")
            for name, _ in response.raw_headers
        )
        self._ends_at_close = not framed and response.status not in (204, 304)
        self._timeout = self._idle_timeout  # the first byte is in: now the gap between bytes
        if self._head is not None and not self._head.done():
            self._head.set_result(response)

    def on_body(self, body: bytes) -> None:
        assert self._response is not None
        self._response._feed(body)

    def on_message_complete(self) -> None:
        self._stop_timer()
        if self._response is not None:
            self._response._finish(None)

    # the client's side
    async def send(
        self, head: bytes, body: bytes, timeout: float, first_byte_timeout: float | None = None
    ) -> Response:
        assert self.transport is not None
        self._response = Response(self)
        self._head = self._loop.create_future()
        self._got_bytes = False
        self._ends_at_close = False
        self._idle_timeout = timeout
        self._arm(first_byte_timeout or timeout)
        self.transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self.transport.write(body)
        return await self._head

    @property
    def got_bytes(self) -> bool:
        return self._got_bytes

    async def open_tunnel(self, request: bytes, timeout: float) -> None:
        assert self.transport is not None
        self._tunnel = self._loop.create_future()
        self.transport.write(request)
        try:
            head = await asyncio.wait_for(self._tunnel, timeout)
        finally:
            self._tunnel = None
        first_line = head.split(b"\r\n", 1)[0]
        status_line = first_line.split()
        if len(status_line) < 2 or status_line[1] != b"200":
            raise ConnectFailed(f"proxy refused the tunnel: {first_line.decode('latin-1')}")

    def finished(self, *, reusable: bool) -> None:
        self._stop_timer()
        self._response = None
        if reusable and self._keep_alive and not self.closed:
            self.pool.give_back(self)
        else:
            self.close()

    def close(self) -> None:
        self.closed = True
        self._stop_timer()
        if self.transport is not None:
            self.transport.close()

    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def _fail(self, error: BaseException) -> None:
        self._stop_timer()
        if self._head is not None and not self._head.done():
            self._head.set_exception(error)
        if self._response is not None:
            self._response._finish(error)

    # One timer per request: it checks the last activity instead of being reset per chunk.
    def _arm(self, timeout: float) -> None:
        self._timeout = timeout
        self._last_activity = self._loop.time()
        if self._timer is None:
            self._timer = self._loop.call_at(self._last_activity + timeout, self._check_idle)

    def _check_idle(self) -> None:
        self._timer = None
        deadline = self._last_activity + self._timeout
        if self._loop.time() >= deadline:
            self._fail(ReadTimedOut(f"no data from the server for {self._timeout:g} s"))
            self.close()
        else:
            self._timer = self._loop.call_at(deadline, self._check_idle)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class Pool:
    """Idle keep-alive connections per (scheme, host, port, proxy); no cap on busy ones."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._idle: dict[tuple[str, str, int, str | None], deque[_Connection]] = {}
        self._ssl = ssl_context
        self._closed = False

    def give_back(self, connection: _Connection) -> None:
        if self._closed:
            connection.close()
            return
        idle = self._idle.setdefault(connection.key, deque())
        if len(idle) >= MAX_IDLE_PER_ORIGIN:
            connection.close()
            return
        connection.idle_since = asyncio.get_running_loop().time()
        idle.append(connection)

    def take(self, key: tuple[str, str, int, str | None]) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        now = asyncio.get_running_loop().time()
        while idle and now - idle[0].idle_since > IDLE_SECONDS:
            idle.popleft().close()
        while idle:
            connection = idle.pop()
            if (
                not connection.closed
                and connection.transport is not None
                and not connection.transport.is_closing()
            ):
                return connection
        return None

    async def open(self, target: Target, proxy: str | None, connect_timeout: float) -> _Connection:
        key = (target.scheme, target.host, target.port, proxy)
        loop = asyncio.get_running_loop()
        factory: Callable[[], _Connection] = lambda: _Connection(self, key)  # noqa: E731
        try:
            if proxy is None:
                tls = self._tls() if target.scheme == "https" else None
                _, connection = await asyncio.wait_for(
                    loop.create_connection(
                        factory,
                        target.host,
                        target.port,
                        ssl=tls,
                        server_hostname=target.host if tls else None,
                    ),
                    connect_timeout,
                )
                return connection
            via = Target.parse(proxy)
            _, connection = await asyncio.wait_for(
                loop.create_connection(factory, via.host, via.port), connect_timeout
            )
            if target.scheme == "https":
                await self._tunnel(connection, target, proxy, connect_timeout)
            return connection
        except TimeoutError as exc:
            raise ConnectFailed(f"connecting to {target.host}:{target.port} timed out") from exc
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {target.host}:{target.port}: {exc}") from exc

    async def _tunnel(
        self, connection: _Connection, target: Target, proxy: str, timeout: float
    ) -> None:
        authority = f"{target.host}:{target.port}"
        lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
        credentials = proxy_credentials(proxy)
        if credentials:
            lines.append(f"Proxy-Authorization: Basic {credentials}")
        await connection.open_tunnel(("\r\n".join(lines) + "\r\n\r\n").encode(), timeout)
        assert connection.transport is not None
        tls_transport = await asyncio.get_running_loop().start_tls(
            connection.transport, connection, self._tls(), server_hostname=target.host
        )
        assert tls_transport is not None
        connection.transport = tls_transport

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
        self._idle.clear()


def proxy_credentials(proxy: str) -> str | None:
    parts = urlsplit(proxy)
    if parts.username is None:
        return None
    userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return base64.b64encode(userinfo.encode()).decode()


class HttpClient:
    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._pool = Pool(ssl_context)

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes = b"",
        read_timeout: float,
        connect_timeout: float = 10.0,
        first_byte_timeout: float | None = None,
        proxy: str | None = None,
    ) -> Response:
        target = Target.parse(url)
        key = (target.scheme, target.host, target.port, proxy)
        request_target = url if proxy is not None and target.scheme == "http" else target.path
        lines = [f"{method} {request_target} HTTP/1.1\r\nHost: {target.host_header}\r\n"]
        lines.extend(f"{name}: {value}\r\n" for name, value in headers.items())
        if proxy is not None and target.scheme == "http" and (creds := proxy_credentials(proxy)):
            lines.append(f"Proxy-Authorization: Basic {creds}\r\n")
        lines.append(f"Content-Length: {len(body)}\r\n\r\n")
        head = "".join(lines).encode("latin-1")
        connection = self._pool.take(key)
        if connection is not None:
            try:
                return await connection.send(head, body, read_timeout, first_byte_timeout)
            except ConnectionClosed:
                # The server dropped an idle connection as we reused it: nothing was
                # processed, so one retry on a fresh connection is safe.
                if connection.got_bytes:
                    raise
        connection = await self._pool.open(target, proxy, connect_timeout)
        return await connection.send(head, body, read_timeout, first_byte_timeout)

    async def close(self) -> None:
        self._pool.close()
        await asyncio.sleep(0)
