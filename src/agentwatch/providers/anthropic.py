"""Anthropic's Messages API: the pivot translated both ways, and Anthropic requests passed through
untouched for the `/v1/messages` front end."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping

import orjson

from agentwatch.errors import UpstreamError, UpstreamRejected
from agentwatch.http_client import Response
from agentwatch.providers.anthropic_errors import error_from_event, error_from_response
from agentwatch.providers.anthropic_stream import ChunkTranslator, StreamUsage, event_data
from agentwatch.providers.anthropic_wire import (
    to_anthropic_request,
    to_chat_completion,
    usage_from_anthropic,
)
from agentwatch.providers.base import ChatResult, JSONObject, ProviderConfig, Usage
from agentwatch.upstream import (
    USER_AGENT,
    UpstreamClient,
    read_all,
    upstream_failures,
)

API_VERSION = "2023-06-01"
MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
_EVENT_END = b"\n\n"
_DONE = b"data: [DONE]\n\n"


class AnthropicProvider:
    def __init__(self, config: ProviderConfig, client: UpstreamClient) -> None:
        self.config = config
        self._client = client
        base = config.base_url.rstrip("/")
        # The paths carry the `/v1`; a base URL copied with it would otherwise say it twice.
        self._base = base.removesuffix("/v1")
        headers = {
            "content-type": "application/json",
            "anthropic-version": API_VERSION,
            "user-agent": USER_AGENT,
            # Lower-cased so a configured `Anthropic-Version` or `anthropic-beta` replaces ours.
            **{name.lower(): value for name, value in config.headers.items()},
        }
        if config.api_key:
            headers["x-api-key"] = config.api_key
        self._headers = headers

    async def chat(self, payload: JSONObject) -> ChatResult:
        request = to_anthropic_request(payload)
        request.pop("stream", None)
        message = _json_object(await self._call(MESSAGES_PATH, request), self.config.name)
        return ChatResult(
            data=to_chat_completion(message, int(time.time())),
            usage=usage_from_anthropic(message.get("usage")),
        )

    async def stream_chat(self, payload: JSONObject, *, forward_usage: bool) -> TranslatedStream:
        request = to_anthropic_request(payload) | {"stream": True}
        response = await self._open_stream(MESSAGES_PATH, request)
        translator = ChunkTranslator(
            self.config.name, forward_usage=forward_usage, created=int(time.time())
        )
        return TranslatedStream(response, self.config.name, translator)

    async def embeddings(self, payload: JSONObject) -> ChatResult:
        raise UpstreamRejected(
            f"provider '{self.config.name}': provider type anthropic has no embeddings API",
            code="unsupported_endpoint",
        )

    async def messages(
        self, payload: JSONObject, headers: Mapping[str, str] | None = None
    ) -> ChatResult:
        body = await self._call(MESSAGES_PATH, payload, headers)
        message = _json_object(body, self.config.name)
        return ChatResult(body=body, data=message, usage=usage_from_anthropic(message.get("usage")))

    async def stream_messages(
        self, payload: JSONObject, headers: Mapping[str, str] | None = None
    ) -> NativeStream:
        response = await self._open_stream(MESSAGES_PATH, payload, headers)
        return NativeStream(response, self.config.name)

    async def count_tokens(
        self, payload: JSONObject, headers: Mapping[str, str] | None = None
    ) -> int:
        body = await self._call(COUNT_TOKENS_PATH, payload, headers)
        answer = _json_object(body, self.config.name)
        tokens = answer.get("input_tokens")
        if not isinstance(tokens, int) or isinstance(tokens, bool):
            raise UpstreamError(f"upstream provider '{self.config.name}' sent no input_tokens")
        return tokens

    async def close(self) -> None:
        """The shared client is closed by the app; an adapter holds nothing of its own."""

    async def _call(
        self, path: str, payload: JSONObject, headers: Mapping[str, str] | None = None
    ) -> bytes:
        response = await self._post(path, payload, headers)
        body = await self._read(response)
        if response.status >= 400:
            raise self._error(response, body)
        return body

    async def _open_stream(
        self, path: str, payload: JSONObject, headers: Mapping[str, str] | None = None
    ) -> Response:
        response = await self._post(path, payload, headers)
        if response.status >= 400:
            raise self._error(response, await self._read(response))
        return response

    async def _read(self, response: Response) -> bytes:
        return await read_all(self.config.name, response)

    def _error(self, response: Response, body: bytes) -> UpstreamError:
        retry_after = response.header("retry-after")
        return error_from_response(self.config.name, response.status, body, retry_after)

    async def _post(
        self, path: str, payload: JSONObject, extra: Mapping[str, str] | None = None
    ) -> Response:
        headers = {**self._headers, **extra} if extra else self._headers
        body = orjson.dumps(payload)
        return await self._client.post(self.config, self._base + path, headers, body)


def _json_object(body: bytes, provider: str) -> JSONObject:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError(
            f"upstream provider '{provider}' returned a body that is not JSON"
        ) from exc
    if not isinstance(parsed, dict):
        raise UpstreamError(f"upstream provider '{provider}' returned JSON that is not an object")
    return parsed


class _AnthropicEvents:
    """An open Anthropic stream, re-framed into whole SSE events as bytes arrive."""

    def __init__(self, response: Response, provider: str) -> None:
        self.usage: Usage | None = None
        self.content_events = 0
        self._response = response
        self._provider = provider

    async def _batches(self) -> AsyncIterator[list[bytes]]:
        """The complete events of each arrival; a partial event waits for the rest."""
        pending = b""
        with upstream_failures(self._provider, "broke the stream"):
            async for chunk in self._response.iter_chunks():
                pending += chunk
                if b"\r" in pending:
                    # Normalised on the buffer, not the chunk: a CRLF may straddle two chunks.
                    pending = pending.replace(b"\r\n", b"\n")
                if _EVENT_END not in pending:
                    continue
                complete, _, pending = pending.rpartition(_EVENT_END)
                yield [event for event in complete.split(_EVENT_END) if event.strip()]
        if pending.strip():
            yield [pending.strip()]

    async def aclose(self) -> None:
        # A finished stream returns its connection to the pool; an abandoned one is closed.
        self._response.release()


class TranslatedStream(_AnthropicEvents):
    """Anthropic events in, OpenAI chunk events out, ending with `data: [DONE]`."""

    def __init__(self, response: Response, provider: str, translator: ChunkTranslator) -> None:
        super().__init__(response, provider)
        self._translator = translator

    @property
    def usage_final(self) -> bool:
        return self._translator.usage_final

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._events()

    async def _events(self) -> AsyncIterator[bytes]:
        translator = self._translator
        async for batch in self._batches():
            out: list[bytes] = []
            failure: UpstreamError | None = None
            try:
                for event in batch:
                    data = event_data(event, self._provider)
                    if data is None or translator.finished:
                        continue
                    for chunk in translator.feed(data):
                        out.append(b"data: " + orjson.dumps(chunk) + _EVENT_END)
                    if translator.finished:
                        out.append(_DONE)
            except UpstreamError as error:
                # What arrived before the error event is still the client's; send it first.
                failure = error
            self.usage, self.content_events = translator.usage, translator.content_events
            if out:
                yield b"".join(out)
            if failure is not None:
                raise failure
        if not translator.finished:
            raise UpstreamError(f"upstream provider '{self._provider}' ended the stream early")


class NativeStream(_AnthropicEvents):
    """Anthropic events passed on as sent; only the events that carry usage are parsed, and an
    `error` event raises the matching gateway error after the events before it."""

    def __init__(self, response: Response, provider: str) -> None:
        super().__init__(response, provider)
        self._counts = StreamUsage()

    @property
    def usage_final(self) -> bool:
        return self._counts.final

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._events()

    async def _events(self) -> AsyncIterator[bytes]:
        async for batch in self._batches():
            failure: UpstreamError | None = None
            for at, event in enumerate(batch):
                head = event[:48]  # `event: NAME` comes first; the data repeats it as `type`
                if b"content_block_delta" in head:
                    self.content_events += 1
                elif b"message_start" in head or b"message_delta" in head:
                    data = event_data(event, self._provider) or {}
                    message = data.get("message")
                    usage = message.get("usage") if isinstance(message, dict) else data.get("usage")
                    self._counts.update(usage, final=b"message_delta" in head)
                elif head.startswith((b"event: error", b'data: {"type":"error"')):
                    # Raised, not relayed, so the call is metered as failed; the front end
                    # renders it as an Anthropic error event again.
                    data = event_data(event, self._provider) or {}
                    failure, batch = error_from_event(self._provider, data), batch[:at]
                    break
            self.usage = self._counts.current(self.content_events)
            if batch:
                yield _EVENT_END.join(batch) + _EVENT_END
            if failure is not None:
                raise failure
