"""`/v1/messages` and `/v1/messages/count_tokens`: Anthropic's Messages API before any provider.

An adapter that speaks Messages natively gets the request as it came (only `model` changed);
any other gets it translated onto the pivot, and its answer translated back.
"""

from __future__ import annotations

import orjson

from agentwatch.catalog import Route
from agentwatch.errors import GatewayError
from agentwatch.frontends import messages_wire
from agentwatch.frontends.messages_stream import MessagesStreamTranslator, NativeStreamRelay
from agentwatch.providers.base import JSONObject, Provider, Usage, speaks_messages
from agentwatch.proxy.asgi_io import Receive, Send
from agentwatch.proxy.call import Call
from agentwatch.proxy.frontend import ProxyContext, Reply


async def handle_messages(
    proxy: ProxyContext, call: Call, payload: JSONObject, receive: Receive, send: Send
) -> None:
    messages_wire.check_request(payload)
    call.stream = payload.get("stream") is True

    async def attempt(route: Route, adapter: Provider) -> Reply:
        if speaks_messages(adapter):
            native = {**payload, "model": route.upstream_model}
            if call.stream:
                stream = await adapter.stream_messages(native, call.forward_headers)
                return Reply(stream=stream, translator=NativeStreamRelay())
            result = await adapter.messages(native, call.forward_headers)
            return Reply(body=result.body, usage=result.usage)
        chat = messages_wire.to_chat_request(payload, route.upstream_model)
        if call.stream:
            # The pivot's usage chunk is what fills the final message_delta's exact counts.
            stream = await adapter.stream_chat(chat, forward_usage=True)
            return Reply(stream=stream, translator=MessagesStreamTranslator(call.model))
        result = await adapter.chat(chat)
        message = messages_wire.to_anthropic_message(result.data, call.model, result.usage)
        return Reply(body=orjson.dumps(message), usage=result.usage)

    await proxy.serve(call, attempt, receive, send)


async def handle_count_tokens(
    proxy: ProxyContext, call: Call, payload: JSONObject, receive: Receive, send: Send
) -> None:
    """The provider's own count when it has one, else `messages_wire.estimate_input_tokens`.
    Counting generates nothing, so the call is metered at zero tokens."""
    messages_wire.check_request(payload, counting=True)

    async def attempt(route: Route, adapter: Provider) -> Reply:
        if speaks_messages(adapter):
            native = {**payload, "model": route.upstream_model}
            tokens = await adapter.count_tokens(native, call.forward_headers)
        else:
            tokens = messages_wire.estimate_input_tokens(payload)
        return Reply(body=orjson.dumps({"input_tokens": tokens}), usage=Usage())

    await proxy.serve(call, attempt, receive, send)


def anthropic_error_body(error: GatewayError) -> bytes:
    """Anthropic's error shape; its `type` follows the HTTP status, as Anthropic's does."""
    return orjson.dumps(messages_wire.error_object(error))
