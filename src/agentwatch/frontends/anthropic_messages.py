"""`/v1/messages` and `/v1/messages/count_tokens`: Anthropic's Messages API before any provider.

An adapter that speaks Messages natively gets the request as it came (only `model` changed);
any other gets it translated onto the pivot, and its answer translated back.
"""

from __future__ import annotations

import orjson

from agentwatch.errors import GatewayError
from agentwatch.frontends import messages_wire
from agentwatch.frontends.messages_stream import MessagesStreamTranslator, NativeStreamRelay
from agentwatch.providers.base import JSONObject, speaks_messages
from agentwatch.proxy.asgi_io import Receive, Send
from agentwatch.proxy.call import Call
from agentwatch.proxy.frontend import ProxyContext


async def handle_messages(
    proxy: ProxyContext, call: Call, payload: JSONObject, receive: Receive, send: Send
) -> None:
    messages_wire.check_request(payload)
    call.stream = payload.get("stream") is True
    route, adapter = proxy.resolve(call)
    if speaks_messages(adapter):
        payload["model"] = route.upstream_model
        if call.stream:
            stream = await adapter.stream_messages(payload, call.forward_headers)
            await proxy.relay(call, stream, receive, send, NativeStreamRelay())
        else:
            result = await adapter.messages(payload, call.forward_headers)
            await proxy.answer(call, result.body, result.usage, send)
        return
    chat = messages_wire.to_chat_request(payload, route.upstream_model)
    if call.stream:
        # The pivot's usage chunk is what fills the final message_delta's exact counts.
        stream = await adapter.stream_chat(chat, forward_usage=True)
        translator = MessagesStreamTranslator(call.model)
        await proxy.relay(call, stream, receive, send, translator)
        return
    result = await adapter.chat(chat)
    message = messages_wire.to_anthropic_message(result.data, call.model, result.usage)
    await proxy.answer(call, orjson.dumps(message), result.usage, send)


async def handle_count_tokens(
    proxy: ProxyContext, call: Call, payload: JSONObject, receive: Receive, send: Send
) -> None:
    """The provider's own count when it has one, else `messages_wire.estimate_input_tokens`.
    Counting generates nothing, so the call is metered at zero tokens."""
    messages_wire.check_request(payload, counting=True)
    route, adapter = proxy.resolve(call)
    if speaks_messages(adapter):
        payload["model"] = route.upstream_model
        tokens = await adapter.count_tokens(payload, call.forward_headers)
    else:
        tokens = messages_wire.estimate_input_tokens(payload)
    await proxy.answer(call, orjson.dumps({"input_tokens": tokens}), None, send)


def anthropic_error_body(error: GatewayError) -> bytes:
    """Anthropic's error shape; its `type` follows the HTTP status, as Anthropic's does."""
    return orjson.dumps(messages_wire.error_object(error))
