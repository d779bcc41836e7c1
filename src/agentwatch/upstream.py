"""The one pooled, keep-alive HTTP client every provider shares, and upstream error mapping."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson

from agentwatch.errors import (
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
)
from agentwatch.http_client import HttpClient, HttpClientError, ReadTimedOut, Response
from agentwatch.providers.base import ProviderConfig


@dataclass(frozen=True, slots=True)
class ProxySettings:
    https_proxy: str | None = None
    http_proxy: str | None = None
    no_proxy: str | None = None

    def proxy_for(self, url: str) -> str | None:
        parts = urlsplit(url)
        proxy = self.https_proxy if parts.scheme == "https" else self.http_proxy
        if proxy is None:
            return None
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if self.no_proxy and bypasses_proxy(parts.hostname or "", port, self.no_proxy):
            return None
        return proxy


def bypasses_proxy(host: str, port: int | None, no_proxy: str) -> bool:
    """curl's NO_PROXY rules: `*`, exact hosts, domain suffixes (with or without a leading dot),
    optional `:port`."""
    host = host.lower().rstrip(".")
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        name, _, entry_port = entry.partition(":") if entry.count(":") == 1 else (entry, "", "")
        if entry_port and port is not None and entry_port != str(port):
            continue
        name = name.lstrip(".").rstrip(".")
        if host == name or host.endswith("." + name):
            return True
    return False


USER_AGENT = "agentwatch"


class UpstreamClient:
    """The process's one upstream HTTP client and its proxy settings; closed on shutdown."""

    def __init__(self, proxies: ProxySettings) -> None:
        self.proxies = proxies
        self.http = HttpClient()

    async def post(
        self, provider: ProviderConfig, url: str, headers: Mapping[str, str], body: bytes
    ) -> Response:
        """POST to an upstream with the provider's timeout and the configured proxy."""
        with upstream_failures(provider.name, "is unreachable"):
            return await self.http.request(
                "POST",
                url,
                headers=headers,
                body=body,
                read_timeout=provider.timeout_seconds,
                connect_timeout=provider.connect_timeout_seconds,
                first_byte_timeout=provider.first_byte_timeout_seconds,
                proxy=self.proxies.proxy_for(url),
            )

    async def close(self) -> None:
        await self.http.close()


async def read_all(provider: str, response: Response) -> bytes:
    """The whole body, with its connection handed back (or closed) whatever happens."""
    try:
        with upstream_failures(provider, "broke the connection"):
            return await response.read()
    finally:
        response.release()


def upstream_error(
    provider: str, status: int, body: bytes, retry_after: str | None
) -> UpstreamError:
    """Map an upstream HTTP error to the gateway error the client and the router should see."""
    message = _error_message(body) or f"HTTP {status}"
    text = f"upstream provider '{provider}' returned {status}: {message}"
    if status == 429:
        headers = {"retry-after": retry_after} if retry_after else {}
        return UpstreamRateLimited(text, headers=headers)
    if status in (401, 403, 407):
        # The provider refused the gateway's credential: the client's key is fine.
        return UpstreamError(text, code="upstream_auth_failed")
    if 400 <= status < 500 and status not in (408, 409):
        code = "context_length_exceeded" if _CONTEXT_LENGTH in body else None
        return UpstreamRejected(text, status=404 if status == 404 else 400, code=code)
    return UpstreamError(text)


_CONTEXT_LENGTH = b"context_length_exceeded"  # OpenAI's and most compatible servers' code


def _error_message(body: bytes) -> str | None:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode(errors="replace").strip()
        return text[:500] or None
    if isinstance(payload, dict):
        error = payload.get("error", payload)
        if isinstance(error, dict):
            message = error.get("message")
            return str(message) if message is not None else None
        if isinstance(error, str):
            return error
    return None


@contextmanager
def upstream_failures(provider: str, what: str) -> Iterator[None]:
    """Turn transport failures into the gateway errors routing and clients understand."""
    try:
        yield
    except ReadTimedOut as exc:
        raise UpstreamTimeout(f"upstream provider '{provider}' timed out") from exc
    except HttpClientError as exc:
        raise UpstreamError(f"upstream provider '{provider}' {what}: {exc}") from exc
