"""`/v1/responses`: OpenAI's Responses API in front of any provider (being built)."""

from __future__ import annotations

from agentwatch.errors import GatewayError
from agentwatch.providers.base import JSONObject
from agentwatch.proxy.asgi_io import Receive, Send
from agentwatch.proxy.call import Call
from agentwatch.proxy.frontend import ProxyContext


async def handle_responses(
    proxy: ProxyContext, call: Call, payload: JSONObject, receive: Receive, send: Send
) -> None:
    raise GatewayError("/v1/responses is not available yet", status=501)
