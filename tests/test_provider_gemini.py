"""End to end: the official OpenAI SDK against a running gateway in front of a fake Gemini."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.fake_gemini import (
    API_KEY,
    CACHED_TOKENS,
    CALL_ARGS,
    CANDIDATES_TOKENS,
    PROMPT_TOKENS,
    REPLY_PARTS,
    RETRY_DELAY_SECONDS,
    THINKING_ANSWER,
    THOUGHTS_TOKENS,
    FakeGemini,
)
from tests.support import Gateway, new_key

ALIASES = {
    "flash": "gemini-2.0-flash",
    "thinker": "thinking",
    "filtered": "safety",
    "refused": "blocked",
    "interrupted": "stream-error",
    "embedder": "text-embedding-004",
    "too-long": "fail-400",
    "forbidden": "fail-403",
    "missing": "fail-404",
    "limited": "fail-429",
    "broken": "fail-500",
    "overloaded": "fail-503",
    "deadline": "fail-504",
}
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "strict": True,
        "parameters": {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def gateway_config(origin: str) -> str:
    routes = "".join(
        f"  - name: {alias}\n    routes: [{{provider: google, model: {model}}}]\n"
        for alias, model in ALIASES.items()
    )
    return f"""
providers:
  - name: google
    type: gemini
    base_url: {origin}
    api_key: ${{GEMINI_KEY}}
    timeout: 5
  - name: google-wrong-key
    type: gemini
    base_url: {origin}
    api_key: not-the-key
  - name: google-versioned
    type: gemini
    base_url: {origin}/v1beta/
    api_key: ${{GEMINI_KEY}}
models:
{routes}  - name: wrong-key
    routes: [{{provider: google-wrong-key, model: gemini-2.0-flash}}]
  - name: versioned
    routes: [{{provider: google-versioned, model: models/gemini-2.0-flash}}]
tenants:
  - name: ci
    api_keys: [${{CI_TENANT_KEY}}]
"""


@pytest.fixture(scope="module")
def fake_gemini() -> Iterator[FakeGemini]:
    server = FakeGemini()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(fake_gemini: FakeGemini, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    workdir: Path = tmp_path_factory.mktemp("gw-gemini")
    tenant_key = new_key()
    gw = Gateway(
        workdir=workdir,
        database_url=f"sqlite:///{workdir / 'gateway.db'}",
        config=gateway_config(fake_gemini.origin),
        env={"GEMINI_KEY": API_KEY, "CI_TENANT_KEY": tenant_key},
        tenant_key=tenant_key,
    )
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def sdk(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{gateway.url}/v1", api_key=gateway.tenant_key, max_retries=0
    ) as client:
        yield client


def traced() -> tuple[str, dict[str, str]]:
    """A request id of our own, to find the call's usage row."""
    request_id = "gemini-" + secrets.token_hex(8)
    return request_id, {"x-request-id": request_id}


def test_text_completion_with_system_instruction(
    gateway: Gateway, sdk: openai.OpenAI, fake_gemini: FakeGemini
) -> None:
    request_id, headers = traced()
    completion = sdk.chat.completions.create(
        model="flash",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello"},
        ],
        max_tokens=50,
        extra_headers=headers,
    )
    assert completion.choices[0].message.content == "".join(REPLY_PARTS)
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == PROMPT_TOKENS
    assert completion.usage.completion_tokens == CANDIDATES_TOKENS
    sent = fake_gemini.last("generateContent")
    assert sent.model == "gemini-2.0-flash"
    assert sent.headers["x-goog-api-key"] == API_KEY
    assert "Authorization" not in sent.headers
    assert sent.body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert sent.body["contents"] == [{"role": "user", "parts": [{"text": "Say hello"}]}]
    assert sent.body["generationConfig"] == {"maxOutputTokens": 50}
    [row] = gateway.wait_for_usage(1, request_id=request_id)
    assert row["provider"] == "google" and row["upstream_model"] == "gemini-2.0-flash"
    assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]) == (
        PROMPT_TOKENS,
        CANDIDATES_TOKENS,
        CACHED_TOKENS,
    )


def test_a_versioned_base_url_and_a_prefixed_model_id_are_accepted(
    sdk: openai.OpenAI, fake_gemini: FakeGemini
) -> None:
    completion = sdk.chat.completions.create(
        model="versioned", messages=[{"role": "user", "content": "Say hello"}]
    )
    assert completion.choices[0].message.content == "".join(REPLY_PARTS)
    assert fake_gemini.last("generateContent").model == "gemini-2.0-flash"


def test_stream_yields_text_in_order(
    gateway: Gateway, sdk: openai.OpenAI, fake_gemini: FakeGemini
) -> None:
    request_id, headers = traced()
    stream = sdk.chat.completions.create(
        model="flash",
        messages=[{"role": "user", "content": "Say hello"}],
        stream=True,
        extra_headers=headers,
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    texts = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert texts == REPLY_PARTS
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)  # not asked for
    sent = fake_gemini.last("streamGenerateContent")
    assert sent.query == {"alt": "sse"}
    assert sent.headers["x-goog-api-key"] == API_KEY
    [row] = gateway.wait_for_usage(1, request_id=request_id)
    assert row["stream"] is True and row["status"] == 200
    assert (row["prompt_tokens"], row["completion_tokens"]) == (PROMPT_TOKENS, CANDIDATES_TOKENS)


def test_stream_forwards_usage_when_asked(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model="flash",
        messages=[{"role": "user", "content": "Say hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    last = list(stream)[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (
        PROMPT_TOKENS,
        CANDIDATES_TOKENS,
    )


def test_tool_call_round_trip(sdk: openai.OpenAI, fake_gemini: FakeGemini) -> None:
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = sdk.chat.completions.create(
        model="flash", messages=messages, tools=[WEATHER_TOOL], tool_choice="required"
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == CALL_ARGS
    sent = fake_gemini.last("generateContent").body
    [declaration] = sent["tools"][0]["functionDeclarations"]
    assert declaration["parameters"] == {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    }
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}

    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'},
    ]
    second = sdk.chat.completions.create(model="flash", messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].message.content == 'The tool said: {"temp_c": 21}'
    assert second.choices[0].finish_reason == "stop"
    contents = fake_gemini.last("generateContent").body["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert contents[1]["parts"] == [{"functionCall": {"name": "get_weather", "args": CALL_ARGS}}]
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"temp_c": 21}}}
    ]


def test_streamed_tool_call(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model="flash",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER_TOOL],
        stream=True,
    )
    chunks = list(stream)
    calls = [tc for c in chunks for tc in c.choices[0].delta.tool_calls or []]
    assert len(calls) == 1 and calls[0].index == 0
    assert calls[0].id and calls[0].id.startswith("call_")
    assert calls[0].function is not None and calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments or "") == CALL_ARGS
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("stream", [False, True])
def test_thinking_is_billed_but_not_shown(
    gateway: Gateway, sdk: openai.OpenAI, stream: bool
) -> None:
    request_id, headers = traced()
    messages: Any = [{"role": "user", "content": "What is six times seven?"}]
    if stream:
        chunks = list(
            sdk.chat.completions.create(
                model="thinker", messages=messages, stream=True, extra_headers=headers
            )
        )
        content = "".join(c.choices[0].delta.content or "" for c in chunks)
    else:
        completion = sdk.chat.completions.create(
            model="thinker", messages=messages, extra_headers=headers
        )
        content = completion.choices[0].message.content or ""
        assert completion.usage is not None and completion.usage.completion_tokens_details
        assert completion.usage.completion_tokens_details.reasoning_tokens == THOUGHTS_TOKENS
    assert content == THINKING_ANSWER
    [row] = gateway.wait_for_usage(1, request_id=request_id)
    assert row["completion_tokens"] == CANDIDATES_TOKENS + THOUGHTS_TOKENS


@pytest.mark.parametrize("alias", ["filtered", "refused"])
@pytest.mark.parametrize("stream", [False, True])
def test_safety_blocks_finish_as_content_filter(
    sdk: openai.OpenAI, alias: str, stream: bool
) -> None:
    messages: Any = [{"role": "user", "content": "Something unsafe"}]
    if stream:
        chunks = list(sdk.chat.completions.create(model=alias, messages=messages, stream=True))
        assert not any(c.choices[0].delta.content for c in chunks)
        assert chunks[-1].choices[0].finish_reason == "content_filter"
    else:
        completion = sdk.chat.completions.create(model=alias, messages=messages)
        assert completion.choices[0].finish_reason == "content_filter"
        assert completion.choices[0].message.content == ""


@pytest.mark.parametrize(
    ("alias", "error_class", "status", "code"),
    [
        ("too-long", openai.BadRequestError, 400, "context_length_exceeded"),
        ("forbidden", openai.InternalServerError, 502, "upstream_auth_failed"),
        ("wrong-key", openai.InternalServerError, 502, "upstream_auth_failed"),
        ("missing", openai.NotFoundError, 404, "upstream_rejected"),
        ("limited", openai.RateLimitError, 429, "rate_limit_exceeded"),
        ("broken", openai.InternalServerError, 502, "upstream_error"),
        ("overloaded", openai.InternalServerError, 503, "upstream_overloaded"),
        ("deadline", openai.InternalServerError, 504, "upstream_timeout"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_gemini_errors_map_to_openai_errors(
    gateway: Gateway,
    sdk: openai.OpenAI,
    alias: str,
    error_class: type[openai.APIStatusError],
    status: int,
    code: str,
    stream: bool,
) -> None:
    request_id, headers = traced()
    with pytest.raises(error_class) as caught:
        sdk.chat.completions.create(
            model=alias,
            messages=[{"role": "user", "content": "hi"}],
            stream=stream,
            extra_headers=headers,
        )
    assert caught.value.status_code == status
    assert caught.value.code == code
    if alias == "limited":
        assert caught.value.response.headers["retry-after"] == str(RETRY_DELAY_SECONDS)
    [row] = gateway.wait_for_usage(1, request_id=request_id)
    assert row["status"] == status and row["error_type"] == code


def test_error_mid_stream_reaches_the_client_in_band(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model="interrupted", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    received: list[str] = []
    with pytest.raises(openai.APIError, match="overloaded"):
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == REPLY_PARTS[0]


def test_embeddings(gateway: Gateway, sdk: openai.OpenAI, fake_gemini: FakeGemini) -> None:
    request_id, headers = traced()
    texts = ["first text", "a second, longer text"]
    # The SDK asks for base64 (float32) unless told otherwise, and decodes it.
    result = sdk.embeddings.create(
        model="embedder", input=texts, dimensions=4, extra_headers=headers
    )
    assert [d.index for d in result.data] == [0, 1]
    assert result.data[0].embedding == pytest.approx([0.1] * 4, rel=1e-6)
    assert result.data[1].embedding == pytest.approx([0.2] * 4, rel=1e-6)
    sent = fake_gemini.last("batchEmbedContents")
    assert sent.model == "text-embedding-004"
    assert sent.headers["x-goog-api-key"] == API_KEY
    assert sent.body["requests"][1] == {
        "model": "models/text-embedding-004",
        "content": {"parts": [{"text": texts[1]}]},
        "outputDimensionality": 4,
    }
    estimate = 3 + 6  # ceil(10 / 4) + ceil(21 / 4): Gemini reports no counts
    assert result.usage.prompt_tokens == estimate
    [row] = gateway.wait_for_usage(1, request_id=request_id)
    assert row["prompt_tokens"] == estimate and row["endpoint"] == "/v1/embeddings"


def test_token_array_embeddings_are_refused(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.embeddings.create(model="embedder", input=[[1, 2, 3]])
    assert caught.value.param == "input"


def test_float_embeddings_come_back_as_sent(sdk: openai.OpenAI) -> None:
    result = sdk.embeddings.create(model="embedder", input="one text", encoding_format="float")
    assert result.data[0].embedding == [0.1, 0.1, 0.1]
