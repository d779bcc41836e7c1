"""The Gemini translation functions, one gotcha at a time, without a network."""

from __future__ import annotations

import base64
import struct
from typing import Any

import orjson
import pytest

from agentwatch.errors import (
    InvalidRequest,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
)
from agentwatch.providers.base import Usage
from agentwatch.providers.gemini_response import (
    chat_completion,
    embeddings_response,
    gemini_error,
)
from agentwatch.providers.gemini_stream import GeminiStreamTranslator
from agentwatch.providers.gemini_wire import embed_request, gemini_schema, generate_content_request

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "strict": True,
        "parameters": {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "days": {"type": ["integer", "null"], "default": 1},
                "units": {"const": "metric"},
                "tags": {"type": "array", "items": {"type": "object", "additionalProperties": {}}},
            },
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}


def request(messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return generate_content_request({"model": "gemini-2.0-flash", "messages": messages, **extra})


def assistant_calls(*calls: tuple[str, str, str]) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": id_, "type": "function", "function": {"name": name, "arguments": args}}
            for id_, name, args in calls
        ],
    }


def completion(response: dict[str, Any]) -> tuple[dict[str, Any], Usage | None]:
    return chat_completion(
        response, model="gemini-2.0-flash", completion_id="chatcmpl-1", created=1
    )


# Request: roles, system instruction, content parts


def test_roles_become_user_and_model_and_same_role_turns_merge() -> None:
    body = request(
        [
            {"role": "user", "content": "Hi"},
            {"role": "user", "content": [{"type": "text", "text": "there"}]},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Bye"},
        ]
    )
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Hi"}, {"text": "there"}]},
        {"role": "model", "parts": [{"text": "Hello"}]},
        {"role": "user", "parts": [{"text": "Bye"}]},
    ]


def test_system_and_developer_messages_become_the_system_instruction() -> None:
    body = request(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
            {"role": "user", "content": "Hi"},
        ]
    )
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "Use French."}]}
    assert [c["role"] for c in body["contents"]] == ["user"]


def test_without_system_messages_there_is_no_system_instruction() -> None:
    assert "systemInstruction" not in request([{"role": "user", "content": "Hi"}])


def test_images_become_inline_data_or_file_data() -> None:
    parts = [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp?size=2"}},
        {"type": "image_url", "image_url": "https://example.com/picture"},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
    ]
    body = request([{"role": "user", "content": parts}])
    assert body["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/cat.webp?size=2"}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/picture"}},
        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
    ]


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": "ftp://example.com/cat.png"}},
        {"type": "image_url", "image_url": {"url": "data:image/png,notbase64"}},
        {"type": "video", "video": {}},
    ],
)
def test_parts_gemini_cannot_take_are_a_client_error(part: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest) as caught:
        request([{"role": "user", "content": [part]}])
    assert caught.value.param == "messages[0].content"


def test_an_unknown_role_is_a_client_error() -> None:
    with pytest.raises(InvalidRequest, match="role 'robot'"):
        request([{"role": "robot", "content": "beep"}])


# Request: tools


def test_all_functions_go_in_one_tool_with_schemas_gemini_accepts() -> None:
    body = request([{"role": "user", "content": "Hi"}], tools=[WEATHER, TIME])
    [tool] = body["tools"]
    weather, time = tool["functionDeclarations"]
    assert weather == {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "days": {"type": "integer", "nullable": True, "default": 1},
                "units": {"enum": ["metric"]},
                "tags": {"type": "array", "items": {"type": "object"}},
            },
            "required": ["city"],
        },
    }
    # Gemini rejects an OBJECT with no properties, so a function without arguments has none.
    assert time == {"name": "get_time"}


def test_schema_references_are_inlined() -> None:
    schema = {
        "type": "object",
        "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "number"}}}},
        "properties": {"at": {"$ref": "#/$defs/Point", "description": "where"}},
    }
    assert gemini_schema(schema) == {
        "type": "object",
        "properties": {
            "at": {
                "type": "object",
                "properties": {"x": {"type": "number"}},
                "description": "where",
            }
        },
    }


def test_a_recursive_schema_is_a_client_error() -> None:
    schema = {
        "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
        "$ref": "#/$defs/Node",
    }
    with pytest.raises(InvalidRequest, match="recursive"):
        gemini_schema(schema)


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("required", {"mode": "ANY"}),
        ("none", {"mode": "NONE"}),
        (
            {"type": "function", "function": {"name": "get_time"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_time"]},
        ),
    ],
)
def test_tool_choice_becomes_a_function_calling_mode(choice: Any, config: Any) -> None:
    body = request([{"role": "user", "content": "Hi"}], tools=[WEATHER, TIME], tool_choice=choice)
    assert body["toolConfig"] == {"functionCallingConfig": config}


def test_an_unknown_tool_choice_is_a_client_error() -> None:
    with pytest.raises(InvalidRequest) as caught:
        request([{"role": "user", "content": "Hi"}], tools=[TIME], tool_choice="sometimes")
    assert caught.value.param == "tool_choice"


def test_tool_results_are_named_by_the_call_they_answer() -> None:
    body = request(
        [
            {"role": "user", "content": "Weather and time in Paris?"},
            assistant_calls(
                ("call_a", "get_weather", '{"city": "Paris"}'), ("call_b", "get_time", "")
            ),
            {"role": "tool", "tool_call_id": "call_b", "content": '{"time": "12:00"}'},
            {"role": "tool", "tool_call_id": "call_a", "content": '{"temp_c": 21}'},
        ]
    )
    model, results = body["contents"][1:]
    assert model == {
        "role": "model",
        "parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
            {"functionCall": {"name": "get_time", "args": {}}},
        ],
    }
    # Parallel results go back in one user turn, each under its function's name.
    assert results == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "get_time", "response": {"time": "12:00"}}},
            {"functionResponse": {"name": "get_weather", "response": {"temp_c": 21}}},
        ],
    }


@pytest.mark.parametrize(
    ("content", "response"),
    [
        ("sunny", {"result": "sunny"}),
        ("[1, 2]", {"result": [1, 2]}),
        ("21", {"result": 21}),
        ("", {"result": ""}),
        ([{"type": "text", "text": '{"ok": '}, {"type": "text", "text": "true}"}], {"ok": True}),
    ],
)
def test_tool_results_that_are_not_objects_are_wrapped(content: Any, response: Any) -> None:
    body = request(
        [
            {"role": "user", "content": "Go"},
            assistant_calls(("call_a", "get_time", "{}")),
            {"role": "tool", "tool_call_id": "call_a", "content": content},
        ]
    )
    assert body["contents"][-1]["parts"][0]["functionResponse"]["response"] == response


def test_a_result_for_an_unknown_call_is_a_client_error() -> None:
    with pytest.raises(InvalidRequest) as caught:
        request(
            [
                {"role": "user", "content": "Go"},
                {"role": "tool", "tool_call_id": "call_nowhere", "content": "{}"},
            ]
        )
    assert caught.value.param == "messages[1].tool_call_id"


def test_a_thought_signature_goes_back_with_its_call() -> None:
    call = assistant_calls(("call_a", "get_time", "{}"))
    call["tool_calls"][0]["extra_content"] = {"google": {"thought_signature": "c2ln"}}
    body = request([{"role": "user", "content": "Go"}, call])
    assert body["contents"][1]["parts"][0]["thoughtSignature"] == "c2ln"


def test_generation_settings_are_renamed() -> None:
    body = request(
        [{"role": "user", "content": "Hi"}],
        temperature=0.2,
        top_p=0.9,
        max_completion_tokens=100,
        stop="END",
        n=2,
        seed=7,
        response_format={"type": "json_object"},
        user="someone",
    )
    assert body["generationConfig"] == {
        "temperature": 0.2,
        "topP": 0.9,
        "maxOutputTokens": 100,
        "stopSequences": ["END"],
        "candidateCount": 2,
        "seed": 7,
        "responseMimeType": "application/json",
    }
    legacy = request([{"role": "user", "content": "Hi"}], max_tokens=30, stop=["a", "b"])
    assert legacy["generationConfig"] == {"maxOutputTokens": 30, "stopSequences": ["a", "b"]}


def test_a_json_schema_response_format_becomes_a_response_schema() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "additionalProperties": False,
    }
    body = request(
        [{"role": "user", "content": "Hi"}],
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    )
    assert body["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseSchema": {"type": "object", "properties": {"a": {"type": "string"}}},
    }


# Responses


def candidate(parts: list[Any], finish: str = "STOP") -> dict[str, Any]:
    return {"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}


def test_text_parts_are_joined_and_thoughts_dropped() -> None:
    parts = [{"text": "Thinking hard", "thought": True}, {"text": "Hello"}, {"text": " there"}]
    body, _ = completion({"candidates": [candidate(parts)], "modelVersion": "gemini-2.0-flash-001"})
    assert body["object"] == "chat.completion" and body["model"] == "gemini-2.0-flash-001"
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there"},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]


def test_function_calls_get_generated_ids_and_a_tool_calls_finish() -> None:
    parts = [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
        {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
    ]
    body, _ = completion({"candidates": [candidate(parts, "STOP")]})
    [choice] = body["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    calls = choice["message"]["tool_calls"]
    assert [c["function"] for c in calls] == [
        {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"name": "get_weather", "arguments": '{"city":"Rome"}'},
    ]
    ids = [c["id"] for c in calls]
    assert all(i.startswith("call_") for i in ids) and len(set(ids)) == 2


def test_a_thought_signature_rides_on_the_tool_call() -> None:
    part = {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "c2ln"}
    body, _ = completion({"candidates": [candidate([part])]})
    [call] = body["choices"][0]["message"]["tool_calls"]
    assert call["extra_content"] == {"google": {"thought_signature": "c2ln"}}


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("OTHER", "stop"),
    ],
)
def test_finish_reasons(reason: str, expected: str) -> None:
    body, _ = completion({"candidates": [candidate([{"text": "x"}], reason)]})
    assert body["choices"][0]["finish_reason"] == expected


def test_a_blocked_prompt_is_an_empty_content_filter_answer() -> None:
    body, usage = completion(
        {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 8}}
    )
    assert body["choices"][0]["message"] == {"role": "assistant", "content": ""}
    assert body["choices"][0]["finish_reason"] == "content_filter"
    assert usage == Usage(prompt_tokens=8)


def test_thoughts_count_as_completion_tokens() -> None:
    metadata = {
        "promptTokenCount": 100,
        "candidatesTokenCount": 20,
        "thoughtsTokenCount": 50,
        "cachedContentTokenCount": 60,
        "totalTokenCount": 170,
    }
    body, usage = completion(
        {"candidates": [candidate([{"text": "x"}])], "usageMetadata": metadata}
    )
    assert usage == Usage(
        prompt_tokens=100, completion_tokens=70, cached_tokens=60, reasoning_tokens=50
    )
    assert body["usage"] == {
        "prompt_tokens": 100,
        "completion_tokens": 70,
        "total_tokens": 170,
        "prompt_tokens_details": {"cached_tokens": 60},
        "completion_tokens_details": {"reasoning_tokens": 50},
    }


def test_no_usage_metadata_means_no_usage() -> None:
    body, usage = completion({"candidates": [candidate([{"text": "x"}])]})
    assert usage is None and "usage" not in body


# Streams

# As `alt=sse` sends them (CRLF line ends), thinking model, one function call at the end.
RECORDED_STREAM = (
    b'data: {"candidates": [{"content": {"parts": [{"text": "Checking the","thought": true}],'
    b'"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 30,'
    b'"totalTokenCount": 30},"modelVersion": "gemini-2.5-flash"}\r\n\r\n'
    b'data: {"candidates": [{"content": {"parts": [{"text": "Let me"}],"role": "model"},'
    b'"index": 0}],"usageMetadata": {"promptTokenCount": 30,"totalTokenCount": 30},'
    b'"modelVersion": "gemini-2.5-flash"}\r\n\r\n'
    b'data: {"candidates": [{"content": {"parts": [{"text": " look."},{"functionCall": '
    b'{"name": "get_weather","args": {"city": "Paris"}}},{"functionCall": {"name": "get_time",'
    b'"args": {}}}],"role": "model"},"finishReason": "STOP","index": 0}],"usageMetadata": '
    b'{"promptTokenCount": 30,"candidatesTokenCount": 12,"totalTokenCount": 57,'
    b'"thoughtsTokenCount": 15},"modelVersion": "gemini-2.5-flash"}\r\n\r\n'
)


def recorded_events() -> list[dict[str, Any]]:
    frames = RECORDED_STREAM.split(b"\r\n\r\n")
    return [orjson.loads(frame.removeprefix(b"data: ")) for frame in frames if frame]


def translator(forward_usage: bool) -> GeminiStreamTranslator:
    return GeminiStreamTranslator(
        model="gemini-2.5-flash", completion_id="chatcmpl-1", created=1, forward_usage=forward_usage
    )


def deltas(chunks: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str | None]]:
    return [(c["choices"][0]["delta"], c["choices"][0]["finish_reason"]) for c in chunks]


def test_a_recorded_stream_becomes_openai_chunks() -> None:
    stream = translator(forward_usage=False)
    fed = [stream.feed(event) for event in recorded_events()]
    assert fed[0] == []  # a thought only
    assert fed[1][0]["object"] == "chat.completion.chunk" and fed[1][0]["id"] == "chatcmpl-1"
    assert deltas(fed[1]) == [({"role": "assistant", "content": "Let me"}, None)]
    text, weather, time = fed[2]
    assert deltas([text]) == [({"content": " look."}, None)]
    weather_call = weather["choices"][0]["delta"]["tool_calls"][0]
    time_call = time["choices"][0]["delta"]["tool_calls"][0]
    assert (weather_call["index"], time_call["index"]) == (0, 1)
    assert weather_call["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert weather_call["id"].startswith("call_") and weather_call["id"] != time_call["id"]
    assert deltas(stream.finish()) == [({}, "tool_calls")]
    assert stream.usage == Usage(prompt_tokens=30, completion_tokens=27, reasoning_tokens=15)
    assert stream.content_events == 4


def test_the_usage_chunk_comes_last_and_only_when_asked() -> None:
    stream = translator(forward_usage=True)
    for event in recorded_events():
        stream.feed(event)
    finish, usage = stream.finish()
    assert finish["choices"][0]["finish_reason"] == "tool_calls"
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 27
    assert usage["usage"]["completion_tokens_details"] == {"reasoning_tokens": 15}


def test_a_stream_with_only_a_finish_still_starts_with_the_role() -> None:
    stream = translator(forward_usage=False)
    assert stream.feed({"candidates": [{"finishReason": "SAFETY", "index": 0}]}) == []
    assert deltas(stream.finish()) == [({"role": "assistant", "content": ""}, "content_filter")]


def test_a_blocked_prompt_stream_finishes_as_content_filter() -> None:
    stream = translator(forward_usage=False)
    stream.feed(
        {"promptFeedback": {"blockReason": "OTHER"}, "usageMetadata": {"promptTokenCount": 4}}
    )
    assert deltas(stream.finish()) == [({"role": "assistant", "content": ""}, "content_filter")]
    assert stream.usage == Usage(prompt_tokens=4)


def test_a_stream_cut_before_its_finish_reason_is_an_upstream_error() -> None:
    stream = translator(forward_usage=False)
    stream.feed(recorded_events()[1])
    with pytest.raises(UpstreamError, match="finish reason"):
        stream.finish()


# Embeddings


def test_embeddings_request() -> None:
    many = embed_request({"input": ["a", "b"], "dimensions": 8}, "models/text-embedding-004")
    assert many == {
        "requests": [
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": t}]}, **dims}
            for t, dims in (("a", {"outputDimensionality": 8}), ("b", {"outputDimensionality": 8}))
        ]
    }
    one = embed_request({"input": "just one"}, "models/text-embedding-004")
    assert one == {
        "requests": [
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": "just one"}]}}
        ]
    }


def test_token_arrays_cannot_be_embedded_by_gemini() -> None:
    with pytest.raises(InvalidRequest) as caught:
        embed_request({"input": [[1, 2, 3]]}, "models/text-embedding-004")
    assert caught.value.param == "input"


def test_embeddings_response_with_estimated_usage() -> None:
    payload = {"model": "text-embedding-004", "input": ["abcd", "abcdefghi"]}
    body, usage = embeddings_response(
        {"embeddings": [{"values": [0.5, -1.0]}, {"values": [0.25, 2.0]}]}, payload
    )
    assert body == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [0.5, -1.0]},
            {"object": "embedding", "index": 1, "embedding": [0.25, 2.0]},
        ],
        "model": "text-embedding-004",
        "usage": {"prompt_tokens": 4, "total_tokens": 4},  # ceil(4/4) + ceil(9/4)
    }
    assert usage == Usage(prompt_tokens=4)


def test_base64_embeddings_are_little_endian_float32() -> None:
    payload = {"model": "m", "input": "abcd", "encoding_format": "base64"}
    body, _ = embeddings_response({"embeddings": [{"values": [0.5, -1.0]}]}, payload)
    encoded = body["data"][0]["embedding"]
    assert struct.unpack("<2f", base64.b64decode(encoded)) == (0.5, -1.0)


def test_a_missing_embedding_is_an_upstream_error() -> None:
    with pytest.raises(UpstreamError, match="1 embeddings for 2 inputs"):
        embeddings_response({"embeddings": [{"values": [1.0]}]}, {"input": ["a", "b"]})


# Errors


def error_body(code: int, status: str, message: str = "boom", **extra: Any) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message, "status": status, **extra}})


CONTEXT = "The input token count (1048580) exceeds the maximum number of tokens allowed (1048576)."
API_KEY_INVALID = [
    {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
]


@pytest.mark.parametrize(
    ("status", "word", "message", "error_class", "http_status", "code"),
    [
        (400, "INVALID_ARGUMENT", CONTEXT, UpstreamRejected, 400, "context_length_exceeded"),
        (400, "INVALID_ARGUMENT", "boom", UpstreamRejected, 400, "upstream_rejected"),
        (400, "FAILED_PRECONDITION", "boom", UpstreamRejected, 400, "upstream_rejected"),
        (401, "UNAUTHENTICATED", "boom", UpstreamError, 502, "upstream_auth_failed"),
        (403, "PERMISSION_DENIED", "boom", UpstreamError, 502, "upstream_auth_failed"),
        (404, "NOT_FOUND", "boom", UpstreamRejected, 404, "upstream_rejected"),
        (429, "RESOURCE_EXHAUSTED", "boom", UpstreamRateLimited, 429, "rate_limit_exceeded"),
        (500, "INTERNAL", "boom", UpstreamError, 502, "upstream_error"),
        (503, "UNAVAILABLE", "boom", UpstreamOverloaded, 503, "upstream_overloaded"),
        (504, "DEADLINE_EXCEEDED", "boom", UpstreamTimeout, 504, "upstream_timeout"),
    ],
)
def test_gemini_errors_map_to_gateway_errors(
    status: int,
    word: str,
    message: str,
    error_class: type[UpstreamError],
    http_status: int,
    code: str,
) -> None:
    error = gemini_error("google", status, error_body(status, word, message), None)
    assert type(error) is error_class
    assert (error.status, error.code) == (http_status, code)
    assert "'google'" in error.message and message in error.message


def test_an_unknown_api_key_is_an_auth_failure_not_a_bad_request() -> None:
    body = error_body(400, "INVALID_ARGUMENT", "API key not valid.", details=API_KEY_INVALID)
    error = gemini_error("google", 400, body, None)
    assert type(error) is UpstreamError and error.code == "upstream_auth_failed"


def test_an_error_wrapped_in_an_array_is_read() -> None:
    body = b"[" + error_body(503, "UNAVAILABLE") + b"]"
    assert type(gemini_error("google", 503, body, None)) is UpstreamOverloaded


def test_a_body_that_is_not_gemini_json_falls_back_to_the_http_status() -> None:
    error = gemini_error("google", 502, b"<html>Bad Gateway</html>", None)
    assert type(error) is UpstreamError and "Bad Gateway" in error.message
    assert type(gemini_error("google", 429, b"slow down", "2")) is UpstreamRateLimited


def test_rate_limits_carry_the_retry_delay() -> None:
    retry = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12.5s"}]
    body = error_body(429, "RESOURCE_EXHAUSTED", details=retry)
    assert gemini_error("google", 429, body, None).headers == {"retry-after": "13"}
    assert gemini_error("google", 429, body, "3").headers == {"retry-after": "3"}
    assert gemini_error("google", 429, error_body(429, "RESOURCE_EXHAUSTED"), None).headers == {}


def test_rejections_are_not_retried_elsewhere_but_overloads_are() -> None:
    assert not gemini_error("g", 400, error_body(400, "INVALID_ARGUMENT"), None).retryable
    assert gemini_error("g", 503, error_body(503, "UNAVAILABLE"), None).retryable
