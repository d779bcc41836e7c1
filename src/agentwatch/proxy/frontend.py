"""What a `/v1` endpoint is made of, and the proxy services its handler may use.

An endpoint is a handler plus the error shape its clients expect. Handlers for other API
shapes (Anthropic Messages, OpenAI Responses) translate onto the pivot and back through the
same `ProxyContext` the OpenAI endpoints use, so authentication, routing, metering and
disconnect handling are never written twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from agentwatch.catalog import Route
from agentwatch.errors import GatewayError
from agentwatch.providers.base import ChatStream, JSONObject, Provider, Usage
from agentwatch.proxy.asgi_io import Receive, Send
from agentwatch.proxy.call import Call


class StreamTranslator(Protocol):
    """Turns the pivot's SSE events (OpenAI chunks) into another API's stream."""

    def translate(self, events: bytes) -> bytes:
        """One or more complete pivot events in; zero or more complete output events out.
        May raise `GatewayError` (an error chunk from upstream): the call is then metered as
        failed and `error()` renders the in-band event that ends the stream."""
        ...

    def finish(self, usage: Usage | None) -> bytes:
        """The closing events, once the upstream stream has ended."""
        ...

    def error(self, error: GatewayError) -> bytes:
        """An in-band error event, for a failure after the response has started."""
        ...


@dataclass(slots=True)
class Reply:
    """What one successful upstream attempt produced: a whole body, or an open stream (and
    the translator its events go through, if the client speaks another API)."""

    body: bytes | None = None
    usage: Usage | None = None
    stream: ChatStream | None = None
    translator: StreamTranslator | None = None


Attempt = Callable[[Route, Provider], Awaitable[Reply]]


class ProxyContext(Protocol):
    async def serve(self, call: Call, attempt: Attempt, receive: Receive, send: Send) -> None:
        """Run `attempt` on the routes of `call.model` (strategy, retries, failover, circuit
        breakers; the caller's rights checked first), then send the reply and meter it.
        `attempt` builds its own request per route and must not change shared state."""
        ...

    async def answer(self, call: Call, body: bytes, usage: Usage | None, send: Send) -> None:
        """Send a complete 200 JSON response and meter `usage`."""
        ...

    async def relay(
        self,
        call: Call,
        stream: ChatStream,
        receive: Receive,
        send: Send,
        translator: StreamTranslator | None = None,
    ) -> None:
        """Stream `stream` to the client as SSE (through `translator` if given) and meter it."""
        ...


Handler = Callable[[ProxyContext, Call, JSONObject, Receive, Send], Awaitable[None]]


def openai_error_body(error: GatewayError) -> bytes:
    return error.to_json()


@dataclass(frozen=True, slots=True)
class Endpoint:
    handler: Handler
    render_error: Callable[[GatewayError], bytes] = openai_error_body
