"""The response cache's parts without a gateway: the key, the stores, stream replay."""

from __future__ import annotations

import orjson
from redis.asyncio import Redis

from agentwatch.cache.entry import CachedAnswer
from agentwatch.cache.key import cache_key
from agentwatch.cache.policy import CacheRequest, OrgCacheSettings, decide
from agentwatch.cache.replay import assemble_answer, replay_stream
from agentwatch.cache.store import MemoryStore, RedisStore
from agentwatch.providers.base import Usage
from tests.support import free_port

CHAT = "/v1/chat/completions"
REQUEST = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}


def test_the_key_ignores_order_and_delivery_but_not_content_or_organisation() -> None:
    key = cache_key(1, CHAT, REQUEST)
    reordered = dict(reversed(list(REQUEST.items())))
    streamed = {**REQUEST, "stream": True, "stream_options": {"include_usage": True}}
    assert cache_key(1, CHAT, reordered) == key == cache_key(1, CHAT, streamed)
    assert cache_key(2, CHAT, REQUEST) != key
    assert cache_key(1, "/v1/completions", REQUEST) != key
    assert cache_key(1, CHAT, {**REQUEST, "temperature": 1}) != key
    assert cache_key(1, CHAT, {**REQUEST, "tools": []}) != key
    assert cache_key(1, CHAT, {**REQUEST, "model": "n"}) != key


async def test_memory_store_expires_by_its_clock_and_evicts_least_recent_past_its_bound() -> None:
    now = [100.0]
    store = MemoryStore(max_bytes=10, clock=lambda: now[0])
    await store.set("a", b"1234", 5)
    await store.set("b", b"1234", 5)
    assert await store.get("a") == b"1234"  # now "b" is the least recently used
    await store.set("c", b"1234", 5)
    assert await store.get("b") is None
    assert await store.get("a") == b"1234" and await store.get("c") == b"1234"
    assert store.bytes == 8
    now[0] = 104.9
    assert await store.get("a") == b"1234"
    now[0] = 105.0
    assert await store.get("a") is None and await store.get("c") is None
    assert store.bytes == 0
    await store.set("big", b"x" * 11, 5)  # larger than the whole bound: not stored
    assert len(store) == 0


async def test_an_unreachable_redis_reads_as_a_miss_and_drops_writes() -> None:
    store = RedisStore(Redis.from_url(f"redis://127.0.0.1:{free_port()}/0"), "t:")
    try:
        assert await store.get("k") is None
        await store.set("k", b"v", 5)
    finally:
        await store.close()


def test_headers_and_organisation_settings_decide_together() -> None:
    on = OrgCacheSettings(enabled=True, ttl_seconds=60)
    assert decide(None, None) is None
    assert decide(OrgCacheSettings(), None) is None
    assert decide(on, None) is not None
    asked_on = CacheRequest.from_headers(b"on", b"7", None)
    decision = decide(None, asked_on)
    assert decision is not None and decision.ttl_seconds == 7 and decision.read
    assert decide(on, CacheRequest.from_headers(b"off", None, None)) is None
    assert decide(on, CacheRequest.from_headers(None, None, b"no-store")) is None
    no_cache = decide(on, CacheRequest.from_headers(None, None, b"max-age=0, no-cache"))
    assert no_cache is not None and not no_cache.read and no_cache.write
    assert CacheRequest.from_headers(None, None, None) is None


def test_entries_round_trip() -> None:
    answer = CachedAnswer(b'{"a":1}\n', Usage(prompt_tokens=3, completion_tokens=4))
    assert CachedAnswer.decode(answer.encode()) == answer
    assert CachedAnswer.decode(b"garbage") is None


def test_a_replayed_stream_assembles_back_into_its_answer() -> None:
    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    tool_call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    body = {
        "id": "x",
        "created": 1,
        "model": "m",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hello", "tool_calls": [tool_call]},
                "finish_reason": "tool_calls",
                "logprobs": None,
            },
            {
                "index": 1,
                "message": {"role": "assistant", "content": "bye"},
                "finish_reason": "stop",
                "logprobs": None,
            },
        ],
        "usage": usage,
    }
    events = replay_stream(CHAT, orjson.dumps(body), include_usage=True)
    assert events[-1] == b"data: [DONE]\n\n"
    assert orjson.loads(events[-2][6:])["usage"] == usage
    assert orjson.loads(assemble_answer(CHAT, events, usage)) == body
    without_usage = replay_stream(CHAT, orjson.dumps(body), include_usage=False)
    assert all(b'"usage"' not in event for event in without_usage)


def test_legacy_completions_replay_and_assemble() -> None:
    body = {
        "id": "x",
        "created": 1,
        "model": "m",
        "object": "text_completion",
        "choices": [{"index": 0, "text": "abc", "finish_reason": "length", "logprobs": None}],
        "usage": None,
    }
    endpoint = "/v1/completions"
    events = replay_stream(endpoint, orjson.dumps(body), include_usage=False)
    assert orjson.loads(assemble_answer(endpoint, events, None)) == body
