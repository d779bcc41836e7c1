"""`/v1/responses`: OpenAI's Responses API in front of any provider.

Routes to an `openai` provider pass through untouched, so everything OpenAI offers there works.
Every other provider gets the request translated onto the pivot and the answer translated back.
"""

from __future__ import annotations

import orjson

from agentwatch.errors import InvalidRequest
from agentwatch.frontends import responses_wire
from agentwatch.frontends.responses_stream import NativeResponsesRelay, ResponsesStreamTranslator
from agentwatch.providers.base import JSONObject, Provider, speaks_responses
from agentwatch.proxy.asgi_io import Receive, Send
from agentwatch.proxy.call import Call
from agentwatch.proxy.frontend import ProxyContext


async def handle_responses(
    proxy: ProxyContext, call: Call, payload: JSONObject, receive: Receive, send: Send
) -> None:
    route, adapter = proxy.resolve(call)
    if _speaks_responses(adapter):
        assert speaks_responses(adapter)
        stream = payload.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise InvalidRequest("'stream' must be a boolean", param="stream")
        payload["model"] = route.upstream_model
        if stream:
            call.stream = True
            events = await adapter.stream_responses(payload)
            await proxy.relay(call, events, receive, send, NativeResponsesRelay())
            return
        result = await adapter.responses(payload)
        await proxy.answer(call, result.body, result.usage, send)
        return
    chat = responses_wire.chat_request(payload)
    chat["model"] = route.upstream_model
    shell = responses_wire.response_shell(payload, call.model)
    if chat.get("stream"):
        call.stream = True
        chunks = await adapter.stream_chat(chat, forward_usage=True)
        await proxy.relay(call, chunks, receive, send, ResponsesStreamTranslator(shell))
        return
    completion = await adapter.chat(chat)
    response = responses_wire.response_from_chat(completion.data, shell, completion.usage)
    await proxy.answer(call, orjson.dumps(response), completion.usage, send)


def _speaks_responses(adapter: Provider) -> bool:
    # OpenAI-compatible servers share the adapter class but often lack `/responses`.
    return adapter.config.type == "openai" and speaks_responses(adapter)
