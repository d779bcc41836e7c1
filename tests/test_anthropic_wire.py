"""The pure Anthropic translations, one gotcha at a time: no network, no gateway."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentwatch.errors import (
    InvalidRequest,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
)
from agentwatch.providers.anthropic_errors import error_from_event, error_from_response
from agentwatch.providers.anthropic_stream import ChunkTranslator, event_data
from agentwatch.providers.anthropic_wire import (
    DEFAULT_MAX_TOKENS,
    to_anthropic_request,
    to_chat_completion,
    usage_from_anthropic,
)
from agentwatch.providers.base import Usage

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def request(*messages: dict[str, Any], **options: Any) -> dict[str, Any]:
    return to_anthropic_request({"model": "claude-x", "messages": list(messages), **options})


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def text(value: str) -> dict[str, str]:
    return {"type": "text", "text": value}


def test_system_and_developer_messages_are_lifted_and_joined() -> None:
    sent = request(
        {"role": "system", "content": "Be brief."},
        user("Hi"),
        {"role": "developer", "content": [text("Answer in French.")]},
    )
    assert sent["system"] == "Be brief.\n\nAnswer in French."
    assert sent["messages"] == [{"role": "user", "content": [text("Hi")]}]


def test_system_with_cache_control_keeps_its_blocks() -> None:
    marked = {**text("Long policy."), "cache_control": {"type": "ephemeral"}}
    sent = request({"role": "system", "content": [marked]}, user("Hi"))
    assert sent["system"] == [marked]


def test_max_tokens_defaults_and_prefers_max_completion_tokens() -> None:
    assert request(user("Hi"))["max_tokens"] == DEFAULT_MAX_TOKENS
    assert request(user("Hi"), max_tokens=50)["max_tokens"] == 50
    assert request(user("Hi"), max_tokens=50, max_completion_tokens=70)["max_tokens"] == 70


def test_sampling_stop_user_and_stream_carry_over_and_openai_only_options_do_not() -> None:
    sent = request(
        user("Hi"),
        temperature=0.2,
        top_p=0.9,
        stop="END",
        user="end-user-7",
        stream=True,
        n=1,
        seed=3,
        presence_penalty=0.1,
    )
    assert sent == {
        "model": "claude-x",
        "messages": [{"role": "user", "content": [text("Hi")]}],
        "max_tokens": DEFAULT_MAX_TOKENS,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "end-user-7"},
        "stream": True,
    }
    assert request(user("Hi"), stop=["a", "b"])["stop_sequences"] == ["a", "b"]


def test_images_from_data_urls_and_http_urls() -> None:
    parts = [
        text("What is this?"),
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]
    (turn,) = request(user(parts))["messages"]
    assert turn["content"][1:] == [
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


@pytest.mark.parametrize("url", ["data:image/png,rawbytes", "ftp://example.com/a.png"])
def test_images_anthropic_cannot_fetch_are_rejected_here(url: str) -> None:
    with pytest.raises(InvalidRequest):
        request(user([{"type": "image_url", "image_url": {"url": url}}]))


def test_empty_text_is_dropped_because_anthropic_rejects_it() -> None:
    sent = request(user([text(""), text("Hi")]))
    assert sent["messages"] == [{"role": "user", "content": [text("Hi")]}]


def test_tools_become_input_schemas() -> None:
    bare = {"type": "function", "function": {"name": "now"}}
    sent = request(user("Weather?"), tools=[WEATHER_TOOL, bare])
    assert sent["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": WEATHER_TOOL["function"]["parameters"],  # type: ignore[index]
        },
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in sent


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "tool", "name": "get_weather"},
        ),
    ],
)
def test_tool_choice(choice: Any, expected: dict[str, Any]) -> None:
    sent = request(user("Weather?"), tools=[WEATHER_TOOL], tool_choice=choice)
    assert sent["tool_choice"] == expected


def test_parallel_tool_calls_false_disables_parallel_tool_use() -> None:
    sent = request(user("Weather?"), tools=[WEATHER_TOOL], parallel_tool_calls=False)
    assert sent["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    sent = request(
        user("Weather?"), tools=[WEATHER_TOOL], tool_choice="required", parallel_tool_calls=False
    )
    assert sent["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


def assistant_call(call_id: str, arguments: str) -> dict[str, Any]:
    function = {"name": "get_weather", "arguments": arguments}
    return {"id": call_id, "type": "function", "function": function}


def tool_message(call_id: str, content: Any) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def test_tool_calls_become_tool_use_blocks_with_object_inputs() -> None:
    sent = request(
        user("Weather in Paris and Rome?"),
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                assistant_call("call_1", '{"city": "Paris"}'),
                assistant_call("call_2", ""),
                assistant_call("call_3", '{"city": "Ro'),
            ],
        },
    )
    assistant = sent["messages"][1]
    assert assistant["role"] == "assistant"
    assert assistant["content"] == [
        text("Checking."),
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {}},
        # A truncated call is kept, wrapped in an object, rather than failing the conversation.
        {
            "type": "tool_use",
            "id": "call_3",
            "name": "get_weather",
            "input": {"arguments": '{"city": "Ro'},
        },
    ]


def test_assistant_tool_calls_without_text_have_only_tool_use_blocks() -> None:
    sent = request(
        user("Weather?"),
        {"role": "assistant", "content": None, "tool_calls": [assistant_call("c", "{}")]},
    )
    assert [b["type"] for b in sent["messages"][1]["content"]] == ["tool_use"]


def test_consecutive_tool_results_and_a_following_user_message_share_one_user_turn() -> None:
    sent = request(
        user("Weather in Paris and Rome?"),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [assistant_call("call_1", "{}"), assistant_call("call_2", "{}")],
        },
        tool_message("call_1", "sunny"),
        tool_message("call_2", [text("rainy")]),
        user("And tomorrow?"),
    )
    assert [turn["role"] for turn in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": [text("rainy")]},
        text("And tomorrow?"),
    ]


def test_consecutive_same_role_messages_are_merged() -> None:
    sent = request(user("One."), user("Two."))
    assert sent["messages"] == [{"role": "user", "content": [text("One."), text("Two.")]}]


@pytest.mark.parametrize(
    "message",
    [
        {"role": "function", "name": "f", "content": "x"},
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]},
        {"role": "tool", "content": "no id"},
    ],
)
def test_what_anthropic_cannot_take_is_a_400_here(message: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        request(message)


def anthropic_message(content: list[dict[str, Any]], stop_reason: str) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": content,
        "stop_reason": stop_reason,
        "usage": {
            "input_tokens": 10,
            "output_tokens": 4,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 20,
        },
    }


def test_response_text_blocks_are_joined_and_thinking_dropped() -> None:
    message = anthropic_message(
        [{"type": "thinking", "thinking": "hmm", "signature": "s"}, text("Hel"), text("lo")],
        "end_turn",
    )
    completion = to_chat_completion(message, created=123)
    assert completion["id"] == "msg_1" and completion["object"] == "chat.completion"
    assert completion["created"] == 123 and completion["model"] == "claude-x"
    (choice,) = completion["choices"]
    assert choice["message"] == {"role": "assistant", "content": "Hello"}
    assert choice["finish_reason"] == "stop"


def test_response_tool_use_blocks_become_tool_calls() -> None:
    call = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
    completion = to_chat_completion(anthropic_message([call], "tool_use"), created=0)
    (choice,) = completion["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (converted,) = choice["message"]["tool_calls"]
    assert converted["id"] == "toolu_1" and converted["type"] == "function"
    assert converted["function"]["name"] == "get_weather"
    assert json.loads(converted["function"]["arguments"]) == {"city": "Paris"}


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
def test_stop_reason_to_finish_reason(stop_reason: str, finish_reason: str) -> None:
    completion = to_chat_completion(anthropic_message([text("x")], stop_reason), created=0)
    assert completion["choices"][0]["finish_reason"] == finish_reason


def test_usage_counts_cache_reads_and_writes_as_prompt_tokens() -> None:
    message = anthropic_message([text("x")], "end_turn")
    assert to_chat_completion(message, created=0)["usage"] == {
        "prompt_tokens": 130,
        "completion_tokens": 4,
        "total_tokens": 134,
        "prompt_tokens_details": {"cached_tokens": 100},
    }
    assert usage_from_anthropic(message["usage"]) == Usage(
        prompt_tokens=130, completion_tokens=4, cached_tokens=100, cache_write_tokens=20
    )


def sse(name: str, **data: Any) -> bytes:
    return f"event: {name}\ndata: ".encode() + json.dumps({"type": name, **data}).encode()


def tool_start(index: int, call_id: str) -> bytes:
    block = {"type": "tool_use", "id": call_id, "name": "get_weather", "input": {}}
    return sse("content_block_start", index=index, content_block=block)


def json_delta(index: int, piece: str) -> bytes:
    delta = {"type": "input_json_delta", "partial_json": piece}
    return sse("content_block_delta", index=index, delta=delta)


# Recorded shape of a real stream: text, then two tool calls; a ping and a thinking signature
# the pivot has no place for; output usage reported cumulatively in two message_deltas.
TWO_TOOL_CALLS = [
    sse(
        "message_start",
        message={
            "id": "msg_s",
            "model": "claude-x",
            "content": [],
            "usage": {
                "input_tokens": 10,
                "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 20,
                "output_tokens": 1,
            },
        },
    ),
    sse("content_block_start", index=0, content_block={"type": "text", "text": ""}),
    sse("ping"),
    sse("content_block_delta", index=0, delta={"type": "text_delta", "text": "Checking."}),
    sse("content_block_delta", index=0, delta={"type": "signature_delta", "signature": "x"}),
    sse("content_block_stop", index=0),
    tool_start(1, "toolu_a"),
    json_delta(1, ""),
    json_delta(1, '{"city": '),
    json_delta(1, '"Paris"}'),
    sse("content_block_stop", index=1),
    tool_start(2, "toolu_b"),
    json_delta(2, '{"city": "Rome"}'),
    sse("content_block_stop", index=2),
    sse("message_delta", delta={"stop_reason": "tool_use"}, usage={"output_tokens": 30}),
    sse("message_delta", delta={"stop_reason": "tool_use"}, usage={"output_tokens": 42}),
    sse("message_stop"),
]


def translate(events: list[bytes], *, forward_usage: bool) -> tuple[ChunkTranslator, list[Any]]:
    translator = ChunkTranslator("claude", forward_usage=forward_usage, created=7)
    chunks = []
    for raw in events:
        data = event_data(raw, "claude")
        assert data is not None
        chunks += translator.feed(data)
    return translator, chunks


def test_stream_translation_of_text_and_two_tool_calls() -> None:
    translator, chunks = translate(TWO_TOOL_CALLS, forward_usage=False)
    assert translator.finished
    assert all(c["id"] == "msg_s" and c["object"] == "chat.completion.chunk" for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert deltas[1] == {"content": "Checking."}
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0] == {
        "index": 0,
        "id": "toolu_a",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    arguments: dict[int, str] = {}
    for call in calls:
        arguments[call["index"]] = arguments.get(call["index"], "") + call["function"]["arguments"]
    # Indexed by tool call, not by Anthropic's block index (which counts the text block too).
    assert {i: json.loads(a) for i, a in arguments.items()} == {
        0: {"city": "Paris"},
        1: {"city": "Rome"},
    }
    assert [c["choices"][0]["finish_reason"] for c in chunks[-2:]] == ["tool_calls", "tool_calls"]
    assert all(c["choices"] for c in chunks)


def test_stream_usage_takes_the_latest_cumulative_output_and_is_forwarded_when_asked() -> None:
    translator, chunks = translate(TWO_TOOL_CALLS, forward_usage=True)
    assert translator.usage == Usage(
        prompt_tokens=130, completion_tokens=42, cached_tokens=100, cache_write_tokens=20
    )
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 42
    assert chunks[-1]["usage"]["prompt_tokens_details"] == {"cached_tokens": 100}


def test_stream_usage_before_message_delta_counts_content_events() -> None:
    # Cut after the text delta and two argument pieces (the empty piece is not forwarded): the
    # placeholder output count of 1 from message_start is raised to the 3 events streamed.
    translator, _ = translate(TWO_TOOL_CALLS[:10], forward_usage=False)
    assert translator.content_events == 3
    assert translator.usage == Usage(
        prompt_tokens=130, completion_tokens=3, cached_tokens=100, cache_write_tokens=20
    )


def test_ping_and_unknown_events_produce_nothing() -> None:
    translator = ChunkTranslator("claude", forward_usage=True, created=0)
    assert translator.feed({"type": "ping"}) == []
    assert translator.feed({"type": "content_block_stop", "index": 0}) == []
    assert translator.feed({"type": "some_future_event"}) == []
    assert translator.usage is None and not translator.finished


def test_event_data_reads_the_data_and_falls_back_to_the_event_name() -> None:
    assert event_data(b'event: ping\ndata: {"type": "ping"}', "claude") == {"type": "ping"}
    assert event_data(b": keep-alive comment", "claude") is None
    assert event_data(b"event: ping\ndata: {}", "claude") == {"type": "ping"}
    with pytest.raises(UpstreamError):
        event_data(b"event: ping\ndata: {not json", "claude")


@pytest.mark.parametrize(
    ("kind", "error_class", "status"),
    [
        ("overloaded_error", UpstreamOverloaded, 503),
        ("rate_limit_error", UpstreamRateLimited, 429),
        ("api_error", UpstreamError, 502),
    ],
)
def test_error_event_mid_stream_raises_the_mapped_error(
    kind: str, error_class: type[UpstreamError], status: int
) -> None:
    translator = ChunkTranslator("claude", forward_usage=False, created=0)
    with pytest.raises(error_class) as caught:
        translator.feed({"type": "error", "error": {"type": kind, "message": "Overloaded"}})
    assert caught.value.status == status
    assert "mid-stream: Overloaded" in caught.value.message


def error_body(kind: str, message: str) -> bytes:
    return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()


@pytest.mark.parametrize(
    ("status", "kind", "message", "error_class", "gateway_status", "code"),
    [
        (400, "invalid_request_error", "max_tokens: Field required", UpstreamRejected, 400,
         "upstream_rejected"),
        (400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum",
         UpstreamRejected, 400, "context_length_exceeded"),
        (401, "authentication_error", "invalid x-api-key", UpstreamError, 502,
         "upstream_auth_failed"),
        (403, "permission_error", "no access", UpstreamError, 502, "upstream_auth_failed"),
        (404, "not_found_error", "model: claude-9", UpstreamRejected, 404, "upstream_rejected"),
        (413, "request_too_large", "too big", UpstreamRejected, 400, "request_too_large"),
        (429, "rate_limit_error", "slow down", UpstreamRateLimited, 429, "rate_limit_exceeded"),
        (500, "api_error", "Internal server error", UpstreamError, 502, "upstream_error"),
        (504, "timeout_error", "timed out", UpstreamTimeout, 504, "upstream_timeout"),
        (529, "overloaded_error", "Overloaded", UpstreamOverloaded, 503, "upstream_overloaded"),
    ],
)  # fmt: skip
def test_http_errors_map_to_gateway_errors(
    status: int,
    kind: str,
    message: str,
    error_class: type[UpstreamError],
    gateway_status: int,
    code: str,
) -> None:
    error = error_from_response("claude", status, error_body(kind, message), retry_after="7")
    assert type(error) is error_class
    assert (error.status, error.code) == (gateway_status, code)
    assert message in error.message and str(status) in error.message
    assert error.retryable is not isinstance(error, UpstreamRejected)


def test_rate_limit_keeps_retry_after_and_other_errors_do_not_invent_one() -> None:
    limited = error_from_response("c", 429, error_body("rate_limit_error", "x"), retry_after="7")
    assert limited.headers == {"retry-after": "7"}
    unknown = error_from_response("c", 429, b"<html>busy</html>", retry_after=None)
    assert isinstance(unknown, UpstreamRateLimited) and unknown.headers == {}
    assert "busy" in unknown.message


def test_error_event_without_a_known_type_is_a_retryable_upstream_error() -> None:
    error = error_from_event("claude", {"type": "error", "error": {"type": "weird"}})
    assert type(error) is UpstreamError and error.retryable
