"""Scanning a streamed answer as it passes: the text deltas of each channel (a choice's
content, a tool call's arguments, a content block) are joined and rescanned, and an event is
held back only while its text could still be the start of a match that later deltas finish.

What is held: the last unbroken run of non-space characters (a key, an e-mail address), the
digit groups before it (a card or phone number written with spaces) and an unterminated
`-----BEGIN ... PRIVATE KEY-----` block, at most `MAX_HOLD` characters. Events leave in their
original order and framing; only a redacted delta is re-serialised.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from agentwatch.dlp.inspect import Inspection, TextSlot, apply_edits, text_slots
from agentwatch.errors import DlpBlocked

CONTEXT = 64  # released characters rescanned before new text: context words, `name: value`
MAX_HOLD = 4096  # never hold more than this many characters of one channel
# Whole groups only: the tail of a longer token ("...7ZTB ") is not a group of its own.
_DIGIT_GROUPS = re.compile(r"(?:(?<![\w+()])(?:[0-9()+]{1,6}|[A-Z0-9]{4})[ .-])+\Z")
_SPACE = (" ", "\n", "\t", "\r")


def at_risk_start(text: str, released: int) -> int:
    """Where the suffix of `text` that a later delta could still turn into a match begins."""
    run = max(text.rfind(space) for space in _SPACE) + 1
    groups = _DIGIT_GROUPS.search(text, max(run - 64, 0), run)
    start = groups.start() if groups is not None else run
    begin = text.rfind("-----BEGIN", released)
    if begin != -1 and text.find("-----END", begin) == -1:
        start = min(start, begin)
    return max(start, len(text) - MAX_HOLD, released)


@dataclass(slots=True)
class _Channel:
    path: str
    text: str = ""
    released: int = 0  # text before this offset is final: scanned, acted on, may be sent
    redactions: list[tuple[int, int, str]] = field(default_factory=list)


@dataclass(slots=True)
class _Piece:
    channel: _Channel
    start: int
    end: int
    container: Any
    key: str


@dataclass(slots=True)
class _Event:
    raw: bytes
    head: bytes = b""  # the lines before `data:` (`event: ...`)
    data: Any = None
    pieces: list[_Piece] = field(default_factory=list)


# A delta's place: (channel key, channel path, the dict holding the text, the text's key).
Located = tuple[tuple[object, ...], str, Any, str]


def _chat_deltas(data: Any) -> Iterator[Located]:
    for choice in data.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        index = choice.get("index", 0)
        delta = choice.get("delta")
        if isinstance(delta, dict):
            for name in ("content", "reasoning_content", "refusal"):
                if isinstance(delta.get(name), str):
                    yield ("c", index, name), f"choices[{index}].{name}", delta, name
            for call in delta.get("tool_calls") or ():
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                    number = call.get("index", 0)
                    path = f"choices[{index}].tool_calls[{number}].arguments"
                    yield ("t", index, number), path, function, "arguments"
        if isinstance(choice.get("text"), str):  # legacy completions
            yield ("x", index), f"choices[{index}].text", choice, "text"


def _messages_deltas(data: Any) -> Iterator[Located]:
    if data.get("type") != "content_block_delta" or not isinstance(data.get("delta"), dict):
        return
    index, delta = data.get("index", 0), data["delta"]
    for name in ("text", "partial_json", "thinking"):
        if isinstance(delta.get(name), str):
            yield ("b", index, name), f"content[{index}].{name}", delta, name


def _responses_deltas(data: Any) -> Iterator[Located]:
    kind = data.get("type")
    if isinstance(kind, str) and kind.endswith(".delta") and isinstance(data.get("delta"), str):
        output, part = data.get("output_index"), data.get("content_index")
        path = f"output[{output}]" + (f".content[{part}]" if part is not None else "")
        yield (kind, data.get("item_id"), output, part), path, data, "delta"


_DELTAS: dict[str, Callable[[Any], Iterator[Located]]] = {
    "/v1/chat/completions": _chat_deltas,
    "/v1/completions": _chat_deltas,
    "/v1/messages": _messages_deltas,
    "/v1/responses": _responses_deltas,
}
# Formats whose closing events repeat the whole text (`response.output_text.done`,
# `response.completed`): those strings are redacted as a whole.
_REPEATS_TEXT = frozenset({"/v1/responses"})


class StreamGuard:
    """Feeds on the SSE bytes a client is about to get; returns what may go out now."""

    def __init__(self, inspection: Inspection, endpoint: str) -> None:
        self._inspection = inspection
        self._deltas = _DELTAS.get(endpoint, _chat_deltas)
        self._repeats_text = endpoint in _REPEATS_TEXT
        self._channels: dict[tuple[object, ...], _Channel] = {}
        self._held: deque[_Event] = deque()
        self._partial = b""

    def feed(self, chunk: bytes) -> bytes:
        """Raises `DlpBlocked` when a finding's action is block: nothing more goes out."""
        if not chunk:
            return b""
        buffer = self._partial + chunk.replace(b"\r\n", b"\n")
        *complete, self._partial = buffer.split(b"\n\n")
        out: list[bytes] = []
        try:
            for raw in complete:
                self._take(self._parse(raw + b"\n\n"))
                out.append(self._release())
        except DlpBlocked as blocked:
            blocked.partial = b"".join(out) + self._release()
            raise
        return b"".join(out)

    def finish(self) -> bytes:
        """Everything still held, after a last scan that no longer waits for more text."""
        try:
            for channel in self._channels.values():
                self._settle(channel, final=True)
        except DlpBlocked as blocked:
            blocked.partial = self._release()
            raise
        out = self._release()
        tail, self._partial = self._partial, b""
        return out + tail

    def _parse(self, raw: bytes) -> _Event:
        lines = raw.rstrip(b"\n").split(b"\n")
        data = b"\n".join(line[5:].lstrip(b" ") for line in lines if line.startswith(b"data:"))
        if not data or data == b"[DONE]":
            return _Event(raw)
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            return _Event(raw)
        if not isinstance(parsed, dict):
            return _Event(raw)
        head = b"".join(line + b"\n" for line in lines if not line.startswith(b"data:"))
        return _Event(raw, head, parsed)

    def _take(self, event: _Event) -> None:
        if event.data is not None:
            for key, path, container, name in self._deltas(event.data):
                channel = self._channels.get(key)
                if channel is None:
                    channel = self._channels[key] = _Channel(path)
                start = len(channel.text)
                channel.text += container[name]
                event.pieces.append(_Piece(channel, start, len(channel.text), container, name))
            if not event.pieces and self._repeats_text:
                for channel in self._channels.values():
                    self._settle(channel, final=True)
                self._redact_whole(event)
        self._held.append(event)
        for channel in {id(p.channel): p.channel for p in event.pieces}.values():
            self._settle(channel, final=False)

    def _settle(self, channel: _Channel, *, final: bool) -> None:
        """Scan what is not final yet, act on the findings that are complete, and move the
        release point up to the first text a later delta could still change."""
        inspection = self._inspection
        text, released = channel.text, channel.released
        if released >= len(text):
            return
        low = max(released - CONTEXT, 0)
        found = [
            (finding, action, finding.start + low, finding.end + low)
            for finding, action in inspection.acted_on(inspection.scanner.scan(text[low:]))
        ]
        found = [item for item in found if item[2] >= released]
        limit = len(text) if final else at_risk_start(text, released)
        if not final:
            for _, _, start, end in found:
                if end >= len(text):
                    limit = min(limit, start)
        moved = True
        while moved:  # never split a finding at the release point
            moved = False
            for _, _, start, end in found:
                if start < limit < end:
                    limit, moved = start, True
        blocking: list[str] = []
        for finding, action, start, end in found:
            if end > limit:
                continue
            inspection.record(finding, action, "response", channel.path, start, end)
            if action == "block":
                blocking.append(finding.detector)
            elif action == "redact":
                placeholder = inspection.placeholder(finding.detector, text[start:end])
                channel.redactions.append((start, end, placeholder))
        if blocking:
            # The text before the first blocked value may still go out; nothing from it on.
            first = min(start for f, _, start, _ in found if f.detector in blocking)
            channel.released = max(min(limit, first), released)
            raise DlpBlocked(sorted(set(blocking)), where="response")
        channel.released = max(limit, released)

    def _redact_whole(self, event: _Event) -> None:
        slots: list[TextSlot] = list(text_slots(event.data))
        blocking = self._inspection.inspect(slots, "response", record=False)
        if blocking:
            raise DlpBlocked(blocking, where="response")
        event.pieces = []
        event.raw = event.head + b"data: " + orjson.dumps(event.data) + b"\n\n"

    def _release(self) -> bytes:
        out: list[bytes] = []
        held = self._held
        while held and all(p.channel.released >= p.end for p in held[0].pieces):
            out.append(self._render(held.popleft()))
        return b"".join(out)

    def _render(self, event: _Event) -> bytes:
        changed = False
        for piece in event.pieces:
            spans = [
                (max(start, piece.start) - piece.start, min(end, piece.end) - piece.start, label)
                for start, end, label in piece.channel.redactions
                if start < piece.end and end > piece.start
            ]
            if not spans:
                continue
            # The placeholder goes where the finding starts; later pieces drop their share.
            own = [
                (lo, hi, label if lo + piece.start in _starts(piece.channel) else "")
                for lo, hi, label in spans
            ]
            original = piece.channel.text[piece.start : piece.end]
            piece.container[piece.key] = apply_edits(original, own)
            changed = True
        if not changed:
            return event.raw
        return event.head + b"data: " + orjson.dumps(event.data) + b"\n\n"


def _starts(channel: _Channel) -> set[int]:
    return {start for start, _, _ in channel.redactions}
