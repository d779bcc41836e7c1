"""`/v1/responses`: OpenAI's Responses API in front of any provider.

Routes to an `openai` provider pass through untouched, so everything OpenAI offers there works.
Every other provider gets the request translated onto the pivot and the answer translated back.
"""

from __future__ import annotations

import orjson

from agentwatch.catalog import Route
from agentwatch.errors import InvalidRequest
from agentwatch.frontends import responses_wire
from agentwatch.frontends.responses_stream import NativeResponsesRelay, ResponsesStreamTranslator
from agentwatch.providers.base import JSONObject, Provider, speaks_responses
from agentwatch.proxy.asgi_io import Receive, Send
from agentwatch.proxy.call import Call
from agentwatch.proxy.frontend import ProxyContext, Reply


async def handle_responses(
    proxy: ProxyContext, call: Call, payload: JSONObject, receive: Receive, send: Send
) -> None:
    stream = payload.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean", param="stream")
    call.stream = stream is True

    async def attempt(route: Route, adapter: Provider) -> Reply:
        if _speaks_responses(adapter):
            assert speaks_responses(adapter)
            native = {**payload, "model": route.upstream_model}
            if call.stream:
                events = await adapter.stream_responses(native)
                return Reply(stream=events, translator=NativeResponsesRelay())
            result = await adapter.responses(native)
            return Reply(body=result.body, usage=result.usage)
        chat = responses_wire.chat_request(payload)
        chat["model"] = route.upstream_model
        shell = responses_wire.response_shell(payload, call.model)
        if call.stream:
            chunks = await adapter.stream_chat(chat, forward_usage=True)
            return Reply(stream=chunks, translator=ResponsesStreamTranslator(shell))
        completion = await adapter.chat(chat)
        response = responses_wire.response_from_chat(completion.data, shell, completion.usage)
        return Reply(body=orjson.dumps(response), usage=completion.usage)

    await proxy.serve(call, attempt, receive, send)


def _speaks_responses(adapter: Provider) -> bool:
    # OpenAI-compatible servers share the adapter class but often lack `/responses`.
    return adapter.config.type == "openai" and speaks_responses(adapter)
