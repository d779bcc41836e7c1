"""The stream guard on its own: whatever the chunking of a streamed answer, the client reads
the same redacted text as a whole-text scan gives, events keep their order and framing, and
a blocked value never leaves."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from agentwatch.dlp.engine import default_scanner
from agentwatch.dlp.inspect import Inspection, TextSlot
from agentwatch.dlp.policy import ActivePolicy, DlpPolicy
from agentwatch.dlp.stream import MAX_HOLD, StreamGuard, at_risk_start
from agentwatch.errors import DlpBlocked

POLICY = DlpPolicy.model_validate(
    {
        "default_action": "log",
        "categories": {"secret": "block", "pii": "redact", "financial": "redact"},
        "scan_responses": True,
    }
)
TEXTS = [
    "Write to jane.doe@example.com or call +44 20 7946 0958 today.",
    "Card 4539 1488 0343 6467 expires soon; SSN 536-22-8741 on file.",
    "Two people: raj.patel@example.org, then jane.doe@example.com, then raj.patel@example.org",
    "Nothing sensitive here at all, just words and numbers like 42 and 7.",
    "IBAN DE89 3704 0044 0532 0130 00 for the transfer",
]


def inspection() -> Inspection:
    active = ActivePolicy.resolve(POLICY, default_scanner().detectors)
    assert active is not None
    return Inspection(active, default_scanner())


def whole_text_redaction(text: str) -> str:
    holder = {"text": text}
    inspection().inspect([TextSlot(holder, "text", ("text",), text)], "response")
    return holder["text"]


def chat_events(pieces: list[str]) -> list[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]}
        body["choices"][0]["finish_reason"] = finish
        return b"data: " + orjson.dumps(body) + b"\n\n"

    return [
        chunk({"role": "assistant", "content": ""}),
        *(chunk({"content": p}) for p in pieces),
        chunk({}, "stop"),
        b"data: [DONE]\n\n",
    ]


def split_randomly(text: str, rng: random.Random) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), k=min(len(text) - 1, rng.randint(1, 25))))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


def run_guard(guard: StreamGuard, events: list[bytes], rng: random.Random) -> bytes:
    """Feed the events' bytes in random slices (not even at event boundaries)."""
    raw = b"".join(events)
    out = b""
    position = 0
    while position < len(raw):
        step = rng.randint(1, 40)
        out += guard.feed(raw[position : position + step])
        position += step
    return out + guard.finish()


def streamed_text(sse: bytes) -> str:
    text = ""
    for event in sse.split(b"\n\n"):
        if event.startswith(b"data: {"):
            for choice in orjson.loads(event[6:])["choices"]:
                text += choice["delta"].get("content") or ""
    return text


@pytest.mark.parametrize("text", TEXTS)
def test_any_chunking_gives_the_whole_text_redaction(text: str) -> None:
    expected = whole_text_redaction(text)
    rng = random.Random(text)
    for _ in range(40):
        guard = StreamGuard(inspection(), "/v1/chat/completions")
        out = run_guard(guard, chat_events(split_randomly(text, rng)), rng)
        assert streamed_text(out) == expected
        assert out.endswith(b"data: [DONE]\n\n")


def test_events_are_held_only_while_their_text_is_at_risk() -> None:
    guard = StreamGuard(inspection(), "/v1/chat/completions")
    events = chat_events(["Hello there, ", "write to jane.", "doe@exam", "ple.com ", "now"])
    released = [guard.feed(event) for event in events[:3]]
    assert b"Hello there" in released[1]  # the first words go out at once
    assert released[2] == b""  # "jane." could be the start of an address
    assert guard.feed(events[3]) == b""  # "jane.doe@exam" still could grow
    out = guard.feed(events[4])  # the space after "ple.com" ends it
    assert streamed_text(out) == "write to [REDACTED:EMAIL_1] "


def test_a_blocked_value_never_leaves_but_the_text_before_it_does() -> None:
    guard = StreamGuard(inspection(), "/v1/chat/completions")
    out = b""
    with pytest.raises(DlpBlocked) as caught:
        for event in chat_events(["Your key: ", "AKIAQ3EG", "RXKPLMWN7ZTB", " ok"]):
            out += guard.feed(event)
    assert caught.value.detectors == ["aws_access_key_id"]
    sent = out + caught.value.partial
    assert b"AKIA" not in sent and streamed_text(sent) == "Your key: "


def test_anthropic_deltas_are_redacted_and_keep_their_event_lines() -> None:
    def event(kind: str, body: dict[str, Any]) -> bytes:
        return f"event: {kind}\ndata: ".encode() + orjson.dumps({"type": kind, **body}) + b"\n\n"

    pieces = ["SSN 536-", "22-87", "41 noted"]
    events = [
        event("message_start", {"message": {"content": []}}),
        event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        *(
            event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": p}})
            for p in pieces
        ),
        event("ping", {}),
        event("content_block_stop", {"index": 0}),
        event("message_stop", {}),
    ]
    out = run_guard(StreamGuard(inspection(), "/v1/messages"), events, random.Random(3))
    kinds = [e.split(b"\n")[0] for e in out.split(b"\n\n") if e]
    assert kinds == [e.split(b"\n")[0] for e in events]
    text = "".join(
        orjson.loads(e.split(b"data: ", 1)[1])["delta"]["text"]
        for e in out.split(b"\n\n")
        if e.startswith(b"event: content_block_delta")
    )
    assert text == "SSN [REDACTED:US_SSN_1] noted"


def test_responses_done_events_repeat_the_redacted_text() -> None:
    text = "mail jane.doe@example.com"

    def event(body: dict[str, Any]) -> bytes:
        return f"event: {body['type']}\ndata: ".encode() + orjson.dumps(body) + b"\n\n"

    where = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    events = [
        *(
            event({"type": "response.output_text.delta", **where, "delta": text[i : i + 4]})
            for i in range(0, len(text), 4)
        ),
        event({"type": "response.output_text.done", **where, "text": text}),
    ]
    out = run_guard(StreamGuard(inspection(), "/v1/responses"), events, random.Random(5))
    bodies = [orjson.loads(e.split(b"data: ", 1)[1]) for e in out.split(b"\n\n") if e]
    deltas = "".join(b["delta"] for b in bodies if b["type"].endswith(".delta"))
    assert deltas == "mail [REDACTED:EMAIL_1]"
    assert bodies[-1]["text"] == "mail [REDACTED:EMAIL_1]"


def test_at_risk_start_covers_grouped_digits_and_open_key_blocks() -> None:
    assert at_risk_start("pay with 4539 1488 03", 0) == len("pay with ")
    assert at_risk_start("done. ", 0) == len("done. ")
    pem = "key:\n-----BEGIN PRIVATE KEY-----\nMIIEv"
    assert at_risk_start(pem, 0) == pem.index("-----BEGIN")
    long_run = "x" * (MAX_HOLD + 100)
    assert at_risk_start(long_run, 0) == 100
