"""The cache stage of the `/v1` pipeline (after DLP, before routing): answer a call from the
exact response cache when its organisation, alias or headers turn the cache on, and store
the complete answer of a call that went upstream.

Chat and legacy completions are cached whether streamed or not (a streamed answer is stored
whole and a hit is replayed as a stream); embeddings are cached too. Anthropic Messages and
Responses calls are not cached.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from agentwatch.cache.entry import CachedAnswer
from agentwatch.cache.key import cache_key
from agentwatch.cache.policy import CacheRequest
from agentwatch.cache.replay import DONE, STREAMABLE, assemble_answer, replay_stream
from agentwatch.cache.response_cache import CacheTicket
from agentwatch.providers.base import ChatStream, Usage
from agentwatch.proxy import validation
from agentwatch.proxy.asgi_io import SSE_HEADERS, Send, base_headers, send_json
from agentwatch.proxy.call import Call
from agentwatch.proxy.dlp_stage import inspect_response, response_guard
from agentwatch.state import AppState

log = logging.getLogger(__name__)

_CHECKS = {
    "/v1/chat/completions": validation.check_chat,
    "/v1/completions": validation.check_completions,
    "/v1/embeddings": validation.check_embeddings,
}


async def answer_from_cache(
    state: AppState,
    call: Call,
    endpoint: str,
    payload: dict[str, Any],
    asked: CacheRequest | None,
    send: Send,
) -> bool:
    """True when the call was answered from the cache; otherwise `call.cache` says whether
    (and for how long) its answer is to be stored."""
    check = _CHECKS.get(endpoint)
    principal = call.principal
    if check is None or principal is None:
        return False
    alias = state.catalog.alias(principal.org_id, call.model)
    decision = state.cache.decide(principal.org_id, asked, alias.cache if alias else None)
    if decision is None:
        return False
    # A hit passes the checks a routed call does: the alias exists, the key may use it.
    if alias is None:
        return False
    if not principal.may_use(call.model):
        return False
    check(payload)
    call.stream = validation.wants_stream(payload)
    call.cache = ticket = CacheTicket(
        cache_key(principal.org_id, endpoint, payload), decision.ttl_seconds, decision.write
    )
    if not decision.read:
        return False
    answer = await state.cache.get(ticket.key)
    state.metrics.cache_event(principal.org_id, answer is not None)
    if answer is None:
        return False
    ticket.hit = True
    call.usage = answer.usage
    body = inspect_response(call, answer.body)  # the policy may have changed since
    if call.stream and endpoint in STREAMABLE:
        events = replay_stream(endpoint, body, validation.wants_stream_usage(payload))
        await _send_stream(call, events, send)
    else:
        call.stream = False
        call.mark_first_byte()
        await send_json(send, 200, body, call.request_id, call.response_headers())
    return True


async def _send_stream(call: Call, events: list[bytes], send: Send) -> None:
    headers = [*SSE_HEADERS, *base_headers(call.request_id), *call.response_headers()]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    call.mark_first_byte()
    await send({"type": "http.response.body", "body": b"".join(events), "more_body": False})


async def remember_answer(state: AppState, call: Call, body: bytes) -> None:
    """Store a complete answer the client got (after response DLP)."""
    ticket = call.cache
    if ticket is None or ticket.hit or not ticket.write or call.status != 200:
        return
    await state.cache.put(ticket.key, CachedAnswer(body, call.usage), ticket.ttl_seconds)


def recording(state: AppState, call: Call, stream: ChatStream) -> ChatStream:
    """`stream`, keeping its events when the answer is to be stored. Streams whose output DLP
    rewrites are not stored (the events kept are the upstream's, before the guard)."""
    ticket = call.cache
    if ticket is None or not ticket.write or ticket.hit or call.endpoint not in STREAMABLE:
        return stream
    if response_guard(call) is not None:
        return stream

    async def store(recorded: RecordingStream) -> None:
        if call.status != 200 or not recorded.usage_final or recorded.usage is None:
            return  # an answer cut short, or one whose cost a hit could not report
        usage = openai_usage(recorded.usage)
        body = assemble_answer(call.endpoint, recorded.events, usage)
        answer = CachedAnswer(body, recorded.usage)
        await state.cache.put(ticket.key, answer, ticket.ttl_seconds)

    return RecordingStream(stream, store)


def openai_usage(usage: Usage) -> dict[str, Any]:
    document: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }
    if usage.reasoning_tokens is not None:
        document["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return document


class RecordingStream:
    """A `ChatStream` that keeps a copy of every event it yields and, at `[DONE]`, stores
    the answer before passing that last event on: a client that asks again as soon as its
    stream ends finds the entry."""

    def __init__(
        self, inner: ChatStream, on_done: Callable[[RecordingStream], Awaitable[None]]
    ) -> None:
        self._inner = inner
        self._on_done = on_done
        self.events: list[bytes] = []

    @property
    def usage(self) -> Usage | None:
        return self._inner.usage

    @property
    def content_events(self) -> int:
        return self._inner.content_events

    @property
    def usage_final(self) -> bool:
        return self._inner.usage_final

    async def _iterate(self) -> AsyncIterator[bytes]:
        async for event in self._inner:
            self.events.append(event)  # one item may hold the last chunks and [DONE]
            if event.endswith(DONE):
                await self._on_done(self)
            yield event

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def aclose(self) -> None:
        await self._inner.aclose()
