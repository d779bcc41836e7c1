"""Pure translation of Gemini's streamed `GenerateContentResponse` events into OpenAI
`chat.completion.chunk` objects, one event at a time."""

from __future__ import annotations

from dataclasses import dataclass

from agentwatch.errors import UpstreamError
from agentwatch.providers.base import JSONObject, Usage
from agentwatch.providers.gemini_response import (
    finish_reason,
    openai_usage,
    tool_call,
    usage_from_metadata,
)


@dataclass(slots=True)
class _Choice:
    """What one candidate's stream has said so far."""

    started: bool = False  # the `role` delta went out
    calls: int = 0  # tool calls sent: the next call's index
    finish: str | None = None


class GeminiStreamTranslator:
    """Feed it each event's JSON; it returns the OpenAI chunks to send. `finish()` gives the
    closing chunks once the upstream is done. Gemini sends no finish chunk of its own: the
    last event carries `finishReason` alongside content, so finishes are held until the end."""

    def __init__(
        self, *, model: str, completion_id: str, created: int, forward_usage: bool
    ) -> None:
        self.usage: Usage | None = None
        self.content_events = 0  # chunks with content or tool calls: a token estimate
        self._model = model
        self._id = completion_id
        self._created = created
        self._forward_usage = forward_usage
        self._metadata: JSONObject | None = None
        self._choices: dict[int, _Choice] = {}
        self._blocked = False

    @property
    def usage_final(self) -> bool:
        """Counts are running totals; the last event (every candidate finished) has the answer's."""
        choices = self._choices.values()
        return self.usage is not None and bool(choices) and all(c.finish for c in choices)

    def feed(self, event: JSONObject) -> list[JSONObject]:
        metadata = event.get("usageMetadata")
        if isinstance(metadata, dict):
            # Counts are running totals, so the latest one is the answer.
            self._metadata = metadata
            self.usage = usage_from_metadata(metadata)
        self._model = event.get("modelVersion") or self._model
        if (event.get("promptFeedback") or {}).get("blockReason"):
            self._blocked = True
        chunks: list[JSONObject] = []
        for position, candidate in enumerate(event.get("candidates") or []):
            index = candidate.get("index", position)
            choice = self._choices.setdefault(index, _Choice())
            for part in (candidate.get("content") or {}).get("parts") or []:
                if part.get("thought"):
                    continue  # thinking is billed, not shown
                if isinstance(part.get("functionCall"), dict):
                    call = {"index": choice.calls, **tool_call(part)}
                    choice.calls += 1
                    chunks.append(self._delta(index, choice, {"tool_calls": [call]}))
                elif part.get("text"):
                    chunks.append(self._delta(index, choice, {"content": part["text"]}))
            if candidate.get("finishReason"):
                choice.finish = candidate["finishReason"]
        self.content_events += len(chunks)
        return chunks

    def finish(self) -> list[JSONObject]:
        """The finish chunk of every choice, then the usage chunk if the client asked for it."""
        if self._blocked and not self._choices:
            self._choices[0] = _Choice(finish="SAFETY")
        if not self._choices or any(c.finish is None for c in self._choices.values()):
            raise UpstreamError("the Gemini stream ended before a finish reason")
        chunks = [
            self._chunk(
                index,
                {} if choice.started else {"role": "assistant", "content": ""},
                finish_reason(choice.finish, has_calls=choice.calls > 0),
            )
            for index, choice in sorted(self._choices.items())
        ]
        if self._forward_usage and self._metadata is not None:
            chunks.append(self._base() | {"choices": [], "usage": openai_usage(self._metadata)})
        return chunks

    def _delta(self, index: int, choice: _Choice, delta: JSONObject) -> JSONObject:
        if not choice.started:
            choice.started = True
            delta = {"role": "assistant", **delta}
        return self._chunk(index, delta, None)

    def _chunk(self, index: int, delta: JSONObject, finish: str | None) -> JSONObject:
        choice = {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
        return self._base() | {"choices": [choice]}

    def _base(self) -> JSONObject:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
        }
