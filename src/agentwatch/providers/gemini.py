"""Google's Gemini API (`generativelanguage.googleapis.com`): the HTTP side of the adapter.

Translation lives in `gemini_wire` (requests), `gemini_response` (answers, errors) and
`gemini_stream` (streamed chunks); this module holds the credentials, URLs and SSE framing.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Sequence
from urllib.parse import quote

import orjson

from agentwatch.errors import UpstreamError
from agentwatch.http_client import Response
from agentwatch.providers.base import ChatResult, JSONObject, ProviderConfig
from agentwatch.providers.gemini_response import chat_completion, embeddings_response, gemini_error
from agentwatch.providers.gemini_stream import GeminiStreamTranslator
from agentwatch.providers.gemini_wire import embed_request, generate_content_request
from agentwatch.upstream import (
    USER_AGENT,
    UpstreamClient,
    read_all,
    upstream_failures,
)

API_VERSION = "v1beta"
_VERSIONS = ("/v1beta", "/v1", "/v1alpha")
_EVENT_END = b"\n\n"
_DONE = b"data: [DONE]\n\n"


class GeminiProvider:
    def __init__(self, config: ProviderConfig, client: UpstreamClient) -> None:
        self.config = config
        self._client = client
        base = config.base_url.rstrip("/")
        # The documented base is the bare origin; a base that already names a version is kept.
        self._base = base if base.endswith(_VERSIONS) else f"{base}/{API_VERSION}"
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **config.headers}
        if config.api_key:
            headers["x-goog-api-key"] = config.api_key
        self._headers = headers

    async def chat(self, payload: JSONObject) -> ChatResult:
        model = payload["model"]
        request = generate_content_request(payload)
        answer = await self._complete(self._url(model, "generateContent"), request)
        data, usage = chat_completion(
            answer, model=model, completion_id=_completion_id(), created=int(time.time())
        )
        return ChatResult(data=data, usage=usage)

    async def stream_chat(self, payload: JSONObject, *, forward_usage: bool) -> GeminiStream:
        model = payload["model"]
        url = self._url(model, "streamGenerateContent") + "?alt=sse"
        response = await self._post(url, generate_content_request(payload))
        if response.status >= 400:
            body = await self._read(response)
            raise gemini_error(
                self.config.name, response.status, body, response.header("retry-after")
            )
        translator = GeminiStreamTranslator(
            model=model,
            completion_id=_completion_id(),
            created=int(time.time()),
            forward_usage=forward_usage,
        )
        return GeminiStream(response, self.config.name, translator)

    async def embeddings(self, payload: JSONObject) -> ChatResult:
        resource = _resource(payload["model"])
        request = embed_request(payload, resource)
        answer = await self._complete(self._url(payload["model"], "batchEmbedContents"), request)
        data, usage = embeddings_response(answer, payload)
        return ChatResult(data=data, usage=usage)

    async def close(self) -> None:
        """The shared client is closed by the app; an adapter holds nothing of its own."""

    def _url(self, model: str, method: str) -> str:
        return f"{self._base}/{quote(_resource(model), safe='/')}:{method}"

    async def _complete(self, url: str, request: JSONObject) -> JSONObject:
        response = await self._post(url, request)
        body = await self._read(response)
        if response.status >= 400:
            raise gemini_error(
                self.config.name, response.status, body, response.header("retry-after")
            )
        return _json_object(self.config.name, body)

    async def _post(self, url: str, request: JSONObject) -> Response:
        return await self._client.post(self.config, url, self._headers, orjson.dumps(request))

    async def _read(self, response: Response) -> bytes:
        return await read_all(self.config.name, response)


class GeminiStream:
    """Re-frames Gemini's SSE bytes into events and re-encodes each as OpenAI chunks."""

    def __init__(
        self, response: Response, provider: str, translator: GeminiStreamTranslator
    ) -> None:
        self.usage = translator.usage
        self.content_events = 0
        self._response = response
        self._provider = provider
        self._translator = translator

    @property
    def usage_final(self) -> bool:
        return self._translator.usage_final

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._events()

    async def _events(self) -> AsyncIterator[bytes]:
        # Each chunk is normalised and searched once, so a large event (an inline image)
        # arriving in many chunks costs linear time, not quadratic.
        pending = bytearray()
        held_cr = False
        with upstream_failures(self._provider, "broke the stream"):
            async for data in self._response.iter_chunks():
                chunk = b"\r" + data if held_cr else data
                # Gemini ends lines with CRLF; a CR that ends a chunk waits for its LF.
                held_cr = chunk.endswith(b"\r")
                if held_cr:
                    chunk = chunk[:-1]
                if b"\r" in chunk:
                    chunk = chunk.replace(b"\r\n", b"\n")
                searched = max(0, len(pending) - 1)
                pending += chunk
                if pending.find(_EVENT_END, searched) < 0:
                    continue
                complete, _, rest = pending.rpartition(_EVENT_END)
                pending = rest
                out = self._translate(complete.split(_EVENT_END))
                if out:
                    yield out
        tail = self._translate([bytes(pending)]) if pending.strip() else b""
        yield tail + self._encode(self._translator.finish()) + _DONE

    def _translate(self, events: Sequence[bytes | bytearray]) -> bytes:
        chunks: list[JSONObject] = []
        for event in events:
            data = _event_data(event)
            if data is None:
                continue
            parsed = _json_object(self._provider, data)
            error = parsed.get("error")
            if isinstance(error, dict):
                # An error after the 200: map it as if it had been the response.
                code = error.get("code")
                status = code if isinstance(code, int) else 502
                raise gemini_error(self._provider, status, bytes(data), None)
            chunks.extend(self._translator.feed(parsed))
        self.usage = self._translator.usage
        self.content_events = self._translator.content_events
        return self._encode(chunks)

    @staticmethod
    def _encode(chunks: list[JSONObject]) -> bytes:
        return b"".join(b"data: " + orjson.dumps(chunk) + _EVENT_END for chunk in chunks)

    async def aclose(self) -> None:
        # A finished stream returns its connection to the pool; an abandoned one is closed.
        self._response.release()


def _resource(model: str) -> str:
    """The API resource name, `models/<id>`, whether or not the configured id has the prefix."""
    return model if model.startswith("models/") else f"models/{model}"


def _completion_id() -> str:
    return f"chatcmpl-{secrets.token_hex(12)}"


def _event_data(event: bytes | bytearray) -> bytes | bytearray | None:
    """The `data:` payload of one SSE event (several data lines join with a newline)."""
    if event.startswith(b"data:") and b"\n" not in event:
        return event[5:]  # the usual one-line event: orjson skips the leading space
    lines = [line[5:] for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


def _json_object(provider: str, body: bytes | bytearray) -> JSONObject:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError(f"upstream provider '{provider}' sent a body that is not JSON") from exc
    if not isinstance(parsed, dict):
        raise UpstreamError(f"upstream provider '{provider}' sent JSON that is not an object")
    return parsed
