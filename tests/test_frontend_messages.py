"""End to end: the official Anthropic SDK against `/v1/messages` on a gateway whose aliases
route to OpenAI-format upstreams, so every call crosses the Messages <-> pivot translation."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from agentwatch.frontends.messages_wire import estimate_input_tokens
from tests import fake_openai_tools as tools_fake
from tests.conftest import BACKENDS, standard_config
from tests.fake_openai import (
    CACHED_TOKENS,
    COMPLETION_TOKENS,
    PROMPT_TOKENS,
    REPLY_WORDS,
    FakeOpenAI,
)
from tests.fake_openai_tools import FakeOpenAITools
from tests.support import Gateway, database, new_key

REPLY = "".join(REPLY_WORDS)
MESSAGES: list[anthropic.types.MessageParam] = [{"role": "user", "content": "Say hello"}]
TOOLS: list[anthropic.types.ToolParam] = [
    {
        "name": "weather",
        "description": "The weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
    {"name": "clock", "input_schema": {"type": "object", "properties": {}}},
]


@pytest.fixture(scope="module")
def tools_upstream() -> Iterator[FakeOpenAITools]:
    server = FakeOpenAITools()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def gateway(
    request: pytest.FixtureRequest,
    fake_openai: FakeOpenAI,
    tools_upstream: FakeOpenAITools,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    """The standard gateway plus `tool-model`, an alias on the tool-calling upstream."""
    workdir: Path = tmp_path_factory.mktemp(f"gw-messages-{request.param}")
    tenant_key, other_key = new_key(), new_key()
    config = standard_config(fake_openai.base_url, tenant_key, other_key)
    # The standard config is a template (`${...}` is filled by the gateway), so add to its text.
    provider = f"""
  - name: tools
    type: openai_compatible
    base_url: {tools_upstream.base_url}"""
    alias = """
  - name: tool-model
    routes:
      - provider: tools
        model: tools-upstream"""
    assert config.count("\nproviders:") == 1 and config.count("\nmodels:") == 1
    config = config.replace("\nproviders:", "\nproviders:" + provider)
    config = config.replace("\nmodels:", "\nmodels:" + alias)
    with database(request.param, workdir) as url:
        gw = Gateway(
            workdir=workdir,
            database_url=url,
            config=config,
            env={"UPSTREAM_KEY": "upstream-secret", "CI_TENANT_KEY": tenant_key},
            tenant_key=tenant_key,
            restricted_key=other_key,
        )
        gw.start()
        try:
            yield gw
        finally:
            gw.stop()


def client(gateway: Gateway, key: str | None = None) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=gateway.url, api_key=key or gateway.tenant_key, max_retries=0
    )


def traced() -> tuple[str, dict[str, str]]:
    request_id = "messages-" + secrets.token_hex(8)
    return request_id, {"x-request-id": request_id}


# --- text -------------------------------------------------------------------------------


def test_create(gateway: Gateway, fake_openai: FakeOpenAI) -> None:
    message = client(gateway).messages.create(
        model="gpt-4o-mini",
        max_tokens=64,
        system="Be brief.",
        messages=MESSAGES,
        stop_sequences=["END"],
        metadata={"user_id": "user-7"},
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.model == "gpt-4o-mini"
    assert [(b.type, getattr(b, "text", None)) for b in message.content] == [("text", REPLY)]
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    input_tokens = PROMPT_TOKENS - CACHED_TOKENS
    assert message.usage.input_tokens == input_tokens
    assert message.usage.output_tokens == COMPLETION_TOKENS
    assert message.usage.cache_read_input_tokens == CACHED_TOKENS
    assert message.usage.cache_creation_input_tokens == 0
    sent = fake_openai.requests[-1]
    assert sent["model"] == "gpt-4o-mini" and sent["max_tokens"] == 64
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello"},
    ]
    assert sent["stop"] == ["END"] and sent["user"] == "user-7"


def test_stream_helper(gateway: Gateway) -> None:
    with client(gateway).messages.stream(
        model="gpt-4o-mini", max_tokens=64, messages=MESSAGES
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == REPLY
    assert final.content[0].type == "text" and final.content[0].text == REPLY
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == PROMPT_TOKENS - CACHED_TOKENS
    assert final.usage.output_tokens == COMPLETION_TOKENS
    assert final.usage.cache_read_input_tokens == CACHED_TOKENS


def test_create_with_stream_true_sends_anthropics_event_sequence(gateway: Gateway) -> None:
    events = list(
        client(gateway).messages.create(
            model="gpt-4o-mini", max_tokens=64, messages=MESSAGES, stream=True
        )
    )
    kinds = [e.type for e in events]
    words = len(REPLY_WORDS)
    assert kinds == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * words,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    last = events[-2]
    assert last.type == "message_delta"
    assert last.delta.stop_reason == "end_turn"
    assert last.usage.output_tokens == COMPLETION_TOKENS
    assert last.usage.input_tokens == PROMPT_TOKENS - CACHED_TOKENS


def test_bearer_authorization_works_too(gateway: Gateway) -> None:
    sdk = anthropic.Anthropic(base_url=gateway.url, auth_token=gateway.tenant_key, max_retries=0)
    message = sdk.messages.create(model="gpt-4o-mini", max_tokens=8, messages=MESSAGES)
    assert message.content[0].type == "text"


# --- tools ------------------------------------------------------------------------------


def test_tool_use_round_trip(gateway: Gateway, tools_upstream: FakeOpenAITools) -> None:
    sdk = client(gateway)
    first = sdk.messages.create(
        model="tool-model",
        max_tokens=256,
        messages=[{"role": "user", "content": "Weather and time in Paris?"}],
        tools=TOOLS,
        tool_choice={"type": "auto", "disable_parallel_tool_use": False},
    )
    sent = tools_upstream.requests[-1]
    assert sent["model"] == "tools-upstream" and sent["tool_choice"] == "auto"
    assert [t["function"]["name"] for t in sent["tools"]] == ["weather", "clock"]
    assert sent["tools"][0]["function"]["parameters"] == TOOLS[0]["input_schema"]
    assert first.stop_reason == "tool_use"
    text, weather, clock = first.content
    assert text.type == "text" and text.text == "".join(tools_fake.PREAMBLE)
    assert weather.type == "tool_use" and clock.type == "tool_use"
    assert (weather.id, weather.name, weather.input) == ("call_first", "weather", {"city": "Paris"})
    assert (clock.id, clock.name, clock.input) == ("call_second", "clock", {})

    second = sdk.messages.create(
        model="tool-model",
        max_tokens=256,
        messages=[
            {"role": "user", "content": "Weather and time in Paris?"},
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": weather.id, "content": "sunny"},
                    {
                        "type": "tool_result",
                        "tool_use_id": clock.id,
                        "content": [{"type": "text", "text": "no clock"}],
                        "is_error": True,
                    },
                    {"type": "text", "text": "Summarise."},
                ],
            },
        ],
        tools=TOOLS,
    )
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text"
    assert second.content[0].text == f"{tools_fake.ANSWER_PREFIX}sunny | Error: no clock"
    history = tools_upstream.requests[-1]["messages"]
    assert history[1]["tool_calls"][0]["function"] == {
        "name": "weather",
        "arguments": '{"city":"Paris"}',
    }
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "tool", "user"]


def test_streamed_tool_calls(gateway: Gateway) -> None:
    with client(gateway).messages.stream(
        model="tool-model",
        max_tokens=256,
        messages=[{"role": "user", "content": "Weather?"}],
        tools=TOOLS,
        tool_choice={"type": "any"},
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [b.type for b in final.content] == ["text", "tool_use", "tool_use"]
    blocks = [b for b in final.content if b.type == "tool_use"]
    assert [(b.id, b.name, b.input) for b in blocks] == [
        ("call_first", "weather", {"city": "Paris"}),
        ("call_second", "clock", {}),
    ]
    assert final.usage.input_tokens == (tools_fake.PROMPT_TOKENS - tools_fake.CACHED_TOKENS)
    assert final.usage.output_tokens == tools_fake.COMPLETION_TOKENS
    assert final.usage.cache_read_input_tokens == tools_fake.CACHED_TOKENS


# --- count_tokens -----------------------------------------------------------------------


def test_count_tokens_estimates_for_other_providers(gateway: Gateway) -> None:
    request: dict[str, Any] = {"system": "Be brief.", "messages": MESSAGES, "tools": TOOLS}
    counted = client(gateway).messages.count_tokens(model="gpt-4o-mini", **request)
    assert counted.input_tokens == estimate_input_tokens(request)
    smaller = client(gateway).messages.count_tokens(model="gpt-4o-mini", messages=MESSAGES)
    assert 0 < smaller.input_tokens < counted.input_tokens


def test_count_tokens_checks_the_model(gateway: Gateway) -> None:
    with pytest.raises(anthropic.BadRequestError):
        client(gateway).messages.count_tokens(model="no-such-model", messages=MESSAGES)


# --- errors -----------------------------------------------------------------------------


def error_of(caught: pytest.ExceptionInfo[anthropic.APIStatusError]) -> dict[str, Any]:
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error", body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"type", "message"} and error["message"]
    return error


def test_unknown_model_is_a_bad_request(gateway: Gateway) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client(gateway).messages.create(model="no-such-model", max_tokens=8, messages=MESSAGES)
    error = error_of(caught)
    assert error["type"] == "invalid_request_error" and "no-such-model" in error["message"]


def test_bad_key_is_an_authentication_error(gateway: Gateway) -> None:
    with pytest.raises(anthropic.AuthenticationError) as caught:
        client(gateway, "sk-wrong-key-0123456789abcdef").messages.create(
            model="gpt-4o-mini", max_tokens=8, messages=MESSAGES
        )
    assert error_of(caught)["type"] == "authentication_error"


def test_a_model_the_key_may_not_use_is_a_permission_error(gateway: Gateway) -> None:
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        client(gateway, gateway.restricted_key).messages.create(
            model="tool-model", max_tokens=8, messages=MESSAGES
        )
    assert error_of(caught)["type"] == "permission_error"


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_rate_limit(gateway: Gateway, stream: bool) -> None:
    with pytest.raises(anthropic.RateLimitError) as caught:
        client(gateway).messages.create(
            model="limited", max_tokens=8, messages=MESSAGES, stream=stream
        )
    assert error_of(caught)["type"] == "rate_limit_error"
    assert caught.value.response.headers["retry-after"] == "7"


def test_upstream_failure_is_502(gateway: Gateway) -> None:
    with pytest.raises(anthropic.InternalServerError) as caught:
        client(gateway).messages.create(model="broken", max_tokens=8, messages=MESSAGES)
    assert caught.value.status_code == 502
    assert error_of(caught)["type"] == "api_error"


def test_upstream_timeout_is_504(gateway: Gateway) -> None:
    with pytest.raises(anthropic.InternalServerError) as caught:
        client(gateway).messages.create(model="slow", max_tokens=8, messages=MESSAGES)
    assert caught.value.status_code == 504
    assert error_of(caught)["type"] == "api_error"


def test_upstream_rejection_keeps_its_message(gateway: Gateway) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client(gateway).messages.create(model="too-long", max_tokens=8, messages=MESSAGES)
    assert "maximum context length" in error_of(caught)["message"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}', "max_tokens"),
        (b'{"model": "gpt-4o-mini", "max_tokens": 8, "messages": []}', "messages"),
        (
            b'{"model": "gpt-4o-mini", "max_tokens": 8, '
            b'"messages": [{"role": "system", "content": "x"}]}',
            "role",
        ),
        (b'{"max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}', "model"),
        (b"{not json", "JSON"),
    ],
)
def test_malformed_body_is_400_in_anthropics_shape(
    gateway: Gateway, body: bytes, fragment: str
) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/messages",
        content=body,
        headers={
            "x-api-key": gateway.tenant_key,
            "anthropic-version": "2023-06-01",
            "content-type": "application/json",
        },
    )
    assert response.status_code == 400, response.text
    payload = response.json()
    assert payload["type"] == "error" and payload["error"]["type"] == "invalid_request_error"
    assert fragment in payload["error"]["message"]


def test_a_stream_that_breaks_ends_with_an_error_event(gateway: Gateway) -> None:
    received: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        stream = client(gateway).messages.create(
            model="breaking", max_tokens=8, messages=MESSAGES, stream=True
        )
        for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                received.append(event.delta.text)
    assert received == REPLY_WORDS
    assert error_of(caught)["type"] == "api_error"


# --- metering ---------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_usage_is_recorded_for_the_messages_endpoint(gateway: Gateway, stream: bool) -> None:
    request_id, headers = traced()
    sdk = client(gateway)
    if stream:
        with sdk.messages.stream(
            model="gpt-4o-mini", max_tokens=8, messages=MESSAGES, extra_headers=headers
        ) as events:
            events.until_done()
    else:
        sdk.messages.create(
            model="gpt-4o-mini", max_tokens=8, messages=MESSAGES, extra_headers=headers
        )
    (row,) = gateway.wait_for_usage(1, request_id=request_id)
    assert row["endpoint"] == "/v1/messages" and row["status"] == 200
    assert row["model"] == "gpt-4o-mini" and row["stream"] is stream
    assert row["prompt_tokens"] == PROMPT_TOKENS
    assert row["completion_tokens"] == COMPLETION_TOKENS
    assert row["cached_tokens"] == CACHED_TOKENS


def test_count_tokens_is_recorded_at_zero_tokens(gateway: Gateway) -> None:
    request_id, headers = traced()
    client(gateway).messages.count_tokens(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers=headers
    )
    (row,) = gateway.wait_for_usage(1, request_id=request_id)
    assert row["endpoint"] == "/v1/messages/count_tokens" and row["status"] == 200
    assert row["prompt_tokens"] == 0 and row["completion_tokens"] == 0


def test_failures_are_recorded_with_their_status(gateway: Gateway) -> None:
    request_id, headers = traced()
    with pytest.raises(anthropic.RateLimitError):
        client(gateway).messages.create(
            model="limited", max_tokens=8, messages=MESSAGES, extra_headers=headers
        )
    (row,) = gateway.wait_for_usage(1, request_id=request_id)
    assert row["endpoint"] == "/v1/messages" and row["status"] == 429
