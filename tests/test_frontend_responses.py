"""End to end: the official OpenAI SDK's Responses client against a running gateway.

`gateway` (conftest) puts the plain fake OpenAI behind an `openai_compatible` provider, so
calls take the translated path. `responses_gateway` adds an upstream that calls tools and
speaks the Responses API itself, as an `openai_compatible` provider (translated) and as an
`openai` provider (passed through natively).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.fake_openai import (
    CACHED_TOKENS,
    COMPLETION_TOKENS,
    PROMPT_TOKENS,
    REPLY_WORDS,
    FakeOpenAI,
)
from tests.fake_openai_responses import (
    CHAT_USAGE,
    FINAL_TEXT,
    NATIVE_TEXT,
    NATIVE_USAGE,
    FakeResponsesUpstream,
)
from tests.support import Gateway, database, new_key

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
TIME_TOOL: dict[str, Any] = {"type": "function", "name": "get_time", "parameters": {}}


def client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.tenant_key, max_retries=0)


def traced() -> tuple[str, dict[str, str]]:
    """A request id of our own, so the test finds its usage row and only its own."""
    request_id = "responses-" + secrets.token_hex(8)
    return request_id, {"x-request-id": request_id}


def usage_row(gateway: Gateway, request_id: str) -> dict[str, Any]:
    (row,) = gateway.wait_for_usage(1, endpoint="/v1/responses", request_id=request_id)
    return row


# Translated path, through the shared gateway and the plain fake OpenAI.


def test_a_text_response_through_a_chat_provider(gateway: Gateway, fake_openai: FakeOpenAI) -> None:
    request_id, headers = traced()
    response = client(gateway).responses.create(
        model="gpt-4o-mini",
        input="Say hello",
        instructions="Be brief",
        max_output_tokens=50,
        extra_headers=headers,
    )
    assert response.output_text == "".join(REPLY_WORDS)
    assert response.object == "response" and response.status == "completed"
    assert response.id.startswith("resp_") and response.model == "gpt-4o-mini"
    assert response.usage is not None
    assert response.usage.input_tokens == PROMPT_TOKENS
    assert response.usage.output_tokens == COMPLETION_TOKENS
    assert response.usage.input_tokens_details.cached_tokens == CACHED_TOKENS
    sent = fake_openai.requests[-1]
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "Say hello"},
    ]
    assert sent["max_tokens"] == 50 and sent["model"] == "gpt-4o-mini"
    row = usage_row(gateway, request_id)
    assert (row["status"], row["stream"], row["model"]) == (200, False, "gpt-4o-mini")
    assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]) == (
        PROMPT_TOKENS,
        COMPLETION_TOKENS,
        CACHED_TOKENS,
    )


def test_a_streamed_response_through_a_chat_provider(gateway: Gateway) -> None:
    request_id, headers = traced()
    stream = client(gateway).responses.create(
        model="gpt-4o-mini", input="Say hello", stream=True, extra_headers=headers
    )
    events = list(stream)
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert deltas == REPLY_WORDS
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    final = events[-1].response
    assert final.output_text == "".join(REPLY_WORDS)
    assert final.usage is not None and final.usage.input_tokens == PROMPT_TOKENS
    assert final.usage.output_tokens == COMPLETION_TOKENS
    row = usage_row(gateway, request_id)
    assert (row["status"], row["stream"]) == (200, True)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (PROMPT_TOKENS, COMPLETION_TOKENS)


def test_previous_response_id_is_refused_with_a_clear_400(gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway).responses.create(
            model="gpt-4o-mini", input="And then?", previous_response_id="resp_abc"
        )
    assert caught.value.status_code == 400
    assert caught.value.param == "previous_response_id"
    assert "does not keep" in caught.value.message


def test_built_in_tools_are_refused_on_a_chat_provider(gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway).responses.create(
            model="gpt-4o-mini", input="News?", tools=[{"type": "web_search"}]
        )
    assert caught.value.param == "tools[0]"
    assert "not supported on this provider" in caught.value.message


def test_a_stream_that_breaks_ends_with_error_and_response_failed(gateway: Gateway) -> None:
    request_id, headers = traced()
    stream = client(gateway).responses.create(
        model="breaking", input="Say hello", stream=True, extra_headers=headers
    )
    events = list(stream)
    assert [e.type for e in events[-2:]] == ["error", "response.failed"]
    assert events[-1].response.status == "failed"
    assert events[-1].response.error is not None
    assert events[-1].response.error.code == "server_error"
    assert usage_row(gateway, request_id)["status"] == 502


# Tools and native pass-through, through a gateway of this module's own.


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeResponsesUpstream]:
    server = FakeResponsesUpstream()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def responses_gateway(
    upstream: FakeResponsesUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    workdir: Path = tmp_path_factory.mktemp("gw-responses")
    key = new_key()
    config = f"""
providers:
  - name: compat
    type: openai_compatible
    base_url: {upstream.base_url}
    timeout: 5
  - name: native
    type: openai
    base_url: {upstream.base_url}
    api_key: native-secret
    timeout: 5
models:
  - name: agent
    routes: [{{provider: compat, model: tools}}]
  - name: truncating
    routes: [{{provider: compat, model: truncated}}]
  - name: agent-native
    routes: [{{provider: native, model: gpt-native}}]
  - name: native-breaking
    routes: [{{provider: native, model: native-break}}]
tenants:
  - name: ci
    api_keys: ["{key}"]
"""
    with database("sqlite", workdir) as url:
        gw = Gateway(workdir=workdir, database_url=url, config=config, tenant_key=key)
        gw.start()
        try:
            yield gw
        finally:
            gw.stop()


def test_tool_calls_come_back_as_function_call_items(
    responses_gateway: Gateway, upstream: FakeResponsesUpstream
) -> None:
    response = client(responses_gateway).responses.create(
        model="agent",
        input="Weather and time in Paris?",
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice="required",
    )
    calls = [(i.call_id, i.name, i.arguments) for i in response.output if i.type == "function_call"]
    assert calls == [
        ("call_weather", "get_weather", '{"city":"Paris"}'),
        ("call_time", "get_time", '{"zone":"CET"}'),
    ]
    assert response.output_text == ""
    sent = upstream.last("/chat/completions")
    assert sent["model"] == "tools" and sent["tool_choice"] == "required"
    assert sent["tools"][0] == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": WEATHER_TOOL["parameters"],
        },
    }


def test_streamed_tool_calls(responses_gateway: Gateway) -> None:
    request_id, headers = traced()
    stream = client(responses_gateway).responses.create(
        model="agent",
        input="Weather and time in Paris?",
        tools=[WEATHER_TOOL, TIME_TOOL],
        stream=True,
        extra_headers=headers,
    )
    events = list(stream)
    done = [e.arguments for e in events if e.type == "response.function_call_arguments.done"]
    assert done == ['{"city":"Paris"}', '{"zone":"CET"}']
    added = [e.item for e in events if e.type == "response.output_item.added"]
    assert [(i.type, getattr(i, "call_id", None)) for i in added] == [
        ("function_call", "call_weather"),
        ("function_call", "call_time"),
    ]
    final = events[-1]
    assert final.type == "response.completed"
    assert [i.type for i in final.response.output] == ["function_call", "function_call"]
    assert final.response.usage is not None
    assert final.response.usage.output_tokens_details.reasoning_tokens == CHAT_USAGE["reasoning"]
    row = usage_row(responses_gateway, request_id)
    assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]) == (
        CHAT_USAGE["prompt"],
        CHAT_USAGE["completion"],
        CHAT_USAGE["cached"],
    )


def test_a_tool_round_trip_sends_the_results_back(
    responses_gateway: Gateway, upstream: FakeResponsesUpstream
) -> None:
    sdk = client(responses_gateway)
    conversation: list[Any] = [{"role": "user", "content": "Weather and time in Paris?"}]
    first = sdk.responses.create(
        model="agent",
        input=conversation,
        tools=[WEATHER_TOOL, TIME_TOOL],
    )
    conversation += [item.model_dump(exclude_none=True) for item in first.output]
    conversation += [
        {"type": "function_call_output", "call_id": "call_weather", "output": "sunny"},
        {"type": "function_call_output", "call_id": "call_time", "output": "noon"},
    ]
    second = sdk.responses.create(
        model="agent",
        input=conversation,
        tools=[WEATHER_TOOL, TIME_TOOL],
    )
    assert second.output_text == FINAL_TEXT
    messages = upstream.last("/chat/completions")["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_weather",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            },
            {
                "id": "call_time",
                "type": "function",
                "function": {"name": "get_time", "arguments": '{"zone":"CET"}'},
            },
        ],
    }
    assert messages[2:] == [
        {"role": "tool", "tool_call_id": "call_weather", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_time", "content": "noon"},
    ]


def test_a_truncated_answer_is_incomplete(responses_gateway: Gateway) -> None:
    response = client(responses_gateway).responses.create(model="truncating", input="Hi")
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"


def test_an_openai_provider_gets_the_request_as_it_came(
    responses_gateway: Gateway, upstream: FakeResponsesUpstream
) -> None:
    request_id, headers = traced()
    response = client(responses_gateway).responses.create(
        model="agent-native",
        input="Hi",
        previous_response_id="resp_earlier",  # OpenAI keeps this state itself
        tools=[{"type": "web_search"}],
        extra_headers=headers,
    )
    assert response.output_text == "".join(NATIVE_TEXT)
    assert response.id == "resp_upstream"
    sent = upstream.last("/responses")
    assert sent == {
        "model": "gpt-native",
        "input": "Hi",
        "previous_response_id": "resp_earlier",
        "tools": [{"type": "web_search"}],
    }
    row = usage_row(responses_gateway, request_id)
    assert (row["provider"], row["stream"]) == ("native", False)
    assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]) == (
        NATIVE_USAGE["input"],
        NATIVE_USAGE["output"],
        NATIVE_USAGE["cached"],
    )


def test_an_openai_provider_stream_is_relayed_untouched(
    responses_gateway: Gateway, upstream: FakeResponsesUpstream
) -> None:
    request_id, headers = traced()
    stream = client(responses_gateway).responses.create(
        model="agent-native", input="Hi", stream=True, extra_headers=headers
    )
    events = list(stream)
    assert [e.delta for e in events if e.type == "response.output_text.delta"] == NATIVE_TEXT
    assert all(getattr(e, "item_id", "msg_upstream") == "msg_upstream" for e in events)
    assert events[-1].type == "response.completed"
    assert events[-1].response.id == "resp_upstream"
    assert upstream.last("/responses")["stream"] is True
    row = usage_row(responses_gateway, request_id)
    assert (row["status"], row["stream"]) == (200, True)
    assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]) == (
        NATIVE_USAGE["input"],
        NATIVE_USAGE["output"],
        NATIVE_USAGE["cached"],
    )


def test_an_openai_provider_stream_that_breaks_ends_with_an_error_event(
    responses_gateway: Gateway,
) -> None:
    request_id, headers = traced()
    stream = client(responses_gateway).responses.create(
        model="native-breaking", input="Hi", stream=True, extra_headers=headers
    )
    events = list(stream)
    last = events[-1]
    assert last.type == "error"
    assert last.sequence_number == events[-2].sequence_number + 1
    assert "broke the stream" in last.message
    assert usage_row(responses_gateway, request_id)["status"] == 502
