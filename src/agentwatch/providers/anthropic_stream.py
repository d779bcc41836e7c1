"""Anthropic's Messages stream: SSE event parsing, the running usage count, and the translation
of its events into OpenAI `chat.completion.chunk`s. Pure: the HTTP side is in `anthropic`."""

from __future__ import annotations

import orjson

from agentwatch.errors import UpstreamError
from agentwatch.providers.anthropic_errors import error_from_event
from agentwatch.providers.anthropic_wire import finish_reason, openai_usage, usage_from_anthropic
from agentwatch.providers.base import JSONObject, Usage

_COUNTS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


def event_data(event: bytes, provider: str) -> JSONObject | None:
    """The parsed `data:` of one SSE event (`event: NAME\ndata: JSON`, LF line ends), its `type`
    taken from the event name if the data lacks one; None for an event with no data."""
    name, data_lines = b"", []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            data_lines.append(line[5:])
        elif line.startswith(b"event:"):
            name = line[6:].strip()
    if not data_lines:
        return None
    try:
        data = orjson.loads(data_lines[0] if len(data_lines) == 1 else b"\n".join(data_lines))
    except orjson.JSONDecodeError as exc:
        raise UpstreamError(
            f"upstream provider '{provider}' sent a stream event that is not JSON"
        ) from exc
    if not isinstance(data, dict):
        return None
    if "type" not in data and name:
        data["type"] = name.decode(errors="replace")
    return data


class StreamUsage:
    """Counts as the stream reports them: `message_start` brings the input, each `message_delta`
    the output so far. Every figure is cumulative, so the latest value wins; none is summed."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._final = False

    def update(self, usage: object, *, final: bool) -> None:
        if isinstance(usage, dict):
            for name in _COUNTS:
                value = usage.get(name)
                if isinstance(value, int) and not isinstance(value, bool):
                    self._counts[name] = value
        self._final = self._final or final

    @property
    def final(self) -> bool:
        """`message_delta` arrived: the output count is the answer's, not a placeholder."""
        return self._final

    def current(self, content_events: int) -> Usage | None:
        """Until `message_delta` arrives the output count is a placeholder (often 1), so a
        stream the client abandons is billed at least one token per content event."""
        usage = usage_from_anthropic(self._counts) if self._counts else None
        if usage is not None and not self._final:
            usage.completion_tokens = max(usage.completion_tokens, content_events)
        return usage


class ChunkTranslator:
    """Fed Anthropic stream events in order, returns the OpenAI chunks each one becomes.

    Tool calls are numbered by their order among tool_use blocks (OpenAI's `index`), not by
    Anthropic's block index, which also counts text and thinking blocks. `finished` turns true
    at `message_stop`; an `error` event raises the matching gateway error.
    """

    def __init__(self, provider: str, *, forward_usage: bool, created: int) -> None:
        self.finished = False
        self.content_events = 0
        self._provider = provider
        self._forward_usage = forward_usage
        self._created = created
        self._id: object = None
        self._model: object = None
        self._tools: dict[object, int] = {}  # Anthropic block index -> OpenAI tool call index
        self._usage = StreamUsage()

    @property
    def usage(self) -> Usage | None:
        return self._usage.current(self.content_events)

    @property
    def usage_final(self) -> bool:
        return self._usage.final

    def feed(self, event: JSONObject) -> list[JSONObject]:
        match event.get("type"):
            case "message_start":
                return self._message_start(event.get("message"))
            case "content_block_start":
                return self._block_start(event.get("index"), event.get("content_block"))
            case "content_block_delta":
                return self._block_delta(event.get("index"), event.get("delta"))
            case "message_delta":
                delta = event.get("delta")
                stop = delta.get("stop_reason") if isinstance(delta, dict) else None
                self._usage.update(event.get("usage"), final=True)
                return [self._chunk({}, finish_reason(stop))]
            case "message_stop":
                self.finished = True
                return self._usage_chunk()
            case "error":
                raise error_from_event(self._provider, event)
            case _:
                # ping, content_block_stop, and event types newer than this adapter.
                return []

    def _message_start(self, message: object) -> list[JSONObject]:
        if isinstance(message, dict):
            self._id, self._model = message.get("id"), message.get("model")
            self._usage.update(message.get("usage"), final=False)
        return [self._chunk({"role": "assistant", "content": ""})]

    def _block_start(self, index: object, block: object) -> list[JSONObject]:
        if not isinstance(block, dict):
            return []
        if block.get("type") == "tool_use":
            ordinal = self._tools[index] = len(self._tools)
            call = {
                "index": ordinal,
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": ""},
            }
            return [self._chunk({"tool_calls": [call]})]
        if block.get("type") == "text" and block.get("text"):
            self.content_events += 1
            return [self._chunk({"content": block["text"]})]
        return []

    def _block_delta(self, index: object, delta: object) -> list[JSONObject]:
        if not isinstance(delta, dict):
            return []
        kind = delta.get("type")
        if kind == "text_delta":
            self.content_events += 1
            return [self._chunk({"content": delta.get("text", "")})]
        if kind == "input_json_delta" and delta.get("partial_json") and index in self._tools:
            self.content_events += 1
            call = {"index": self._tools[index], "function": {"arguments": delta["partial_json"]}}
            return [self._chunk({"tool_calls": [call]})]
        # thinking_delta and signature_delta: the pivot has no place for Claude's reasoning.
        return []

    def _usage_chunk(self) -> list[JSONObject]:
        usage = self.usage
        if not self._forward_usage or usage is None:
            return []
        return [self._envelope() | {"choices": [], "usage": openai_usage(usage)}]

    def _chunk(self, delta: JSONObject, finish: str | None = None) -> JSONObject:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return self._envelope() | {"choices": [choice]}

    def _envelope(self) -> JSONObject:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
        }
