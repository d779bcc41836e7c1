"""Pivot chunks into Responses events: order, numbering, content, the final response, errors."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from agentwatch.errors import UpstreamError, UpstreamRateLimited
from agentwatch.frontends.responses_stream import NativeResponsesRelay, ResponsesStreamTranslator
from agentwatch.frontends.responses_wire import response_shell
from agentwatch.providers.base import Usage

SDK_EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
USAGE = Usage(prompt_tokens=20, completion_tokens=8, cached_tokens=6)


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> bytes:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}],
        **extra,
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


def tool_delta(index: int, arguments: str, call_id: str | None = None, name: str = "") -> bytes:
    """A tool call's arguments; with `call_id`, preceded by the chunk that opens the call."""
    opening = b""
    if call_id is not None:
        function = {"name": name, "arguments": ""}
        call = {"index": index, "id": call_id, "type": "function", "function": function}
        opening = chunk({"tool_calls": [call]})
    return opening + chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]})


USAGE_CHUNK = (
    b"data: "
    + orjson.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "choices": [],
            "usage": {
                "prompt_tokens": 20,
                "completion_tokens": 8,
                "completion_tokens_details": {"reasoning_tokens": 2},
            },
        }
    )
    + b"\n\n"
)
DONE = b"data: [DONE]\n\n"

TEXT_AND_TWO_TOOLS = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Let me"}),
    chunk({"content": " check."}),
    tool_delta(0, '{"city":', call_id="call_w", name="get_weather"),
    tool_delta(0, '"Paris"}'),
    tool_delta(1, '{"zone":', call_id="call_t", name="get_time"),
    tool_delta(1, '"CET"}'),
    chunk(finish="tool_calls"),
    USAGE_CHUNK,
    DONE,
]


def run(
    events: list[bytes], usage: Usage | None = USAGE, *, shell: dict[str, Any] | None = None
) -> list[tuple[str, dict[str, Any]]]:
    translator = ResponsesStreamTranslator(shell or response_shell({"input": "Hi"}, "my-alias"))
    out = b"".join(translator.translate(e) for e in events) + translator.finish(usage)
    return parse(out)


def parse(out: bytes) -> list[tuple[str, dict[str, Any]]]:
    assert out.endswith(b"\n\n")
    parsed = []
    for frame in out[:-2].split(b"\n\n"):
        event_line, data_line = frame.split(b"\n")
        assert event_line.startswith(b"event: ") and data_line.startswith(b"data: ")
        parsed.append((event_line[7:].decode(), orjson.loads(data_line[6:])))
    return parsed


def test_text_then_two_tool_calls_in_the_documented_order() -> None:
    events = run(TEXT_AND_TWO_TOOLS)
    assert [kind for kind, _ in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    for number, (kind, data) in enumerate(events):
        assert data["type"] == kind and data["sequence_number"] == number
        SDK_EVENT.validate_python(data)  # every event is one the official SDK can read


def test_events_carry_items_indexes_and_deltas() -> None:
    events = run(TEXT_AND_TWO_TOOLS)
    added = [data for kind, data in events if kind == "response.output_item.added"]
    message, weather, clock = (a["item"] for a in added)
    assert [a["output_index"] for a in added] == [0, 1, 2]
    assert message == {
        "type": "message",
        "id": message["id"],
        "status": "in_progress",
        "role": "assistant",
        "content": [],
    }
    assert weather == {
        "type": "function_call",
        "id": weather["id"],
        "call_id": "call_w",
        "name": "get_weather",
        "arguments": "",
        "status": "in_progress",
    }
    assert clock["call_id"] == "call_t" and clock["id"] != weather["id"]
    deltas = [d for kind, d in events if kind == "response.output_text.delta"]
    assert [(d["item_id"], d["output_index"], d["content_index"], d["delta"]) for d in deltas] == [
        (message["id"], 0, 0, "Let me"),
        (message["id"], 0, 0, " check."),
    ]
    text_done = next(d for kind, d in events if kind == "response.output_text.done")
    assert text_done["text"] == "Let me check."
    arg_deltas = [d for kind, d in events if kind == "response.function_call_arguments.delta"]
    assert [(d["item_id"], d["output_index"], d["delta"]) for d in arg_deltas] == [
        (weather["id"], 1, '{"city":'),
        (weather["id"], 1, '"Paris"}'),
        (clock["id"], 2, '{"zone":'),
        (clock["id"], 2, '"CET"}'),
    ]
    args_done = [d for kind, d in events if kind == "response.function_call_arguments.done"]
    assert [d["arguments"] for d in args_done] == ['{"city":"Paris"}', '{"zone":"CET"}']
    items_done = [d["item"] for kind, d in events if kind == "response.output_item.done"]
    assert [i["status"] for i in items_done] == ["completed"] * 3
    assert items_done[0]["content"] == [
        {"type": "output_text", "text": "Let me check.", "annotations": []}
    ]


def test_the_completed_event_holds_the_whole_response_and_exact_usage() -> None:
    shell = response_shell({"input": "Hi", "instructions": "Be brief"}, "my-alias")
    kind, data = run(TEXT_AND_TWO_TOOLS, shell=shell)[-1]
    assert kind == "response.completed"
    response = Response.model_validate(data["response"])
    assert response.id == shell["id"] and response.model == "my-alias"
    assert response.status == "completed" and response.instructions == "Be brief"
    assert response.output_text == "Let me check."
    calls = [(i.call_id, i.name, i.arguments) for i in response.output if i.type == "function_call"]
    assert calls == [
        ("call_w", "get_weather", '{"city":"Paris"}'),
        ("call_t", "get_time", '{"zone":"CET"}'),
    ]
    assert data["response"]["usage"] == {
        "input_tokens": 20,
        "input_tokens_details": {"cached_tokens": 6, "cache_write_tokens": 0},
        "output_tokens": 8,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 28,
    }


def test_created_and_in_progress_carry_the_empty_response() -> None:
    events = run(TEXT_AND_TWO_TOOLS)
    for _, data in events[:2]:
        assert data["response"]["status"] == "in_progress" and data["response"]["output"] == []
        assert data["response"]["usage"] is None


def test_coalesced_upstream_events_translate_the_same() -> None:
    one_by_one = run(TEXT_AND_TWO_TOOLS)
    coalesced = run([b"".join(TEXT_AND_TWO_TOOLS)])
    assert [k for k, _ in coalesced] == [k for k, _ in one_by_one]
    assert coalesced[-1][1]["response"]["usage"] == one_by_one[-1][1]["response"]["usage"]


def test_usage_chunks_and_done_add_no_events() -> None:
    translator = ResponsesStreamTranslator(response_shell({}, "a"))
    assert len(parse(translator.translate(chunk({"role": "assistant", "content": ""})))) == 2
    assert translator.translate(USAGE_CHUNK) == b""
    assert translator.translate(DONE) == b""


def test_a_length_stop_ends_with_response_incomplete() -> None:
    events = run([chunk({"content": "Hel"}), chunk(finish="length")])
    kind, data = events[-1]
    assert kind == "response.incomplete"
    assert data["response"]["status"] == "incomplete"
    assert data["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert data["response"]["output"][0]["status"] == "incomplete"
    item_done = next(d for k, d in events if k == "response.output_item.done")
    assert item_done["item"]["status"] == "incomplete"
    SDK_EVENT.validate_python(data)


def test_text_after_a_tool_call_is_a_new_message_item() -> None:
    events = run(
        [tool_delta(0, "{}", call_id="call_a", name="f"), chunk({"content": "Done."})], None
    )
    added = [d["item"]["type"] for k, d in events if k == "response.output_item.added"]
    assert added == ["function_call", "message"]
    kinds = [k for k, _ in events]
    # The call is finished before the message starts.
    assert kinds.index("response.function_call_arguments.done") < kinds.index(
        "response.content_part.added"
    )
    assert events[-1][1]["response"]["usage"] is None


def test_a_late_delta_for_a_closed_call_reaches_only_the_final_response() -> None:
    events = run(
        [
            tool_delta(0, '{"a":', call_id="call_a", name="f"),
            tool_delta(1, "{}", call_id="call_b", name="g"),
            tool_delta(0, "1}"),
        ]
    )
    first_done = next(d for k, d in events if k == "response.output_item.done")
    closed_at = events.index(("response.output_item.done", first_done))
    late = [
        d
        for k, d in events[closed_at:]
        if k == "response.function_call_arguments.delta" and d["output_index"] == 0
    ]
    assert late == []  # nothing may follow an item's `done`
    assert first_done["item"]["arguments"] == '{"a":'
    final = events[-1][1]["response"]["output"]
    assert [i["arguments"] for i in final] == ['{"a":1}', "{}"]


def test_whole_calls_without_an_index_stay_apart() -> None:
    calls = [
        {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        {"id": "call_b", "type": "function", "function": {"name": "g", "arguments": '{"x":1}'}},
    ]
    events = run([chunk({"tool_calls": calls}), chunk(finish="tool_calls")])
    final = events[-1][1]["response"]["output"]
    assert [(i["call_id"], i["name"], i["arguments"]) for i in final] == [
        ("call_a", "f", "{}"),
        ("call_b", "g", '{"x":1}'),
    ]


def test_an_empty_stream_still_completes() -> None:
    events = run([])
    assert [k for k, _ in events] == [
        "response.created",
        "response.in_progress",
        "response.completed",
    ]
    assert events[-1][1]["response"]["output"] == []


def test_a_failure_after_the_start_is_an_error_event_then_response_failed() -> None:
    translator = ResponsesStreamTranslator(response_shell({}, "a"))
    head = translator.translate(chunk({"content": "Hel"}))
    tail = translator.error(UpstreamError("upstream provider 'x' broke the stream"))
    events = parse(head + tail)
    assert [k for k, _ in events][-2:] == ["error", "response.failed"]
    error, failed = events[-2][1], events[-1][1]
    assert error["message"] == "upstream provider 'x' broke the stream"
    assert error["code"] == "upstream_error"
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"]["code"] == "server_error"
    assert failed["response"]["output"][0]["content"][0]["text"] == "Hel"
    SDK_EVENT.validate_python(error)
    SDK_EVENT.validate_python(failed)
    assert translator.finish(USAGE) == b""


def test_a_rate_limit_failure_says_so() -> None:
    translator = ResponsesStreamTranslator(response_shell({}, "a"))
    events = parse(translator.error(UpstreamRateLimited("slow down")))
    assert [k for k, _ in events] == [
        "response.created",
        "response.in_progress",
        "error",
        "response.failed",
    ]
    assert events[-1][1]["response"]["error"]["code"] == "rate_limit_exceeded"


def test_an_upstream_error_chunk_fails_the_call_and_keeps_what_came_before() -> None:
    translator = ResponsesStreamTranslator(response_shell({}, "a"))
    error_chunk = b'data: {"error": {"message": "model overloaded"}}\n\n'
    with pytest.raises(UpstreamError) as caught:
        translator.translate(chunk({"content": "Hi"}) + error_chunk + chunk({"content": "more"}))
    assert "model overloaded" in caught.value.message
    events = parse(translator.error(caught.value))
    kinds = [k for k, _ in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "error",
        "response.failed",
    ]
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    assert translator.translate(chunk({"content": "more"})) == b""
    assert translator.finish(USAGE) == b""


@pytest.mark.parametrize("sequence", [0, 7, 41])
def test_native_events_pass_untouched_and_an_error_continues_their_numbering(
    sequence: int,
) -> None:
    relay = NativeResponsesRelay()
    events = (
        b'event: response.created\ndata: {"type":"response.created","sequence_number":0}\n\n'
        + b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
        + b'"delta":"sequence_number","sequence_number": '
        + str(sequence).encode()
        + b"}\n\n"
    )
    assert relay.translate(events) is events
    assert relay.finish(USAGE) == b""
    ((kind, error),) = parse(relay.error(UpstreamError("broke")))
    assert kind == "error" and error["sequence_number"] == sequence + 1
    assert error["message"] == "broke"
