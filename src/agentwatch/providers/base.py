"""The vocabulary every provider adapter speaks: usage, results, streams and the protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

JSONObject = dict[str, Any]


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

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
        )


def _count(value: object) -> int:
    return value if isinstance(value, int) and value > 0 else 0


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """What an adapter needs to reach one upstream, secrets already decrypted."""

    name: str
    type: str
    base_url: str
    api_key: str | None
    timeout_seconds: float = 600.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class ChatResult:
    """A complete response in the pivot (OpenAI) format, as bytes ready for the client."""

    body: bytes
    usage: Usage | None


class ChatStream(Protocol):
    """An open upstream stream, yielding complete OpenAI SSE events (`data: ...\\n\\n`)."""

    usage: Usage | None
    content_events: int  # events forwarded so far: a token estimate if the client hangs up

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Provider(Protocol):
    config: ProviderConfig

    async def chat(self, payload: JSONObject) -> ChatResult: ...

    async def stream_chat(self, payload: JSONObject, *, forward_usage: bool) -> ChatStream: ...

    async def embeddings(self, payload: JSONObject) -> ChatResult: ...

    async def close(self) -> None: ...
