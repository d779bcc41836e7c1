"""Which text a request sends and a stream returns, per wire format: what the token counter
counts. Pure functions over parsed JSON (requests) and SSE bytes (streams)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import orjson

# OpenAI's chat framing (the cookbook's `num_tokens_from_messages`): every message costs 3
# tokens, a `name` one more, and the reply is primed with 3.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
ROLE_TOKENS = 1  # system, user, assistant, tool, developer: one token each in every encoding
REPLY_PRIMING = 3
TOKENS_PER_TOOL = 7  # a function definition's framing, before its name and schema
TOOLS_FRAMING = 12  # once, when any tools are declared
# Media are not text: a flat count each. 765 is a 1024x1024 image at OpenAI's high detail
# (85 + 170 x 4 tiles); Anthropic's 1.15 megapixel images come to about 1,600.
IMAGE_TOKENS = 765
FILE_TOKENS = 1000  # a document or audio part whose length the request does not say


@dataclass(slots=True)
class PromptText:
    texts: list[str] = field(default_factory=list)
    overhead: int = 0  # framing and media, in tokens
    given_tokens: int = 0  # prompts sent as token ids (embeddings, legacy completions)


def prompt_text(endpoint: str, payload: Mapping[str, object]) -> PromptText:
    prompt = PromptText()
    if endpoint == "/v1/chat/completions":
        _chat(prompt, payload)
    elif endpoint in ("/v1/messages", "/v1/messages/count_tokens"):
        _messages(prompt, payload)
    elif endpoint == "/v1/responses":
        _responses(prompt, payload)
    elif endpoint == "/v1/embeddings":
        _token_input(prompt, payload.get("input"))
    elif endpoint == "/v1/completions":
        _token_input(prompt, payload.get("prompt"))
        _text(prompt, payload.get("suffix"))
    else:
        prompt.texts.append(orjson.dumps(payload).decode())
    return prompt


def _chat(prompt: PromptText, payload: Mapping[str, object]) -> None:
    for message in _dicts(payload.get("messages")):
        prompt.overhead += TOKENS_PER_MESSAGE + ROLE_TOKENS
        if isinstance(message.get("name"), str):
            prompt.overhead += TOKENS_PER_NAME
            _text(prompt, message["name"])
        _content(prompt, message.get("content"))
        _text(prompt, message.get("refusal"))
        for call in [*_dicts(message.get("tool_calls")), *_dicts([message.get("function_call")])]:
            function = call.get("function", call)
            if isinstance(function, dict):
                _text(prompt, function.get("name"))
                _text(prompt, function.get("arguments"))
    prompt.overhead += REPLY_PRIMING
    _tools(prompt, payload.get("tools"), "function")
    _tools(prompt, payload.get("functions"), None)
    response_format = payload.get("response_format")
    if isinstance(response_format, dict) and response_format.get("json_schema") is not None:
        _json(prompt, response_format["json_schema"])


def _messages(prompt: PromptText, payload: Mapping[str, object]) -> None:
    """Anthropic Messages: `system`, then each message's text, tool calls and results."""
    _content(prompt, payload.get("system"))
    for message in _dicts(payload.get("messages")):
        prompt.overhead += TOKENS_PER_MESSAGE + ROLE_TOKENS
        _content(prompt, message.get("content"))
    prompt.overhead += REPLY_PRIMING
    _tools(prompt, payload.get("tools"), None)


def _responses(prompt: PromptText, payload: Mapping[str, object]) -> None:
    """OpenAI Responses: `instructions`, then `input` (a string or a list of items)."""
    if isinstance(payload.get("instructions"), str):
        prompt.overhead += TOKENS_PER_MESSAGE
        _text(prompt, payload["instructions"])
    items = payload.get("input")
    if isinstance(items, str):
        prompt.overhead += TOKENS_PER_MESSAGE
        _text(prompt, items)
    for item in _dicts(items):
        prompt.overhead += TOKENS_PER_MESSAGE + (ROLE_TOKENS if "role" in item else 0)
        _content(prompt, item.get("content"))
        for key in ("name", "arguments", "output", "input"):
            _content(prompt, item.get(key))
        for part in _dicts(item.get("summary")):
            _text(prompt, part.get("text"))
    prompt.overhead += REPLY_PRIMING
    _tools(prompt, payload.get("tools"), None)


def _content(prompt: PromptText, content: object) -> None:
    """A string, or a list of parts in any of the three formats."""
    if isinstance(content, str):
        _text(prompt, content)
        return
    for part in _dicts(content):
        kind = part.get("type")
        if kind in ("image_url", "image", "input_image"):
            prompt.overhead += IMAGE_TOKENS
        elif kind in ("input_audio", "file", "input_file", "document"):
            prompt.overhead += FILE_TOKENS
        elif kind == "tool_use":
            _text(prompt, part.get("name"))
            _json(prompt, part.get("input"))
        elif kind == "tool_result":
            _content(prompt, part.get("content"))
        else:
            for key in ("text", "thinking", "refusal"):
                _text(prompt, part.get(key))


def _tools(prompt: PromptText, tools: object, wrapper: str | None) -> None:
    declared = list(_dicts(tools))
    for tool in declared:
        spec = tool.get(wrapper) if wrapper and isinstance(tool.get(wrapper), dict) else tool
        assert isinstance(spec, dict)
        prompt.overhead += TOKENS_PER_TOOL
        _text(prompt, spec.get("name"))
        _text(prompt, spec.get("description"))
        for key in ("parameters", "input_schema"):
            _json(prompt, spec.get(key))
    if declared:
        prompt.overhead += TOOLS_FRAMING


def _token_input(prompt: PromptText, value: object) -> None:
    """A string, strings, token ids, or lists of token ids (embeddings, legacy completions)."""
    if isinstance(value, str):
        _text(prompt, value)
    elif isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            prompt.given_tokens += len(value)
            return
        for item in value:
            if isinstance(item, list):
                prompt.given_tokens += len(item)
            else:
                _text(prompt, item)


def _text(prompt: PromptText, value: object) -> None:
    if isinstance(value, str) and value:
        prompt.texts.append(value)


def _json(prompt: PromptText, value: object) -> None:
    if value is not None:
        prompt.texts.append(value if isinstance(value, str) else orjson.dumps(value).decode())


def _dicts(value: object) -> Iterator[dict[str, object]]:
    if isinstance(value, list):
        yield from (item for item in value if isinstance(item, dict))


# Streams ----------------------------------------------------------------------------------

_EVENT_END = b"\n\n"
_DELTA_TEXT_KEYS = ("content", "reasoning_content", "reasoning", "refusal")


def streamed_text(events: Iterable[bytes]) -> list[str]:
    """The generated text in SSE events of any format the relay passes: OpenAI chat chunks
    (content, reasoning, tool-call names and arguments), legacy completion chunks, Anthropic
    events (text, thinking, tool input) and Responses events (every `*.delta`)."""
    texts: list[str] = []
    for blob in events:
        for event in blob.replace(b"\r\n", b"\n").split(_EVENT_END):
            data = _event_data(event)
            if data is not None:
                _event_text(texts, data)
    return texts


def _event_data(event: bytes) -> dict[str, object] | None:
    lines = [line[5:] for line in event.split(b"\n") if line.startswith(b"data:")]
    if not lines or lines[0].strip() == b"[DONE]":
        return None
    try:
        data = orjson.loads(b"\n".join(lines))
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _event_text(texts: list[str], data: dict[str, object]) -> None:
    choices = data.get("choices")
    if isinstance(choices, list):
        for choice in _dicts(choices):
            _text_into(texts, choice.get("text"))
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                continue
            for key in _DELTA_TEXT_KEYS:
                _text_into(texts, delta.get(key))
            for call in _dicts(delta.get("tool_calls")):
                function = call.get("function")
                if isinstance(function, dict):
                    _text_into(texts, function.get("name"))
                    _text_into(texts, function.get("arguments"))
        return
    kind = data.get("type")
    if kind == "content_block_delta" and isinstance(data.get("delta"), dict):
        delta = data["delta"]
        assert isinstance(delta, dict)
        for key in ("text", "thinking", "partial_json"):
            _text_into(texts, delta.get(key))
    elif kind == "content_block_start" and isinstance(data.get("content_block"), dict):
        block = data["content_block"]
        assert isinstance(block, dict)
        _text_into(texts, block.get("text"))
        _text_into(texts, block.get("name"))
    elif isinstance(kind, str) and kind.endswith(".delta"):
        _text_into(texts, data.get("delta"))


def _text_into(texts: list[str], value: object) -> None:
    if isinstance(value, str) and value:
        texts.append(value)


COMPACT_BYTES = 256 * 1024


class StreamedText:
    """The events a relay passed, kept as they are until the text is asked for (the usual
    answer is: never). Past COMPACT_BYTES the held events are reduced to their text, so a long
    stream keeps about 4 bytes a token, not its JSON envelopes."""

    __slots__ = ("_events", "_held", "_texts")

    def __init__(self) -> None:
        self._events: list[bytes] = []
        self._held = 0
        self._texts: list[str] = []

    def add(self, event: bytes) -> None:
        self._events.append(event)
        self._held += len(event)
        if self._held > COMPACT_BYTES:
            self._texts.extend(streamed_text(self._events))
            self._events.clear()
            self._held = 0

    def texts(self) -> list[str]:
        return [*self._texts, *streamed_text(self._events)]
