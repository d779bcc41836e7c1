"""`/v1/messages`: Anthropic's Messages API in front of any provider (being built)."""

from __future__ import annotations

import orjson

from agentwatch.errors import GatewayError
from agentwatch.providers.base import JSONObject
from agentwatch.proxy.asgi_io import Receive, Send
from agentwatch.proxy.call import Call
from agentwatch.proxy.frontend import ProxyContext


async def handle_messages(
    proxy: ProxyContext, call: Call, payload: JSONObject, receive: Receive, send: Send
) -> None:
    raise GatewayError("/v1/messages is not available yet", status=501, type="api_error")


async def handle_count_tokens(
    proxy: ProxyContext, call: Call, payload: JSONObject, receive: Receive, send: Send
) -> None:
    raise GatewayError("/v1/messages/count_tokens is not available yet", status=501)


def anthropic_error_body(error: GatewayError) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": error.type, "message": error.message}})
