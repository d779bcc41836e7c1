"""End to end: the official OpenAI SDK against a gateway whose provider is (a fake) Anthropic,
and the adapter's native Messages pass-through against the same fake over real sockets."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from agentwatch.errors import UpstreamOverloaded, UpstreamRejected
from agentwatch.providers.anthropic import AnthropicProvider
from agentwatch.providers.base import ProviderConfig, Usage
from agentwatch.providers.registry import build_provider
from agentwatch.upstream import ProxySettings, UpstreamClient
from tests.fake_anthropic import (
    CACHE_CREATION_TOKENS,
    CACHE_READ_TOKENS,
    COUNTED_TOKENS,
    OUTPUT_TOKENS,
    PROMPT_TOKENS,
    REPLY_WORDS,
    TOOL_INPUT,
    TOOL_PREAMBLE,
    TOOL_USE_ID,
    FakeAnthropic,
)
from tests.support import Gateway, database, new_key

UPSTREAM_KEY = "anthropic-secret"
ALIASES = {
    "claude": "claude-test",
    "claude-overloaded": "fail-529",
    "claude-limited": "fail-429",
    "claude-too-long": "fail-400",
    "claude-bad-key": "fail-401",
    "claude-broken": "fail-500",
    "claude-stream-error": "stream-error",
    "claude-stream-cut": "stream-cut",
    "claude-choppy": "choppy-crlf",
}
MESSAGES: list[Any] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello"},
]
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture(scope="module")
def fake_anthropic() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(
    fake_anthropic: FakeAnthropic, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    workdir: Path = tmp_path_factory.mktemp("gw-anthropic")
    tenant_key = new_key()
    route = "    routes:\n      - provider: claude-main\n        model: {}\n"
    models = "".join(f"  - name: {a}\n" + route.format(u) for a, u in ALIASES.items())
    config = f"""
providers:
  - name: claude-main
    type: anthropic
    base_url: {fake_anthropic.base_url}
    api_key: ${{UPSTREAM_KEY}}
    timeout: 5
models:
{models}
tenants:
  - name: ci
    api_keys: [${{CI_TENANT_KEY}}]
"""
    with database("sqlite", workdir) as url:
        gw = Gateway(
            workdir=workdir,
            database_url=url,
            config=config,
            env={"UPSTREAM_KEY": UPSTREAM_KEY, "CI_TENANT_KEY": tenant_key},
            tenant_key=tenant_key,
        )
        gw.start()
        try:
            yield gw
        finally:
            gw.stop()


def client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.tenant_key, max_retries=0)


def row_for(gateway: Gateway, request_id: str) -> dict[str, Any]:
    (row,) = gateway.wait_for_usage(1, request_id=request_id)
    return row


def test_text_completion_is_translated_both_ways(
    gateway: Gateway, fake_anthropic: FakeAnthropic
) -> None:
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="claude", messages=MESSAGES, temperature=0.5, stop="END", user="u-1"
    )
    completion = raw.parse()
    (choice,) = completion.choices
    assert choice.message.content == "".join(REPLY_WORDS)
    assert choice.message.role == "assistant" and choice.finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (
        PROMPT_TOKENS,
        OUTPUT_TOKENS,
    )
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == CACHE_READ_TOKENS

    sent, headers = fake_anthropic.requests[-1], fake_anthropic.headers[-1]
    assert fake_anthropic.paths[-1] == "/v1/messages"
    assert sent == {
        "model": "claude-test",
        "system": "You are terse.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hello"}]}],
        "max_tokens": 4096,
        "temperature": 0.5,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-1"},
    }
    assert headers["x-api-key"] == UPSTREAM_KEY
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["content-type"] == "application/json"
    assert "authorization" not in headers

    row = row_for(gateway, raw.headers["x-request-id"])
    assert row["provider"] == "claude-main" and row["upstream_model"] == "claude-test"
    assert (row["status"], row["stream"]) == (200, False)
    assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]) == (
        PROMPT_TOKENS,
        OUTPUT_TOKENS,
        CACHE_READ_TOKENS,
    )


def test_streamed_text_arrives_in_order(gateway: Gateway, fake_anthropic: FakeAnthropic) -> None:
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="claude", messages=MESSAGES, stream=True, max_completion_tokens=64
    )
    chunks = list(raw.parse())
    assert chunks[0].choices[0].delta.role == "assistant"
    contents = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert contents == REPLY_WORDS
    assert [c.choices[0].finish_reason for c in chunks] == [None] * (len(chunks) - 1) + ["stop"]
    # Usage was not asked for, so no usage-only chunk; the upstream got no OpenAI-only fields.
    assert all(c.choices for c in chunks)
    sent = fake_anthropic.requests[-1]
    assert sent["stream"] is True and sent["max_tokens"] == 64

    row = row_for(gateway, raw.headers["x-request-id"])
    assert (row["status"], row["stream"]) == (200, True)
    # Cumulative output: the message_delta figure, not the message_start placeholder added to it.
    assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]) == (
        PROMPT_TOKENS,
        OUTPUT_TOKENS,
        CACHE_READ_TOKENS,
    )


def test_streamed_usage_is_forwarded_when_asked(gateway: Gateway) -> None:
    chunks = list(
        client(gateway).chat.completions.create(
            model="claude",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == PROMPT_TOKENS
    assert chunks[-1].usage.completion_tokens == OUTPUT_TOKENS


def test_stream_split_across_reads_with_crlf_line_ends(gateway: Gateway) -> None:
    stream = client(gateway).chat.completions.create(
        model="claude-choppy", messages=MESSAGES, stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "".join(REPLY_WORDS)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_tool_call_round_trip(gateway: Gateway, fake_anthropic: FakeAnthropic) -> None:
    sdk = client(gateway)
    question: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = sdk.chat.completions.create(
        model="claude", messages=question, tools=[WEATHER_TOOL], tool_choice="auto"
    )
    (choice,) = first.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == TOOL_PREAMBLE
    assert choice.message.tool_calls is not None
    (call,) = choice.message.tool_calls
    assert call.id == TOOL_USE_ID and call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == TOOL_INPUT
    sent = fake_anthropic.requests[-1]
    assert sent["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather in a city",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        }
    ]
    assert sent["tool_choice"] == {"type": "auto"}

    history = [
        *question,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"},
    ]
    final = sdk.chat.completions.create(model="claude", messages=history, tools=[WEATHER_TOOL])
    assert final.choices[0].message.content == "The tool said: 18C and sunny"
    assert final.choices[0].finish_reason == "stop"
    turns = fake_anthropic.requests[-1]["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"][-1] == {
        "type": "tool_use",
        "id": TOOL_USE_ID,
        "name": "get_weather",
        "input": TOOL_INPUT,
    }
    assert turns[2]["content"] == [
        {"type": "tool_result", "tool_use_id": TOOL_USE_ID, "content": "18C and sunny"}
    ]


def test_streamed_tool_call(gateway: Gateway) -> None:
    stream = client(gateway).chat.completions.create(
        model="claude",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER_TOOL],
        stream=True,
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        delta = chunk.choices[0].delta
        for piece in delta.tool_calls or []:
            call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += piece.id or ""
            assert piece.function is not None
            call["name"] += piece.function.name or ""
            call["arguments"] += piece.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    # The tool_use is Anthropic's block 1 (after the text) but OpenAI's tool call 0.
    assert list(calls) == [0]
    assert calls[0]["id"] == TOOL_USE_ID and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == TOOL_INPUT
    assert finish == "tool_calls"


@pytest.mark.parametrize(
    ("alias", "error_class", "status", "code"),
    [
        ("claude-overloaded", openai.InternalServerError, 503, "upstream_overloaded"),
        ("claude-limited", openai.RateLimitError, 429, "rate_limit_exceeded"),
        ("claude-too-long", openai.BadRequestError, 400, "context_length_exceeded"),
        ("claude-bad-key", openai.InternalServerError, 502, "upstream_auth_failed"),
        ("claude-broken", openai.InternalServerError, 502, "upstream_error"),
    ],
)
def test_upstream_errors_reach_the_client_mapped(
    gateway: Gateway,
    alias: str,
    error_class: type[openai.APIStatusError],
    status: int,
    code: str,
) -> None:
    with pytest.raises(error_class) as caught:
        client(gateway).chat.completions.create(model=alias, messages=MESSAGES)
    assert caught.value.status_code == status
    assert caught.value.code == code
    if status == 429:
        assert caught.value.response.headers["retry-after"] == "7"
    row = row_for(gateway, caught.value.response.headers["x-request-id"])
    assert (row["status"], row["error_type"]) == (status, code)


def test_streamed_upstream_error_before_the_first_event_is_an_http_error(gateway: Gateway) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client(gateway).chat.completions.create(
            model="claude-overloaded", messages=MESSAGES, stream=True
        )
    assert caught.value.status_code == 503


def test_error_event_mid_stream_is_sent_in_band(gateway: Gateway) -> None:
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="claude-stream-error", messages=MESSAGES, stream=True
    )
    seen: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in raw.parse():
            seen.append(chunk.choices[0].delta.content or "")
    assert "Overloaded" in caught.value.message
    assert "".join(seen) == "".join(REPLY_WORDS)
    row = row_for(gateway, raw.headers["x-request-id"])
    assert (row["status"], row["error_type"]) == (503, "upstream_overloaded")
    assert row["prompt_tokens"] == PROMPT_TOKENS


def test_stream_that_ends_before_message_stop_is_an_error(gateway: Gateway) -> None:
    stream = client(gateway).chat.completions.create(
        model="claude-stream-cut", messages=MESSAGES, stream=True
    )
    with pytest.raises(openai.APIError) as caught:
        list(stream)
    assert "ended the stream early" in caught.value.message


def test_embeddings_are_refused_with_a_400(gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway).embeddings.create(model="claude", input="hello")
    assert "no embeddings API" in caught.value.message


@pytest.fixture
async def adapter(fake_anthropic: FakeAnthropic) -> AsyncIterator[AnthropicProvider]:
    upstream = UpstreamClient(ProxySettings())
    config = ProviderConfig(
        name="claude-main",
        type="anthropic",
        # With a trailing /v1, as often pasted from Anthropic's docs: it must not be doubled.
        base_url=fake_anthropic.base_url + "/v1/",
        api_key=UPSTREAM_KEY,
        timeout_seconds=5,
        # Configured headers replace the adapter's own, whatever their case.
        headers={"Anthropic-Beta": "prompt-caching-2024-07-31", "Anthropic-Version": "2099-01-01"},
    )
    provider = build_provider(config, upstream)
    assert isinstance(provider, AnthropicProvider)
    yield provider
    await upstream.close()


NATIVE_REQUEST: dict[str, Any] = {
    "model": "claude-test",
    "max_tokens": 100,
    "system": [{"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}}],
    "messages": [{"role": "user", "content": "Say hello"}],
}
EXPECTED_USAGE = Usage(
    prompt_tokens=PROMPT_TOKENS,
    completion_tokens=OUTPUT_TOKENS,
    cached_tokens=CACHE_READ_TOKENS,
    cache_write_tokens=CACHE_CREATION_TOKENS,
)


async def test_native_messages_pass_through_untouched(
    adapter: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    result = await adapter.messages(dict(NATIVE_REQUEST))
    assert fake_anthropic.requests[-1] == NATIVE_REQUEST
    assert fake_anthropic.paths[-1] == "/v1/messages"
    headers = fake_anthropic.headers[-1]
    assert headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert headers["anthropic-version"] == "2099-01-01"
    assert headers["x-api-key"] == UPSTREAM_KEY
    message = orjson.loads(result.body)
    assert message["type"] == "message" and message["id"].startswith("msg_")
    assert message["content"] == [{"type": "text", "text": "".join(REPLY_WORDS)}]
    assert result.usage == EXPECTED_USAGE


async def test_native_stream_passes_events_as_sent_and_counts_usage(
    adapter: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    stream = await adapter.stream_messages({**NATIVE_REQUEST, "stream": True})
    try:
        received = b"".join([events async for events in stream])
    finally:
        await stream.aclose()
    assert fake_anthropic.requests[-1] == {**NATIVE_REQUEST, "stream": True}
    events = [e for e in received.split(b"\n\n") if e]
    names = [e.split(b"\n")[0].decode() for e in events]
    assert names[:3] == ["event: message_start", "event: content_block_start", "event: ping"]
    assert names[-2:] == ["event: message_delta", "event: message_stop"]
    assert names.count("event: content_block_delta") == len(REPLY_WORDS)
    assert stream.content_events == len(REPLY_WORDS)
    assert stream.usage == EXPECTED_USAGE


async def test_native_stream_error_event_is_raised_after_the_events_before_it(
    adapter: AnthropicProvider,
) -> None:
    stream = await adapter.stream_messages(
        {**NATIVE_REQUEST, "model": "stream-error", "stream": True}
    )
    received: list[bytes] = []
    try:
        with pytest.raises(UpstreamOverloaded):
            async for events in stream:
                received.append(events)
    finally:
        await stream.aclose()
    relayed = b"".join(received)
    assert relayed.count(b"event: content_block_delta") == len(REPLY_WORDS)
    assert b"event: error" not in relayed
    assert stream.usage is not None and stream.usage.prompt_tokens == PROMPT_TOKENS


async def test_native_errors_are_mapped(adapter: AnthropicProvider) -> None:
    with pytest.raises(UpstreamOverloaded):
        await adapter.messages({**NATIVE_REQUEST, "model": "fail-529"})
    with pytest.raises(UpstreamOverloaded):
        await adapter.stream_messages({**NATIVE_REQUEST, "model": "fail-529", "stream": True})


async def test_count_tokens_asks_the_upstream(
    adapter: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    payload = {"model": "claude-test", "messages": [{"role": "user", "content": "Hi"}]}
    assert await adapter.count_tokens(payload) == COUNTED_TOKENS
    assert fake_anthropic.paths[-1] == "/v1/messages/count_tokens"
    assert fake_anthropic.requests[-1] == payload


async def test_embeddings_are_rejected_without_a_call(
    adapter: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    before = len(fake_anthropic.requests)
    with pytest.raises(UpstreamRejected) as caught:
        await adapter.embeddings({"model": "claude-test", "input": "hi"})
    assert caught.value.status == 400 and not caught.value.retryable
    assert len(fake_anthropic.requests) == before
