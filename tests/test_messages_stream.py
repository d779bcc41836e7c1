"""Pivot chunk events in, Anthropic's exact Messages event sequence out."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from agentwatch.errors import UpstreamError, UpstreamOverloaded
from agentwatch.frontends.messages_stream import MessagesStreamTranslator, NativeStreamRelay
from agentwatch.providers.base import Usage

Event = tuple[str, dict[str, Any]]


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-s1",
        "object": "chat.completion.chunk",
        "model": "upstream-model",
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


def usage_chunk(prompt: int, completion: int, cached: int = 0) -> bytes:
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }
    body = {"id": "chatcmpl-s1", "object": "chat.completion.chunk", "choices": [], "usage": usage}
    return b"data: " + orjson.dumps(body) + b"\n\n"


def tool(index: int, *, id: str | None = None, name: str | None = None, args: str = "") -> bytes:
    call: dict[str, Any] = {"index": index, "function": {"arguments": args}}
    if id is not None:
        call |= {"id": id, "type": "function"}
        call["function"]["name"] = name
    return chunk({"tool_calls": [call]})


DONE = b"data: [DONE]\n\n"


def parse(raw: bytes) -> list[Event]:
    events: list[Event] = []
    assert raw == b"" or raw.endswith(b"\n\n"), raw
    for block in raw.split(b"\n\n"):
        if not block:
            continue
        name_line, data_line = block.split(b"\n")
        assert name_line.startswith(b"event: ") and data_line.startswith(b"data: "), block
        name, data = name_line[7:].decode(), orjson.loads(data_line[6:])
        assert data["type"] == name
        events.append((name, data))
    return events


def run(events: list[bytes], usage: Usage | None = None, *, batched: bool = False) -> list[Event]:
    translator = MessagesStreamTranslator("my-alias")
    out = (
        [translator.translate(b"".join(events))]
        if batched
        else [translator.translate(e) for e in events]
    )
    out.append(translator.finish(usage))
    return parse(b"".join(out))


TEXT_AND_TWO_TOOLS = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Let me "}),
    chunk({"content": "check."}),
    tool(0, id="call_a", name="weather"),
    tool(0, args='{"city":'),
    tool(0, args='"Paris"}'),
    tool(1, id="call_b", name="time", args="{}"),
    chunk({}, "tool_calls"),
    usage_chunk(30, 12, cached=10),
    DONE,
]


def expected_text_and_two_tools(usage: dict[str, int]) -> list[Event]:
    def delta(index: int, body: dict[str, Any]) -> Event:
        return (
            "content_block_delta",
            {"type": "content_block_delta", "index": index, "delta": body},
        )

    def start(index: int, block: dict[str, Any]) -> Event:
        body = {"type": "content_block_start", "index": index, "content_block": block}
        return ("content_block_start", body)

    def stop(index: int) -> Event:
        return ("content_block_stop", {"type": "content_block_stop", "index": index})

    message: dict[str, Any] = {
        "id": "msg_s1",
        "type": "message",
        "role": "assistant",
        "model": "my-alias",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 0,
            "output_tokens": 1,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }
    return [
        ("message_start", {"type": "message_start", "message": message}),
        start(0, {"type": "text", "text": ""}),
        delta(0, {"type": "text_delta", "text": "Let me "}),
        delta(0, {"type": "text_delta", "text": "check."}),
        stop(0),
        start(1, {"type": "tool_use", "id": "call_a", "name": "weather", "input": {}}),
        delta(1, {"type": "input_json_delta", "partial_json": '{"city":'}),
        delta(1, {"type": "input_json_delta", "partial_json": '"Paris"}'}),
        stop(1),
        start(2, {"type": "tool_use", "id": "call_b", "name": "time", "input": {}}),
        delta(2, {"type": "input_json_delta", "partial_json": "{}"}),
        stop(2),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": usage,
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]


def test_text_then_two_tool_calls_in_exact_order_with_exact_usage() -> None:
    provider_usage = Usage(
        prompt_tokens=30, completion_tokens=12, cached_tokens=10, cache_write_tokens=5
    )
    usage = {
        "input_tokens": 15,
        "output_tokens": 12,
        "cache_creation_input_tokens": 5,
        "cache_read_input_tokens": 10,
    }
    assert run(TEXT_AND_TWO_TOOLS, provider_usage) == expected_text_and_two_tools(usage)


def test_usage_from_the_pivot_usage_chunk_when_the_stream_has_none() -> None:
    usage = {
        "input_tokens": 20,
        "output_tokens": 12,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 10,
    }
    assert run(TEXT_AND_TWO_TOOLS, None) == expected_text_and_two_tools(usage)


def test_batching_does_not_change_the_output() -> None:
    usage = Usage(prompt_tokens=30, completion_tokens=12)
    assert run(TEXT_AND_TWO_TOOLS, usage, batched=True) == run(TEXT_AND_TWO_TOOLS, usage)


def test_usage_chunk_and_done_are_swallowed() -> None:
    translator = MessagesStreamTranslator("m")
    assert translator.translate(chunk({"content": "x"}))
    assert translator.translate(usage_chunk(1, 1)) == b""
    assert translator.translate(DONE) == b""


def test_the_wire_format_is_event_then_data() -> None:
    translator = MessagesStreamTranslator("m")
    translator.translate(chunk({"content": "a"}))
    assert translator.translate(chunk({"content": "b"})) == (
        b"event: content_block_delta\n"
        b'data: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"b"}}\n\n'
    )


def test_plain_text_stream() -> None:
    events = run([chunk({"content": "Hi"}), chunk({}, "length"), DONE], Usage(7, 3))
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[-2][1]["delta"]["stop_reason"] == "max_tokens"
    assert events[-2][1]["usage"]["input_tokens"] == 7
    assert events[-2][1]["usage"]["output_tokens"] == 3


def test_an_empty_stream_is_still_a_whole_message() -> None:
    events = run([], None)
    assert [name for name, _ in events] == ["message_start", "message_delta", "message_stop"]
    assert events[0][1]["message"]["id"].startswith("msg_")
    assert events[1][1]["delta"]["stop_reason"] == "end_turn"
    assert events[1][1]["usage"]["output_tokens"] == 0


def test_tool_calls_ending_with_stop_still_end_with_tool_use() -> None:
    events = run([tool(0, id="c", name="f", args="{}"), chunk({}, "stop")], None)
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_a_new_id_at_the_same_index_is_a_new_tool_call() -> None:
    # Some OpenAI-compatible servers send every call at index 0.
    events = run([tool(0, id="c1", name="a", args="{}"), tool(0, id="c2", name="b", args="{}")])
    starts = [data for name, data in events if name == "content_block_start"]
    assert [(s["index"], s["content_block"]["id"]) for s in starts] == [(0, "c1"), (1, "c2")]


def test_a_tool_call_without_an_id_gets_one() -> None:
    call = {"index": 0, "function": {"name": "f", "arguments": "{}"}}
    events = run([chunk({"tool_calls": [call]})])
    block = events[1][1]["content_block"]
    assert block["type"] == "tool_use" and block["id"].startswith("toolu_") and block["name"] == "f"


def test_text_after_a_tool_call_opens_a_new_block() -> None:
    events = run([tool(0, id="c", name="f"), chunk({"content": "done"})])
    names = [(name, data.get("index")) for name, data in events]
    assert names[1:5] == [
        ("content_block_start", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
    ]


def test_other_sse_lines_are_ignored() -> None:
    translator = MessagesStreamTranslator("m")
    raw = b": keep-alive\n\nevent: chunk\ndata: " + chunk({"content": "x"})[6:]
    events = parse(translator.translate(raw))
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
    ]


def test_error_event() -> None:
    translator = MessagesStreamTranslator("m")
    assert parse(translator.error(UpstreamOverloaded("busy"))) == [
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
    ]


def test_an_upstream_error_chunk_fails_the_stream_after_what_came_before() -> None:
    translator = MessagesStreamTranslator("m")
    failure = b'data: {"error": {"message": "model crashed", "type": "server_error"}}\n\n'
    out = translator.translate(chunk({"content": "partial"}) + failure + chunk({"content": "no"}))
    texts = [d["delta"]["text"] for n, d in parse(out) if n == "content_block_delta"]
    assert texts == ["partial"]
    with pytest.raises(UpstreamError, match="model crashed"):
        translator.finish(None)


def test_an_event_that_is_not_json_fails_the_stream() -> None:
    translator = MessagesStreamTranslator("m")
    translator.translate(b"data: {broken\n\n")
    with pytest.raises(UpstreamError, match="not JSON"):
        translator.translate(chunk({"content": "x"}))


def test_native_streams_pass_through_untouched_but_fail_in_anthropics_shape() -> None:
    relay = NativeStreamRelay()
    native = b'event: ping\r\ndata: {"type": "ping"}\r\n\r\n'
    assert relay.translate(native) is native
    assert relay.finish(Usage(1, 1)) == b""
    assert parse(relay.error(UpstreamError("upstream broke the stream"))) == [
        (
            "error",
            {
                "type": "error",
                "error": {"type": "api_error", "message": "upstream broke the stream"},
            },
        )
    ]
