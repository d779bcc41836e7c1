"""The `/v1` ASGI app: authenticate, validate, route, dispatch, and meter every call."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import Callable

import orjson

from agentwatch.catalog import Alias, Route
from agentwatch.dlp.stream import StreamGuard
from agentwatch.errors import (
    AuthenticationFailed,
    DlpBlocked,
    GatewayError,
    InvalidRequest,
    ModelNotAllowed,
    NotFound,
    UnknownModel,
)
from agentwatch.frontends.anthropic_messages import (
    anthropic_error_body,
    handle_count_tokens,
    handle_messages,
)
from agentwatch.frontends.openai_responses import handle_responses
from agentwatch.observe import tracing
from agentwatch.observe.access_log import request_fields
from agentwatch.observe.bodies import answer_text
from agentwatch.providers.base import (
    ChatStream,
    JSONObject,
    Provider,
    Usage,
    speaks_legacy_completions,
)
from agentwatch.proxy import cache_stage, validation
from agentwatch.proxy.asgi_io import (
    SSE_HEADERS,
    ClientDisconnected,
    Receive,
    RequestHeaders,
    Scope,
    Send,
    base_headers,
    read_body,
    send_error,
    send_json,
    wait_for_disconnect,
)
from agentwatch.proxy.call import Call
from agentwatch.proxy.dlp_stage import inspect_request, inspect_response, response_guard
from agentwatch.proxy.frontend import Attempt, Endpoint, Reply, StreamTranslator
from agentwatch.proxy.limit_stage import admit_call, settle_call
from agentwatch.state import AppState
from agentwatch.tenant_auth import Principal

log = logging.getLogger(__name__)


class ProxyApp:
    def __init__(self, state: Callable[[], AppState]) -> None:
        self._state = state
        # A random per-process prefix and a counter: unique, and cheaper than urandom per call.
        self._id_prefix = secrets.token_hex(8)
        self._id_counter = itertools.count(1)

    def _new_request_id(self) -> str:
        return f"{self._id_prefix}{next(self._id_counter):016x}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = RequestHeaders(scope["headers"])
        call = Call(request_id=headers.request_id or self._new_request_id(), endpoint=scope["path"])
        if headers.anthropic_beta is not None:
            call.forward_headers["anthropic-beta"] = headers.anthropic_beta
        call.tags = headers.tags
        call.end_user = headers.end_user
        state = self._state()
        if state.tracing is not None:
            call.trace = state.tracing.begin(call, scope["method"])
        try:
            await self._dispatch(state, call, scope, headers, receive, send)
        except GatewayError as error:
            call.failed(error)
            await send_error(send, error, call.request_id, call.render_error(error))
        except ClientDisconnected:
            call.client_gone()
        except Exception as exc:
            # A bug must still answer in OpenAI's shape, and still be metered.
            log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            internal = GatewayError(
                f"internal error ({type(exc).__name__}); request id {call.request_id}"
            )
            call.failed(internal)
            with contextlib.suppress(Exception):
                await send_error(send, internal, call.request_id, call.render_error(internal))
        finally:
            event = call.usage_event(state.catalog)
            state.metrics.record_call(call, event)
            if event is not None:
                state.recorder.record(event)
            if state.access_log is not None:
                state.access_log.write(request_fields(call, event))
            if call.trace is not None:
                call.trace.finish(call)
            if call.spend is not None:
                await settle_call(state, call, event)
            conversation = call.conversation_event()
            if conversation is not None:
                state.recorder.record_conversation(conversation)

    async def _dispatch(
        self,
        state: AppState,
        call: Call,
        scope: Scope,
        headers: RequestHeaders,
        receive: Receive,
        send: Send,
    ) -> None:
        path, method = scope["path"].rstrip("/"), scope["method"]
        if path == "/v1/models" or path.startswith("/v1/models/"):
            if method != "GET":
                raise InvalidRequest(f"{method} is not allowed on {path}", status=405)
            principal = await self._authenticate(state, headers)
            await self._models(state, principal, path, call, send)
            return
        endpoint = POST_ENDPOINTS.get(path)
        if endpoint is None:
            raise NotFound(f"unknown endpoint {method} {scope['path']}")
        call.render_error = endpoint.render_error
        if method != "POST":
            raise InvalidRequest(f"{method} is not allowed on {path}; use POST", status=405)
        call.endpoint = path
        principal = await self._authenticate(state, headers)
        call.principal = principal
        body = await read_body(receive, state.settings.max_body_bytes, headers.content_length)
        payload = validation.parse_json_object(body)
        call.payload = payload
        call.model = validation.model_name(payload)
        with tracing.stage(call, "agentwatch.limits"):
            call.log_bodies = principal.org_id in state.body_logging
        call.spend = await admit_call(state, call, path, payload)
        with tracing.stage(call, "agentwatch.dlp"):
            inspect_request(state, call, path, payload)
        if call.trace is not None:
            call.trace.request_content(payload)
        if await cache_stage.answer_from_cache(state, call, path, payload, headers.cache, send):
            return
        await endpoint.handler(self, call, payload, receive, send)

    async def _authenticate(self, state: AppState, headers: RequestHeaders) -> Principal:
        if headers.api_key is None:
            raise AuthenticationFailed(
                "missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'"
            )
        principal = await state.authenticator.authenticate(headers.api_key)
        if principal is None:
            raise AuthenticationFailed("invalid API key")
        return principal

    async def serve(self, call: Call, attempt: Attempt, receive: Receive, send: Send) -> None:
        state = self._state()
        principal = call.principal
        assert principal is not None
        alias: Alias | None = state.catalog.alias(principal.org_id, call.model)
        if alias is None:
            raise UnknownModel(f"the model '{call.model}' does not exist", param="model")
        if not principal.may_use(call.model):
            raise ModelNotAllowed(f"this API key may not use the model '{call.model}'")
        upstream_started = time.perf_counter()
        try:
            with tracing.upstream(call):
                reply = await state.router.run(call, alias, state.catalog, attempt)
                if reply.stream is not None:
                    await self.relay(call, reply.stream, receive, send, reply.translator)
        finally:
            call.upstream_seconds = time.perf_counter() - upstream_started
        if reply.stream is None:
            assert reply.body is not None
            await self.answer(call, reply.body, reply.usage, send)
        if call.usage is not None:
            tokens = call.usage.prompt_tokens + call.usage.completion_tokens
            state.router.record_tokens(call, alias.name, tokens)

    async def chat_completions(
        self, call: Call, payload: JSONObject, receive: Receive, send: Send
    ) -> None:
        validation.check_chat(payload)
        call.stream = validation.wants_stream(payload)
        forward_usage = validation.wants_stream_usage(payload)

        async def attempt(route: Route, adapter: Provider) -> Reply:
            body = {**payload, "model": route.upstream_model}
            if call.stream:
                return Reply(stream=await adapter.stream_chat(body, forward_usage=forward_usage))
            result = await adapter.chat(body)
            return Reply(body=result.body, usage=result.usage)

        await self.serve(call, attempt, receive, send)

    async def embeddings(
        self, call: Call, payload: JSONObject, receive: Receive, send: Send
    ) -> None:
        validation.check_embeddings(payload)

        async def attempt(route: Route, adapter: Provider) -> Reply:
            result = await adapter.embeddings({**payload, "model": route.upstream_model})
            return Reply(body=result.body, usage=result.usage)

        await self.serve(call, attempt, receive, send)

    async def completions(
        self, call: Call, payload: JSONObject, receive: Receive, send: Send
    ) -> None:
        """OpenAI's legacy text completions, for upstreams that still serve them."""
        validation.check_completions(payload)
        call.stream = validation.wants_stream(payload)
        forward_usage = validation.wants_stream_usage(payload)

        async def attempt(route: Route, adapter: Provider) -> Reply:
            if not speaks_legacy_completions(adapter):
                raise InvalidRequest(
                    f"the provider of model '{call.model}' ({adapter.config.type}) has no "
                    "legacy completions API; use /v1/chat/completions",
                    param="model",
                )
            body = {**payload, "model": route.upstream_model}
            if call.stream:
                stream = await adapter.stream_completions(body, forward_usage=forward_usage)
                return Reply(stream=stream)
            result = await adapter.completions(body)
            return Reply(body=result.body, usage=result.usage)

        await self.serve(call, attempt, receive, send)

    async def answer(self, call: Call, body: bytes, usage: Usage | None, send: Send) -> None:
        call.usage = usage
        body = inspect_response(call, body)
        if call.log_bodies:
            call.answer_text = answer_text(body)
        call.mark_first_byte()
        await cache_stage.remember_answer(self._state(), call, body)  # before the client sees it
        await send_json(send, 200, body, call.request_id, call.response_headers())

    async def relay(
        self,
        call: Call,
        stream: ChatStream,
        receive: Receive,
        send: Send,
        translator: StreamTranslator | None = None,
    ) -> None:
        """Pass events through as they arrive; a client hang-up stops the upstream read at once."""
        stream = cache_stage.recording(self._state(), call, stream)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    *SSE_HEADERS,
                    *base_headers(call.request_id),
                    *call.response_headers(),
                ],
            }
        )
        guard = response_guard(call)
        pump = asyncio.ensure_future(self._pump(call, stream, send, translator, guard))
        watcher = asyncio.ensure_future(wait_for_disconnect(receive))
        try:
            await asyncio.wait((pump, watcher), return_when=asyncio.FIRST_COMPLETED)
        finally:
            hung_up = not pump.done()
            pump.cancel()
            watcher.cancel()
            await asyncio.gather(pump, watcher, return_exceptions=True)
            call.usage = stream.usage
            await stream.aclose()
        # A client may close as soon as it has the last event, while the relay still waits for
        # the upstream's end of stream: with the final usage in hand the answer was complete.
        if hung_up and not stream.usage_final:
            call.hung_up_mid_stream(stream.usage, self._state().tokens)
            return
        if not hung_up:
            pump.result()

    async def _pump(
        self,
        call: Call,
        stream: ChatStream,
        send: Send,
        translator: StreamTranslator | None,
        guard: StreamGuard | None,
    ) -> None:
        try:
            async for event in stream:
                call.streamed.add(event)  # metered from these if the client leaves early
                out = event if translator is None else translator.translate(event)
                if guard is not None:
                    out = guard.feed(out)
                if out:
                    call.mark_first_byte()
                    await send({"type": "http.response.body", "body": out, "more_body": True})
            tail = b"" if translator is None else translator.finish(stream.usage)
            if guard is not None:
                tail = guard.feed(tail) + guard.finish()
            if tail:
                await send({"type": "http.response.body", "body": tail, "more_body": True})
        except GatewayError as error:
            # Headers are gone already: tell the client in-band, in its own API's shape.
            call.failed(error)
            log.warning("stream %s failed: %s", call.request_id, error.message)
            if guard is not None:
                held = _scanned_remainder(guard, error)
                if held:
                    await send({"type": "http.response.body", "body": held, "more_body": True})
            body = (
                b"data: " + error.to_json() + b"\n\n"
                if translator is None
                else translator.error(error)
            )
            await send({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _models(
        self, state: AppState, principal: Principal, path: str, call: Call, send: Send
    ) -> None:
        names = [n for n in state.catalog.alias_names(principal.org_id) if principal.may_use(n)]
        if path == "/v1/models":
            body = orjson.dumps({"object": "list", "data": [_model_card(n) for n in names]})
            await send_json(send, 200, body, call.request_id)
            return
        wanted = path.removeprefix("/v1/models/")
        if wanted not in names:
            raise NotFound(f"the model '{wanted}' does not exist", code="model_not_found")
        await send_json(send, 200, orjson.dumps(_model_card(wanted)), call.request_id)


def _scanned_remainder(guard: StreamGuard, error: GatewayError) -> bytes:
    """What a stream that failed may still show: held events from before the failure."""
    if isinstance(error, DlpBlocked):
        return error.partial
    try:
        return guard.finish()
    except DlpBlocked as blocked:
        return blocked.partial


def _model_card(name: str) -> JSONObject:
    return {"id": name, "object": "model", "created": 0, "owned_by": "agentwatch"}


POST_ENDPOINTS: dict[str, Endpoint] = {
    "/v1/chat/completions": Endpoint(ProxyApp.chat_completions),  # type: ignore[arg-type]
    "/v1/embeddings": Endpoint(ProxyApp.embeddings),  # type: ignore[arg-type]
    "/v1/completions": Endpoint(ProxyApp.completions),  # type: ignore[arg-type]
    "/v1/messages": Endpoint(handle_messages, render_error=anthropic_error_body),
    "/v1/messages/count_tokens": Endpoint(handle_count_tokens, render_error=anthropic_error_body),
    "/v1/responses": Endpoint(handle_responses),
}
