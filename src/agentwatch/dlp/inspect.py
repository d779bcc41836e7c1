"""Applying a DLP policy to one call: find, then block, redact or log, and keep the events.

A request body is walked for the text it sends upstream (message content, tool arguments and
results, system prompts, embedding inputs); every string is scanned in one pass over their
concatenation. Redaction replaces a finding with a typed placeholder, `[REDACTED:EMAIL_1]`,
numbered per detector and value, so the same value reads the same everywhere in the call,
the response included.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentwatch.dlp.engine import Scanner
from agentwatch.dlp.policy import ActivePolicy
from agentwatch.dlp.types import Action, Finding

# Keys whose values are identifiers, enums or binary payloads, never text a person wrote.
_NOT_TEXT = frozenset(
    {
        "role",
        "type",
        "id",
        "tool_call_id",
        "tool_use_id",
        "call_id",
        "item_id",
        "name",
        "model",
        "object",
        "signature",
        "encrypted_content",
        "media_type",
        "mime_type",
        "detail",
        "format",
        "data",
        "cache_control",
        "status",
        "finish_reason",
        "stop_reason",
        "stop_sequence",
        "logprobs",
        "usage",
        "system_fingerprint",
        "service_tier",
        "created",
        "created_at",
        "index",
    }
)
_TOOL_USE_TYPES = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})
_SEPARATOR = "\n\n"
_ACTION_RANK: dict[Action, int] = {"off": 0, "log": 1, "redact": 2, "block": 3}

Path = tuple[str | int, ...]


class TextSlot:
    """A string inside a JSON document, and how to put a new one in its place."""

    __slots__ = ("container", "key", "path", "text")

    def __init__(self, container: Any, key: str | int, path: Path, text: str) -> None:
        self.container = container
        self.key = key
        self.path = path
        self.text = text

    def replace(self, text: str) -> None:
        self.container[self.key] = text


def text_slots(value: object, path: Path = (), *, free_form: bool = False) -> Iterator[TextSlot]:
    """Every string in `value` that is text (not an id, enum or base64 payload), in order.
    Inside a tool call's input object (`free_form`) every string counts, whatever its key."""
    if isinstance(value, dict):
        tool_use = not free_form and value.get("type") in _TOOL_USE_TYPES
        for key, item in value.items():
            if not free_form and key in _NOT_TEXT:
                continue
            if isinstance(item, str):
                if not _is_binary(item):
                    yield TextSlot(value, key, (*path, key), item)
            elif isinstance(item, dict | list):
                inner = free_form or (tool_use and key == "input")
                yield from text_slots(item, (*path, key), free_form=inner)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, str):
                if not _is_binary(item):
                    yield TextSlot(value, index, (*path, index), item)
            elif isinstance(item, dict | list):
                yield from text_slots(item, (*path, index), free_form=free_form)


def _is_binary(text: str) -> bool:
    return text.startswith("data:") and ";base64," in text[:100]


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


@dataclass(frozen=True, slots=True)
class DlpEvent:
    """One acted-on finding, as stored: where and what kind, never the matched value."""

    detector: str
    category: str
    severity: int
    confidence: float
    action: Action
    where: str  # "request" or "response"
    path: str  # JSON path of the string, such as "messages[1].content"
    start: int  # character offsets in that string
    end: int

    def as_json(self) -> dict[str, object]:
        return {
            "detector": self.detector,
            "category": self.category,
            "severity": self.severity,
            "confidence": self.confidence,
            "action": self.action,
            "where": self.where,
            "path": self.path,
            "start": self.start,
            "end": self.end,
        }

    @property
    def risk(self) -> float:
        """This finding's share of risk, 0..1: severity (of 4) times confidence."""
        return self.severity / 4 * self.confidence


@dataclass(slots=True)
class Inspection:
    """One call's DLP state: its policy, placeholders handed out and events recorded."""

    policy: ActivePolicy
    scanner: Scanner
    events: list[DlpEvent] = field(default_factory=list)
    _placeholders: dict[tuple[str, str], str] = field(default_factory=dict)
    _counts: dict[str, int] = field(default_factory=dict)

    def placeholder(self, detector: str, value: str) -> str:
        known = self._placeholders.get((detector, value))
        if known is None:
            number = self._counts.get(detector, 0) + 1
            self._counts[detector] = number
            known = f"[REDACTED:{detector.upper()}_{number}]"
            self._placeholders[(detector, value)] = known
        return known

    def acted_on(self, findings: Sequence[Finding]) -> list[tuple[Finding, Action]]:
        """The findings the policy cares about, with the action each gets."""
        policy = self.policy
        out: list[tuple[Finding, Action]] = []
        for finding in findings:
            action = policy.actions.get(finding.detector)
            if action is not None and finding.confidence >= policy.min_confidence:
                out.append((finding, action))
        return out

    def record(
        self, finding: Finding, action: Action, where: str, path: str, start: int, end: int
    ) -> None:
        """Keep the event of an acted-on finding; offsets are in the string at `path`."""
        self.events.append(
            DlpEvent(
                finding.detector,
                finding.category.value,
                int(finding.severity),
                finding.confidence,
                action,
                where,
                path,
                start,
                end,
            )
        )

    def inspect(self, slots: Sequence[TextSlot], where: str, *, record: bool = True) -> list[str]:
        """Scan the strings, redact in place, record events (unless `record` is false: text
        already accounted for, such as a stream's closing copy of its deltas). Returns the
        detectors that block, if any; then nothing is redacted: the call is refused."""
        if not slots:
            return []
        joined = _SEPARATOR.join(slot.text for slot in slots)
        starts: list[int] = []
        offset = 0
        for slot in slots:
            starts.append(offset)
            offset += len(slot.text) + len(_SEPARATOR)
        found = self.acted_on(self.scanner.scan(joined))
        if not found:
            return []
        blocking = sorted({f.detector for f, action in found if action == "block"})
        edits: dict[int, list[tuple[int, int, str]]] = {}
        for finding, action in found:
            index = bisect.bisect_right(starts, finding.start) - 1
            slot, base = slots[index], starts[index]
            end = min(finding.end, base + len(slot.text))  # a match never spans two strings
            if record:
                path = format_path(slot.path)
                self.record(finding, action, where, path, finding.start - base, end - base)
            if action == "redact" and not blocking:
                value = joined[finding.start : end]
                local = (finding.start - base, end - base)
                edits.setdefault(index, []).append(
                    (*local, self.placeholder(finding.detector, value))
                )
        for index, spans in edits.items():
            slots[index].replace(apply_edits(slots[index].text, spans))
        return blocking

    @property
    def strongest_action(self) -> Action | None:
        if not self.events:
            return None
        return max((e.action for e in self.events), key=_ACTION_RANK.__getitem__)

    @property
    def risk_score(self) -> float:
        """0..100: the chance that at least one finding is real and harmful, reading each
        finding's severity times confidence as an independent probability."""
        safe = 1.0
        for event in self.events:
            safe *= 1.0 - event.risk
        return round(100.0 * (1.0 - safe), 2)


def apply_edits(text: str, spans: Sequence[tuple[int, int, str]]) -> str:
    """`text` with each (start, end) span replaced by its placeholder; spans do not overlap."""
    out: list[str] = []
    position = 0
    for start, end, replacement in sorted(spans):
        out.append(text[position:start])
        out.append(replacement)
        position = end
    out.append(text[position:])
    return "".join(out)


# The request fields each endpoint sends upstream as text.
REQUEST_FIELDS: Mapping[str, tuple[str, ...]] = {
    "/v1/chat/completions": ("messages",),
    "/v1/completions": ("prompt",),
    "/v1/embeddings": ("input",),
    "/v1/messages": ("system", "messages"),
    "/v1/messages/count_tokens": ("system", "messages"),
    "/v1/responses": ("instructions", "input"),
}


def request_slots(endpoint: str, payload: dict[str, Any]) -> list[TextSlot]:
    slots: list[TextSlot] = []
    for name in REQUEST_FIELDS.get(endpoint, ()):
        value = payload.get(name)
        if isinstance(value, str):
            slots.append(TextSlot(payload, name, (name,), value))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                # The common case on the hot path: a message whose content is one string.
                if isinstance(item, dict) and _plain_message(item):
                    content = item.get("content")
                    if isinstance(content, str) and not _is_binary(content):
                        slots.append(TextSlot(item, "content", (name, index, "content"), content))
                elif isinstance(item, str):
                    if not _is_binary(item):
                        slots.append(TextSlot(value, index, (name, index), item))
                elif isinstance(item, dict | list):
                    slots.extend(text_slots(item, (name, index)))
        elif isinstance(value, dict):
            slots.extend(text_slots(value, (name,)))
    return slots


_PLAIN_MESSAGE_KEYS = frozenset({"role", "content"})


def _plain_message(message: dict[str, Any]) -> bool:
    """Only a role and (string or no) content: nothing else in it to scan."""
    return message.keys() <= _PLAIN_MESSAGE_KEYS and not isinstance(
        message.get("content"), list | dict
    )
