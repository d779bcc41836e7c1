"""The vocabulary every provider adapter speaks: usage, results, streams and the protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeGuard, runtime_checkable

import orjson

JSONObject = dict[str, Any]


@dataclass(slots=True)
class Usage:
    """Token counts in OpenAI's sense: `prompt_tokens` includes cached and cache-write tokens."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens read from the provider's prompt cache
    cache_write_tokens: int = 0  # prompt tokens written to it (Anthropic's cache creation)
    # Completion tokens spent reasoning, already inside `completion_tokens` (as OpenAI counts
    # them); None when the upstream does not report them apart (Anthropic).
    reasoning_tokens: int | None = None

    @classmethod
    def from_openai(cls, usage: JSONObject | None) -> Usage | None:
        if not isinstance(usage, dict):
            return None
        details = usage.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        return cls(
            prompt_tokens=_count(usage.get("prompt_tokens")),
            completion_tokens=_count(usage.get("completion_tokens")),
            cached_tokens=_count(cached),
            reasoning_tokens=reported_count(
                usage.get("completion_tokens_details"), "reasoning_tokens"
            ),
        )


def _count(value: object) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def reported_count(details: object, key: str) -> int | None:
    """`details[key]` when the upstream reported it (0 included), else None."""
    value = details.get(key) if isinstance(details, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """What an adapter needs to reach one upstream, secrets already decrypted."""

    name: str
    type: str
    base_url: str
    api_key: str | None
    timeout_seconds: float = 600.0
    headers: dict[str, str] = field(default_factory=dict)
    connect_timeout_seconds: float = 10.0
    first_byte_timeout_seconds: float | None = None  # until the response starts (default: timeout)
    max_concurrency: int | None = None  # the gateway's own limit on calls in flight
    max_queue: int = 0  # calls allowed to wait for a slot beyond that


class ChatResult:
    """A complete response, held as bytes, as a parsed object, or both: each side is made
    from the other only when asked for, so pass-through never parses and translation never
    serialises twice."""

    __slots__ = ("_body", "_data", "usage")

    def __init__(
        self,
        *,
        usage: Usage | None,
        body: bytes | None = None,
        data: JSONObject | None = None,
    ) -> None:
        if body is None and data is None:
            raise ValueError("a ChatResult needs a body or data")
        self._body = body
        self._data = data
        self.usage = usage

    @property
    def body(self) -> bytes:
        if self._body is None:
            self._body = orjson.dumps(self._data)
        return self._body

    @property
    def data(self) -> JSONObject:
        if self._data is None:
            parsed = orjson.loads(self.body)
            self._data = parsed if isinstance(parsed, dict) else {"value": parsed}
        return self._data


class ChatStream(Protocol):
    """An open upstream stream, yielding complete OpenAI SSE events (`data: ...\\n\\n`)."""

    @property
    def usage(self) -> Usage | None: ...

    @property
    def content_events(self) -> int:
        """Events forwarded so far: a token estimate if the client hangs up."""
        ...

    @property
    def usage_final(self) -> bool:
        """True once `usage` holds the upstream's final count (not a running or partial one)."""
        ...

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Provider(Protocol):
    """Every adapter speaks the pivot: OpenAI chat completions, in and out.

    `chat` and `embeddings` take an OpenAI request body whose `model` is already the upstream
    model id and return an OpenAI response. `stream_chat` returns a stream of OpenAI
    `chat.completion.chunk` SSE events ending with `data: [DONE]`; its `usage` is set once the
    upstream reports it (the final usage-only chunk is forwarded only if `forward_usage`).
    Upstream failures raise `agentwatch.errors.UpstreamError` subclasses.
    """

    config: ProviderConfig

    async def chat(self, payload: JSONObject) -> ChatResult: ...

    async def stream_chat(self, payload: JSONObject, *, forward_usage: bool) -> ChatStream: ...

    async def embeddings(self, payload: JSONObject) -> ChatResult: ...

    async def close(self) -> None: ...


@runtime_checkable
class NativeMessages(Protocol):
    """An adapter that can take Anthropic Messages requests as they are (no translation)."""

    async def messages(
        self, payload: JSONObject, headers: Mapping[str, str] | None = None
    ) -> ChatResult:
        """`headers`: client headers to forward, such as `anthropic-beta`."""
        ...

    async def stream_messages(
        self, payload: JSONObject, headers: Mapping[str, str] | None = None
    ) -> ChatStream:
        """Anthropic SSE events as the upstream sent them; `usage` set from them."""
        ...

    async def count_tokens(
        self, payload: JSONObject, headers: Mapping[str, str] | None = None
    ) -> int:
        """The upstream's own `/v1/messages/count_tokens` answer (`input_tokens`)."""
        ...


@runtime_checkable
class NativeResponses(Protocol):
    """An adapter that can take OpenAI Responses API requests as they are."""

    async def responses(self, payload: JSONObject) -> ChatResult: ...

    async def stream_responses(self, payload: JSONObject) -> ChatStream: ...


@runtime_checkable
class LegacyCompletions(Protocol):
    """An adapter whose upstream still serves OpenAI's legacy `/completions`."""

    async def completions(self, payload: JSONObject) -> ChatResult: ...

    async def stream_completions(
        self, payload: JSONObject, *, forward_usage: bool
    ) -> ChatStream: ...


_IMPLEMENTS: dict[tuple[type, type], bool] = {}  # a memo: the answer never changes


def _implements(cls: type, protocol: type) -> bool:
    # A runtime-checkable isinstance() walks every member on each call; the answer only
    # depends on the class, and the hot path asks once per request.
    known = _IMPLEMENTS.get((cls, protocol))
    if known is None:
        known = _IMPLEMENTS[(cls, protocol)] = issubclass(cls, protocol)
    return known


def speaks_messages(adapter: object) -> TypeGuard[NativeMessages]:
    return _implements(type(adapter), NativeMessages)


def speaks_responses(adapter: object) -> TypeGuard[NativeResponses]:
    return _implements(type(adapter), NativeResponses)


def speaks_legacy_completions(adapter: object) -> TypeGuard[LegacyCompletions]:
    return _implements(type(adapter), LegacyCompletions)
