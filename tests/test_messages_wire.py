"""Anthropic Messages <-> pivot translation rules, one by one."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from agentwatch.errors import GatewayError, InvalidRequest, UpstreamError, UpstreamRateLimited
from agentwatch.frontends.anthropic_messages import anthropic_error_body
from agentwatch.frontends.messages_wire import (
    IMAGE_TOKEN_ESTIMATE,
    check_request,
    estimate_input_tokens,
    to_anthropic_message,
    to_chat_request,
)
from agentwatch.providers.base import Usage

USER = {"role": "user", "content": "hi"}


def request(**fields: Any) -> dict[str, Any]:
    return {"model": "alias", "max_tokens": 100, "messages": [USER], **fields}


def translate(**fields: Any) -> dict[str, Any]:
    payload = request(**fields)
    check_request(payload)
    return to_chat_request(payload, "upstream-model")


# --- request checks ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"max_tokens": None}, "'max_tokens' is required"),
        ({"max_tokens": 0}, "'max_tokens'"),
        ({"max_tokens": True}, "'max_tokens'"),
        ({"max_tokens": "100"}, "'max_tokens'"),
        ({"messages": None}, "'messages' is required"),
        ({"messages": []}, "'messages' is required"),
        ({"messages": "hi"}, "'messages' is required"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages[0]: 'role'"),
        ({"messages": ["hi"]}, "messages[0]: 'role'"),
        ({"messages": [USER, {"role": "assistant"}]}, "messages[1]: 'content'"),
        ({"messages": [{"role": "user", "content": [{"text": "x"}]}]}, "messages[0]: 'content'"),
        ({"system": 3}, "'system'"),
        ({"stream": "yes"}, "'stream'"),
        ({"tools": {"name": "x"}}, "'tools'"),
    ],
)
def test_malformed_requests_are_refused(changes: dict[str, Any], fragment: str) -> None:
    payload = request()
    for name, value in changes.items():
        if value is None:
            payload.pop(name)
        else:
            payload[name] = value
    with pytest.raises(InvalidRequest) as caught:
        check_request(payload)
    assert fragment in caught.value.message
    assert caught.value.status == 400


def test_counting_needs_no_max_tokens() -> None:
    payload = {"model": "alias", "messages": [USER]}
    check_request(payload, counting=True)
    with pytest.raises(InvalidRequest):
        check_request(payload)


# --- requests ---------------------------------------------------------------------------


def test_model_and_max_tokens() -> None:
    chat = translate()
    assert chat == {
        "model": "upstream-model",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
    }


def test_system_string_and_blocks_become_one_system_message() -> None:
    assert translate(system="be brief")["messages"][0] == {
        "role": "system",
        "content": "be brief",
    }
    blocks = [{"type": "text", "text": "one"}, {"type": "text", "text": "two", "cache_control": {}}]
    assert translate(system=blocks)["messages"][0] == {"role": "system", "content": "one\n\ntwo"}
    with pytest.raises(InvalidRequest, match=r"system\[0\]"):
        translate(system=[{"type": "image", "source": {}}])


def test_text_blocks_become_a_string() -> None:
    content = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    chat = translate(messages=[{"role": "user", "content": content}])
    assert chat["messages"] == [{"role": "user", "content": "a\n\nb"}]


def test_images_become_image_url_parts() -> None:
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "text", "text": "what are these?"},
    ]
    chat = translate(messages=[{"role": "user", "content": content}])
    assert chat["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                {"type": "text", "text": "what are these?"},
            ],
        }
    ]
    bad = [{"type": "image", "source": {"type": "file", "file_id": "f1"}}]
    with pytest.raises(InvalidRequest, match=r"messages\[0\]\.content\[0\]"):
        translate(messages=[{"role": "user", "content": bad}])


def test_text_documents_become_text_and_other_blocks_are_refused() -> None:
    document = {"type": "document", "source": {"type": "text", "data": "the doc"}}
    chat = translate(messages=[{"role": "user", "content": [document]}])
    assert chat["messages"] == [{"role": "user", "content": "the doc"}]
    pdf = {"type": "document", "source": {"type": "base64", "data": "JVBER"}}
    with pytest.raises(InvalidRequest, match="only supported by Anthropic"):
        translate(messages=[{"role": "user", "content": [pdf]}])


def test_assistant_tool_use_becomes_tool_calls() -> None:
    content = [
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_2", "name": "time", "input": {}},
    ]
    chat = translate(messages=[USER, {"role": "assistant", "content": content}])
    assert chat["messages"][1] == {
        "role": "assistant",
        "content": "Let me look.",
        "tool_calls": [
            {
                "id": "toolu_1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
            },
            {"id": "toolu_2", "type": "function", "function": {"name": "time", "arguments": "{}"}},
        ],
    }


def test_assistant_turn_with_only_tool_calls_has_null_content() -> None:
    content = [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]
    message = translate(messages=[USER, {"role": "assistant", "content": content}])["messages"][1]
    assert message["content"] is None and len(message["tool_calls"]) == 1


def test_thinking_only_assistant_turn_keeps_an_empty_content() -> None:
    content = [{"type": "redacted_thinking", "data": "xyz"}]
    message = translate(messages=[USER, {"role": "assistant", "content": content}])["messages"][1]
    assert message == {"role": "assistant", "content": ""}


def test_malformed_tool_use_is_refused() -> None:
    content = [{"type": "tool_use", "id": "t", "name": "f", "input": "not an object"}]
    with pytest.raises(InvalidRequest, match=r"messages\[1\]\.content\[0\]"):
        translate(messages=[USER, {"role": "assistant", "content": content}])


def test_tool_results_become_tool_messages_before_the_turns_text() -> None:
    content = [
        {"type": "text", "text": "here you go"},
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
        {
            "type": "tool_result",
            "tool_use_id": "toolu_2",
            "content": [{"type": "text", "text": "12:00"}, {"type": "text", "text": "UTC"}],
        },
        {"type": "tool_result", "tool_use_id": "toolu_3", "content": "boom", "is_error": True},
        {"type": "tool_result", "tool_use_id": "toolu_4"},
    ]
    chat = translate(messages=[{"role": "user", "content": content}])
    assert chat["messages"] == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "12:00\n\nUTC"},
        {"role": "tool", "tool_call_id": "toolu_3", "content": "Error: boom"},
        {"role": "tool", "tool_call_id": "toolu_4", "content": ""},
        {"role": "user", "content": "here you go"},
    ]


def test_a_turn_of_only_tool_results_adds_no_user_message() -> None:
    content = [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]
    chat = translate(messages=[{"role": "user", "content": content}])
    assert chat["messages"] == [{"role": "tool", "tool_call_id": "t", "content": "ok"}]


def test_images_a_tool_returned_follow_in_a_user_message() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "B"}}
    content = [
        {
            "type": "tool_result",
            "tool_use_id": "t",
            "content": [{"type": "text", "text": "x"}, image],
        }
    ]
    chat = translate(messages=[{"role": "user", "content": content}])
    assert chat["messages"] == [
        {"role": "tool", "tool_call_id": "t", "content": "x"},
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,B"}}],
        },
    ]


def test_tool_result_needs_its_tool_use_id() -> None:
    with pytest.raises(InvalidRequest, match="tool_use_id"):
        translate(messages=[{"role": "user", "content": [{"type": "tool_result"}]}])


WEATHER_TOOL = {
    "name": "weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def test_tools_become_function_tools() -> None:
    bare = {"name": "ping", "input_schema": {"type": "object"}, "type": "custom"}
    chat = translate(tools=[WEATHER_TOOL, bare])
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "Weather for a city",
                "parameters": WEATHER_TOOL["input_schema"],
            },
        },
        {"type": "function", "function": {"name": "ping", "parameters": {"type": "object"}}},
    ]
    assert "tool_choice" not in chat and "parallel_tool_calls" not in chat


def test_server_tools_and_schemaless_tools_are_refused() -> None:
    with pytest.raises(InvalidRequest, match=r"tools\[0\]: 'web_search_20250305'"):
        translate(tools=[{"type": "web_search_20250305", "name": "web_search"}])
    with pytest.raises(InvalidRequest, match=r"tools\[0\]"):
        translate(tools=[{"name": "x"}])


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        (
            {"type": "tool", "name": "weather"},
            {"type": "function", "function": {"name": "weather"}},
        ),
    ],
)
def test_tool_choice(choice: dict[str, Any], expected: object) -> None:
    chat = translate(tools=[WEATHER_TOOL], tool_choice=choice)
    assert chat["tool_choice"] == expected
    assert "parallel_tool_calls" not in chat


def test_disable_parallel_tool_use() -> None:
    choice = {"type": "auto", "disable_parallel_tool_use": True}
    chat = translate(tools=[WEATHER_TOOL], tool_choice=choice)
    assert chat["tool_choice"] == "auto" and chat["parallel_tool_calls"] is False


def test_bad_tool_choice_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="tool_choice"):
        translate(tools=[WEATHER_TOOL], tool_choice={"type": "tool"})


def test_tool_choice_without_tools_is_not_sent() -> None:
    assert "tool_choice" not in translate(tool_choice={"type": "none"})


def test_sampling_stop_user_stream_and_dropped_fields() -> None:
    chat = translate(
        temperature=0.2,
        top_p=0.9,
        top_k=40,
        stop_sequences=["END", "STOP"],
        metadata={"user_id": "u-42"},
        stream=True,
        thinking={"type": "enabled", "budget_tokens": 1024},
        service_tier="auto",
    )
    assert chat["temperature"] == 0.2 and chat["top_p"] == 0.9
    assert chat["stop"] == ["END", "STOP"]
    assert chat["user"] == "u-42"
    assert chat["stream"] is True
    for dropped in ("top_k", "thinking", "service_tier", "metadata", "stop_sequences"):
        assert dropped not in chat


def test_no_stream_flag_unless_asked() -> None:
    assert "stream" not in translate(stream=False)


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"temperature": "hot"}, "'temperature'"),
        ({"stop_sequences": "END"}, "'stop_sequences'"),
        ({"stop_sequences": [1]}, "'stop_sequences'"),
    ],
)
def test_bad_options_are_refused(fields: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidRequest, match=fragment):
        translate(**fields)


# --- responses --------------------------------------------------------------------------


def completion(message: dict[str, Any], finish: str | None = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-abc123",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }


def test_text_response() -> None:
    usage = Usage(prompt_tokens=20, completion_tokens=5, cached_tokens=4, cache_write_tokens=6)
    message = to_anthropic_message(
        completion({"role": "assistant", "content": "Hello"}), "my-alias", usage
    )
    assert message == {
        "id": "msg_abc123",
        "type": "message",
        "role": "assistant",
        "model": "my-alias",
        "content": [{"type": "text", "text": "Hello"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "output_tokens": 5,
            "cache_read_input_tokens": 4,
            "cache_creation_input_tokens": 6,
        },
    }


def test_tool_call_response() -> None:
    calls = [
        {"id": "call_1", "type": "function", "function": {"name": "a", "arguments": '{"x": 1}'}},
        {"id": "call_2", "type": "function", "function": {"name": "b", "arguments": "{not json"}},
        {"id": "call_3", "type": "function", "function": {"name": "c", "arguments": "[1]"}},
    ]
    response = completion({"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls")
    message = to_anthropic_message(response, "m", None)
    assert message["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "a", "input": {"x": 1}},
        {"type": "tool_use", "id": "call_2", "name": "b", "input": {}},
        {"type": "tool_use", "id": "call_3", "name": "c", "input": {}},
    ]
    assert message["stop_reason"] == "tool_use"
    assert message["usage"] == {
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }


@pytest.mark.parametrize(
    ("finish", "reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("function_call", "tool_use"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
    ],
)
def test_stop_reasons(finish: str | None, reason: str) -> None:
    message = to_anthropic_message(completion({"content": "x"}, finish), "m", None)
    assert message["stop_reason"] == reason


def test_tool_calls_ending_with_stop_are_still_tool_use() -> None:
    calls = [{"id": "c", "function": {"name": "a", "arguments": "{}"}}]
    message = to_anthropic_message(completion({"tool_calls": calls}, "stop"), "m", None)
    assert message["stop_reason"] == "tool_use"


def test_message_ids() -> None:
    no_id = completion({"content": "x"})
    del no_id["id"]
    generated = to_anthropic_message(no_id, "m", None)["id"]
    assert generated.startswith("msg_") and len(generated) > 10
    native = completion({"content": "x"}) | {"id": "msg_01XYZ"}
    assert to_anthropic_message(native, "m", None)["id"] == "msg_01XYZ"


def test_empty_completion_has_no_content() -> None:
    message = to_anthropic_message({"id": "x", "choices": []}, "m", None)
    assert message["content"] == [] and message["stop_reason"] == "end_turn"


# --- errors and counting ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (InvalidRequest("bad"), "invalid_request_error"),
        (GatewayError("who", status=401), "authentication_error"),
        (GatewayError("no", status=403), "permission_error"),
        (GatewayError("where", status=404), "not_found_error"),
        (GatewayError("wrong method", status=405), "invalid_request_error"),
        (GatewayError("big", status=413), "request_too_large"),
        (UpstreamRateLimited("slow down"), "rate_limit_error"),
        (GatewayError("bug"), "api_error"),
        (GatewayError("not yet", status=501), "api_error"),
        (UpstreamError("upstream failed"), "api_error"),
        (GatewayError("busy", status=503), "overloaded_error"),
        (GatewayError("timeout", status=504), "api_error"),
        (GatewayError("busy", status=529), "overloaded_error"),
    ],
)
def test_error_body_type_follows_the_status(error: GatewayError, kind: str) -> None:
    assert orjson.loads(anthropic_error_body(error)) == {
        "type": "error",
        "error": {"type": kind, "message": error.message},
    }


def test_estimate_is_a_quarter_of_the_json_characters() -> None:
    payload = {
        "model": "m",
        "system": "s" * 38,
        "messages": [{"role": "user", "content": "é" * 100}],
    }
    chars = len(orjson.dumps("s" * 38).decode()) + len(orjson.dumps(payload["messages"]).decode())
    assert estimate_input_tokens(payload) == -(-chars // 4)
    with_tools = payload | {"tools": [WEATHER_TOOL]}
    assert estimate_input_tokens(with_tools) > estimate_input_tokens(payload)


def test_estimate_counts_images_flat_not_by_their_size() -> None:
    def with_image(data: str) -> dict[str, Any]:
        image = {"type": "image", "source": {"type": "base64", "media_type": "p", "data": data}}
        result = {"type": "tool_result", "tool_use_id": "t", "content": [image]}
        return {"messages": [{"role": "user", "content": [image, result]}]}

    small, large = (
        estimate_input_tokens(with_image("A")),
        estimate_input_tokens(with_image("A" * 4000)),
    )
    assert small == large
    without = {"messages": [{"role": "user", "content": []}]}
    assert small >= 2 * IMAGE_TOKEN_ESTIMATE > estimate_input_tokens(without)
