"""Responses API requests onto the pivot and chat completions back: every translation rule."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.responses import Response

from agentwatch.errors import InvalidRequest
from agentwatch.frontends.responses_wire import chat_request, response_from_chat, response_shell
from agentwatch.providers.base import Usage

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": True,
}


def translate(**fields: Any) -> dict[str, Any]:
    return chat_request({"model": "alias", **fields})


def rejected(**fields: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        translate(**fields)
    assert caught.value.status == 400
    return caught.value


def test_string_input_is_one_user_message_after_the_instructions() -> None:
    chat = translate(input="Hello", instructions="Be brief")
    assert chat == {
        "model": "alias",
        "messages": [
            {"role": "system", "content": "Be brief"},
            {"role": "user", "content": "Hello"},
        ],
    }


def test_message_items_keep_their_roles_and_developer_becomes_system() -> None:
    chat = translate(
        input=[
            {"role": "developer", "content": "Rules"},
            {"type": "message", "role": "user", "content": "Hi"},
            {"role": "assistant", "content": [{"type": "output_text", "text": "Hello"}]},
            {"role": "system", "content": "More rules"},
        ]
    )
    assert chat["messages"] == [
        {"role": "system", "content": "Rules"},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "system", "content": "More rules"},
    ]


def test_content_parts_become_chat_parts_and_images_keep_their_detail() -> None:
    chat = translate(
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {
                        "type": "input_image",
                        "image_url": "data:image/png;base64,AAAA",
                        "detail": "low",
                    },
                ],
            }
        ]
    )
    assert chat["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"},
                },
            ],
        }
    ]


def test_consecutive_function_calls_are_one_assistant_message_then_tool_results() -> None:
    chat = translate(
        input=[
            {"role": "user", "content": "Weather and time?"},
            {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "time", "arguments": '{"z":1}'},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {
                "type": "function_call_output",
                "call_id": "c2",
                "output": [{"type": "input_text", "text": "noon"}],
            },
        ]
    )
    assert chat["messages"][1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": "{}"},
                },
                {
                    "id": "c2",
                    "type": "function",
                    "function": {"name": "time", "arguments": '{"z":1}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "noon"},
    ]


def test_function_calls_join_the_assistant_text_of_the_same_turn() -> None:
    chat = translate(
        input=[
            {"role": "user", "content": "Weather?"},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Checking."}],
            },
            {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
        ]
    )
    assert chat["messages"][1] == {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
        ],
    }
    assert len(chat["messages"]) == 2


def test_reasoning_items_are_dropped() -> None:
    chat = translate(
        input=[
            {"role": "user", "content": "Hi"},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "xyz"},
            {"role": "assistant", "content": "Hello"},
        ]
    )
    assert [m["role"] for m in chat["messages"]] == ["user", "assistant"]


def test_function_tools_are_nested_for_chat_with_choice_and_parallel_flag() -> None:
    chat = translate(
        input="Hi",
        tools=[WEATHER_TOOL, {"type": "function", "name": "bare"}],
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
    )
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": WEATHER_TOOL["parameters"],
                "strict": True,
            },
        },
        {"type": "function", "function": {"name": "bare"}},
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert chat["parallel_tool_calls"] is False
    assert translate(input="Hi", tools=[WEATHER_TOOL], tool_choice="required")["tool_choice"] == (
        "required"
    )


def test_tool_settings_without_tools_are_left_out() -> None:
    chat = translate(input="Hi", tool_choice="auto", parallel_tool_calls=True)
    assert "tool_choice" not in chat and "parallel_tool_calls" not in chat and "tools" not in chat


def test_sampling_limits_and_stream() -> None:
    chat = translate(
        input="Hi", temperature=0.2, top_p=0.9, max_output_tokens=64, stream=True, store=False
    )
    assert chat == {
        "model": "alias",
        "messages": [{"role": "user", "content": "Hi"}],
        "temperature": 0.2,
        "top_p": 0.9,
        "max_tokens": 64,
        "stream": True,
    }
    assert "stream" not in translate(input="Hi", stream=False)


def test_text_formats_become_response_format() -> None:
    assert "response_format" not in translate(input="Hi", text={"format": {"type": "text"}})
    assert translate(input="Hi", text={"format": {"type": "json_object"}})["response_format"] == {
        "type": "json_object"
    }
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    chat = translate(
        input="Hi",
        text={"format": {"type": "json_schema", "name": "thing", "schema": schema, "strict": True}},
    )
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "thing", "schema": schema, "strict": True},
    }


@pytest.mark.parametrize("name", ["previous_response_id", "conversation"])
def test_stored_state_is_refused_clearly(name: str) -> None:
    error = rejected(input="Hi", **{name: "resp_123"})
    assert error.param == name
    assert "does not keep" in error.message and "'input'" in error.message


def test_background_responses_are_refused() -> None:
    assert rejected(input="Hi", background=True).param == "background"


def test_non_function_tools_are_not_supported_on_this_provider() -> None:
    error = rejected(input="Hi", tools=[WEATHER_TOOL, {"type": "web_search"}])
    assert error.param == "tools[1]"
    assert "web_search" in error.message and "not supported on this provider" in error.message


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({}, "input"),
        ({"input": 42}, "input"),
        ({"input": []}, "input"),
        ({"input": ["hi"]}, "input[0]"),
        ({"input": [{"role": "robot", "content": "hi"}]}, "input[0].role"),
        ({"input": [{"role": "user", "content": 7}]}, "input[0].content"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "input[0].content[0]",
        ),
        (
            {
                "input": [
                    {"role": "assistant", "content": [{"type": "input_image", "image_url": "x"}]}
                ]
            },
            "input[0].content[0]",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input[0].content[0]",
        ),
        (
            {"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
            "input[0].call_id",
        ),
        (
            {"input": [{"type": "function_call_output", "call_id": "c", "output": 3}]},
            "input[0].output",
        ),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
        ({"input": "Hi", "instructions": ["x"]}, "instructions"),
        ({"input": "Hi", "tools": {"type": "function"}}, "tools"),
        ({"input": "Hi", "tools": [{"type": "function"}]}, "tools[0].name"),
        ({"input": "Hi", "tools": [WEATHER_TOOL], "tool_choice": "sometimes"}, "tool_choice"),
        ({"input": "Hi", "temperature": "hot"}, "temperature"),
        ({"input": "Hi", "top_p": True}, "top_p"),
        ({"input": "Hi", "max_output_tokens": 0}, "max_output_tokens"),
        ({"input": "Hi", "stream": "yes"}, "stream"),
        ({"input": "Hi", "text": {"format": {"type": "xml"}}}, "text.format"),
        ({"input": "Hi", "text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format"),
    ],
)
def test_malformed_requests_name_the_parameter(fields: dict[str, Any], param: str) -> None:
    assert rejected(**fields).param == param


SHELL_REQUEST = {"model": "alias", "input": "Hi", "instructions": "Be brief"}


def completion(message: dict[str, Any], finish: str = "stop", **usage: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage or None,
    }


def test_a_text_completion_is_a_completed_response_the_sdk_reads() -> None:
    data = completion(
        {"role": "assistant", "content": "Hello!"},
        completion_tokens_details={"reasoning_tokens": 3},
    )
    shell = response_shell(SHELL_REQUEST, "my-alias")
    usage = Usage(prompt_tokens=12, completion_tokens=5, cached_tokens=4)
    body = response_from_chat(data, shell, usage)
    response = Response.model_validate(body)
    assert response.output_text == "Hello!"
    assert response.id.startswith("resp_") and response.id == shell["id"]
    assert response.model == "my-alias" and response.status == "completed"
    assert response.instructions == "Be brief" and response.tool_choice == "auto"
    assert response.parallel_tool_calls is True and response.tools == []
    assert body["output"][0]["id"].startswith("msg_")
    assert body["output"][0]["status"] == "completed"
    assert body["usage"] == {
        "input_tokens": 12,
        "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 3},
        "total_tokens": 17,
    }
    assert body["incomplete_details"] is None and body["error"] is None


def test_tool_calls_become_function_call_items() -> None:
    data = completion(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"type": "function", "function": {"name": "g", "arguments": '{"x":1}'}},
            ],
        },
        finish="tool_calls",
    )
    body = response_from_chat(data, response_shell(SHELL_REQUEST, "a"), None)
    Response.model_validate(body)
    first, second = body["output"]
    assert first["type"] == "function_call" and first["id"].startswith("fc_")
    assert (first["call_id"], first["name"], first["arguments"]) == ("call_a", "f", "{}")
    assert second["call_id"].startswith("call_") and second["arguments"] == '{"x":1}'
    assert first["status"] == second["status"] == "completed"
    assert body["status"] == "completed" and body["usage"] is None


@pytest.mark.parametrize(
    ("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")]
)
def test_cut_short_completions_are_incomplete(finish: str, reason: str) -> None:
    data = completion({"role": "assistant", "content": "Hel"}, finish=finish)
    body = response_from_chat(data, response_shell(SHELL_REQUEST, "a"), Usage(1, 1))
    assert Response.model_validate(body).status == "incomplete"
    assert body["incomplete_details"] == {"reason": reason}
    assert body["output"][0]["status"] == "incomplete"
    assert body["completed_at"] is None


def test_a_refusal_is_a_refusal_part() -> None:
    data = completion({"role": "assistant", "content": None, "refusal": "I can't help."})
    body = response_from_chat(data, response_shell(SHELL_REQUEST, "a"), None)
    assert body["output"][0]["content"] == [{"type": "refusal", "refusal": "I can't help."}]
    assert Response.model_validate(body).output_text == ""


def test_the_shell_repeats_the_request_settings() -> None:
    request = {
        "model": "alias",
        "input": "Hi",
        "tools": [WEATHER_TOOL],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "temperature": 0.5,
        "top_p": 0.7,
        "max_output_tokens": 99,
        "metadata": {"k": "v"},
    }
    shell = response_shell(request, "alias")
    assert shell["status"] == "in_progress" and shell["output"] == []
    for name in ("tools", "tool_choice", "parallel_tool_calls", "temperature", "top_p", "metadata"):
        assert shell[name] == request[name], name
    assert shell["max_output_tokens"] == 99 and shell["store"] is False
    assert response_shell(request, "alias")["id"] != shell["id"]
