"""OpenAI and every OpenAI-compatible upstream: the pivot format, so requests pass through."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import orjson

from agentwatch.errors import UpstreamError
from agentwatch.http_client import Response
from agentwatch.providers.base import (
    ChatResult,
    JSONObject,
    ProviderConfig,
    Usage,
    reported_count,
)
from agentwatch.upstream import (
    USER_AGENT,
    UpstreamClient,
    read_all,
    upstream_error,
    upstream_failures,
)

_EVENT_END = b"\n\n"


class OpenAIProvider:
    def __init__(self, config: ProviderConfig, client: UpstreamClient) -> None:
        self.config = config
        self._client = client
        self._base = config.base_url.rstrip("/")
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **config.headers}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        self._headers = headers

    async def chat(self, payload: JSONObject) -> ChatResult:
        return await self._complete("/chat/completions", payload)

    async def embeddings(self, payload: JSONObject) -> ChatResult:
        return await self._complete("/embeddings", payload)

    async def stream_chat(self, payload: JSONObject, *, forward_usage: bool) -> OpenAIStream:
        return await self._stream_with_usage("/chat/completions", payload, forward_usage)

    async def completions(self, payload: JSONObject) -> ChatResult:
        return await self._complete("/completions", payload)

    async def stream_completions(self, payload: JSONObject, *, forward_usage: bool) -> OpenAIStream:
        return await self._stream_with_usage("/completions", payload, forward_usage)

    async def _stream_with_usage(
        self, path: str, payload: JSONObject, forward_usage: bool
    ) -> OpenAIStream:
        options = payload.get("stream_options")
        payload["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
        response = await self._post(path, payload)
        if response.status >= 400:
            body = await self._read(response)
            raise upstream_error(
                self.config.name, response.status, body, response.header("retry-after")
            )
        return OpenAIStream(response, self.config.name, forward_usage=forward_usage)

    async def responses(self, payload: JSONObject) -> ChatResult:
        return await self._complete("/responses", payload, read_usage=responses_usage)

    async def stream_responses(self, payload: JSONObject) -> OpenAIResponsesStream:
        response = await self._post("/responses", payload)
        if response.status >= 400:
            body = await self._read(response)
            raise upstream_error(
                self.config.name, response.status, body, response.header("retry-after")
            )
        return OpenAIResponsesStream(response, self.config.name, forward_usage=True)

    async def close(self) -> None:
        """The shared client is closed by the app; an adapter holds nothing of its own."""

    async def _complete(
        self,
        path: str,
        payload: JSONObject,
        read_usage: Callable[[JSONObject | None], Usage | None] = Usage.from_openai,
    ) -> ChatResult:
        response = await self._post(path, payload)
        body = await self._read(response)
        if response.status >= 400:
            raise upstream_error(
                self.config.name, response.status, body, response.header("retry-after")
            )
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(
                f"upstream provider '{self.config.name}' returned a body that is not JSON"
            ) from exc
        usage = read_usage(parsed.get("usage")) if isinstance(parsed, dict) else None
        return ChatResult(body=body, usage=usage)

    async def _post(self, path: str, payload: JSONObject) -> Response:
        url = self._base + path
        return await self._client.post(self.config, url, self._headers, orjson.dumps(payload))

    async def _read(self, response: Response) -> bytes:
        return await read_all(self.config.name, response)


class OpenAIStream:
    """Re-frames the upstream byte stream into whole SSE events and picks out the usage."""

    def __init__(self, response: Response, provider: str, *, forward_usage: bool) -> None:
        self.usage: Usage | None = None
        self._response = response
        self._provider = provider
        self._forward_usage = forward_usage
        self.content_events = 0

    @property
    def usage_final(self) -> bool:
        """OpenAI reports usage once, in the stream's last chunk."""
        return self.usage is not None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._events()

    async def _events(self) -> AsyncIterator[bytes]:
        pending = b""
        with upstream_failures(self._provider, "broke the stream"):
            async for chunk in self._response.iter_chunks():
                pending += chunk
                if b"\r" in pending:  # the buffer, not the chunk: a CRLF may span two reads
                    pending = pending.replace(b"\r\n", b"\n")
                if _EVENT_END not in pending:
                    continue
                complete, _, pending = pending.rpartition(_EVENT_END)
                out = [e for e in complete.split(_EVENT_END) if self._keep(e)]
                if out:
                    yield _EVENT_END.join(out) + _EVENT_END
        if pending.strip() and self._keep(pending.strip()):
            yield pending.strip() + _EVENT_END

    def _keep(self, event: bytes) -> bool:
        if b'"content"' in event:
            self.content_events += 1
        if not event.startswith(b"data:") or not _carries_usage(event):
            return bool(event)
        try:
            chunk = orjson.loads(event[5:])
        except orjson.JSONDecodeError:
            return True
        if not isinstance(chunk, dict):
            return True
        usage = Usage.from_openai(chunk.get("usage"))
        if usage is not None:
            self.usage = usage
            return self._forward_usage or bool(chunk.get("choices"))
        return True

    async def aclose(self) -> None:
        # A finished stream returns its connection to the pool; an abandoned one is closed.
        self._response.release()


class OpenAIResponsesStream(OpenAIStream):
    """A Responses API event stream, relayed as it is; usage comes from the final
    `response.completed` (or `response.incomplete`) event, the only events parsed."""

    def _keep(self, event: bytes) -> bool:
        if b'.delta"' in event:
            self.content_events += 1
        if b'"response.completed"' not in event and b'"response.incomplete"' not in event:
            return bool(event)
        data = event[event.find(b"data:") + 5 :] if b"data:" in event else b""
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            return True
        response = parsed.get("response") if isinstance(parsed, dict) else None
        if isinstance(response, dict):
            self.usage = responses_usage(response.get("usage")) or self.usage
        return True


def responses_usage(usage: JSONObject | None) -> Usage | None:
    """A Responses API `usage` object (`input_tokens`, `output_tokens`, cached input) as Usage."""
    if not isinstance(usage, dict):
        return None
    details = usage.get("input_tokens_details")
    details = details if isinstance(details, dict) else {}
    return Usage(
        prompt_tokens=_count(usage.get("input_tokens")),
        completion_tokens=_count(usage.get("output_tokens")),
        cached_tokens=_count(details.get("cached_tokens")),
        cache_write_tokens=_count(details.get("cache_write_tokens")),
        reasoning_tokens=reported_count(usage.get("output_tokens_details"), "reasoning_tokens"),
    )


def _count(value: object) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def _carries_usage(event: bytes) -> bool:
    """True when the event has a `usage` object; with include_usage every chunk has
    `"usage": null`, and only the last one is worth a JSON parse."""
    at = event.find(b'"usage"')
    if at < 0:
        return False
    rest = event[at + 7 : at + 40].lstrip(b" \t:")
    return rest.startswith(b"{")
