"""Token counting: tiktoken from encoding files on disk only (never a download), the documented
approximation otherwise, and the text each request format and stream format carries."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import logging
import math
import socket
from pathlib import Path
from typing import Any

import orjson
import pytest
import tiktoken
import tiktoken.load
import tiktoken.registry
from tiktoken_ext import openai_public  # type: ignore[import-untyped]

from agentwatch.token_text import (
    COMPACT_BYTES,
    IMAGE_TOKENS,
    REPLY_PRIMING,
    ROLE_TOKENS,
    TOKENS_PER_MESSAGE,
    TOKENS_PER_NAME,
    StreamedText,
    streamed_text,
)
from agentwatch.tokens import (
    ENCODINGS,
    EXACT_BYTES,
    TOKENS_DIR,
    TokenCounter,
    approximate_tokens,
    encoding_name,
)

# A tiny but valid BPE vocabulary: every byte, then whole words.
WORDS = [b"he", b"ll", b"hell", b"hello", b" hello", b" world", b" there", b"!"]


def write_encoding(directory: Path, file_name: str, words: list[bytes] = WORDS) -> Path:
    ranks = [bytes([b]) for b in range(256)] + [w for w in words if len(w) > 1]
    lines = [
        base64.b64encode(token) + b" " + str(rank).encode() for rank, token in enumerate(ranks)
    ]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / file_name
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any socket connection, and every tiktoken path that can download, fails the test."""

    def refuse(*args: object, **kwargs: object) -> Any:
        raise AssertionError(f"network or tiktoken download attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(tiktoken.load, "read_file", refuse)
    monkeypatch.setattr(tiktoken.load, "read_file_cached", refuse)
    monkeypatch.setattr(tiktoken.registry, "get_encoding", refuse)
    monkeypatch.setattr(tiktoken, "get_encoding", refuse)
    monkeypatch.setattr(tiktoken, "encoding_for_model", refuse)


@pytest.mark.usefixtures("no_network")
def test_an_encoding_file_in_the_data_directory_is_used_offline(tmp_path: Path) -> None:
    write_encoding(tmp_path / TOKENS_DIR, "cl100k_base.tiktoken")
    counter = TokenCounter.load(tmp_path)
    assert counter.encodings == ("cl100k_base",)
    # Whole words of the vocabulary are one token each; the approximation would say 3.
    assert counter.count_text_tokens("hello world", "gpt-4") == 2
    assert approximate_tokens("hello world") == 3
    assert counter.count_text_tokens("xyz", "gpt-3.5-turbo") == 3  # bytes: not in the vocabulary
    # o200k models have no file here: approximated.
    assert counter.count_text_tokens("hello world", "gpt-4o") == 3
    assert counter.count_text_tokens("hello world", "claude-sonnet-4-5") == 3


@pytest.mark.usefixtures("no_network")
def test_tiktoken_cache_dir_is_read_by_name_and_by_tiktokens_cache_name(tmp_path: Path) -> None:
    write_encoding(tmp_path / "cache", ENCODINGS["o200k_base"].cache_name)
    write_encoding(tmp_path / "cache", "cl100k_base.tiktoken")
    counter = TokenCounter.load(tmp_path / "data", str(tmp_path / "cache"))
    assert counter.encodings == ("cl100k_base", "o200k_base")
    assert counter.count_text_tokens("hello there!", "openai/gpt-4o-mini") == 3


def test_no_file_means_the_approximation(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, "agentwatch.tokens"):
        counter = TokenCounter.load(tmp_path)
    assert counter.encodings == ()
    assert counter.count_text_tokens("hello world", "gpt-4o") == 3
    assert "counted approximately" in caplog.text


def test_a_malformed_file_is_refused_with_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / TOKENS_DIR).mkdir()
    (tmp_path / TOKENS_DIR / "cl100k_base.tiktoken").write_bytes(b"not-base64!! x\n")
    counter = TokenCounter.load(tmp_path)
    assert counter.encodings == ()
    assert "cannot use" in caplog.text and "line 1" in caplog.text


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_specs_match_tiktokens_own_registry(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Patterns, special tokens, published hash and cache file name are tiktoken's (read from
    its registry with the download replaced), so an upgrade that changes them fails here."""
    asked: list[tuple[str, str]] = []

    def fake_load(url: str, expected_hash: str) -> dict[bytes, int]:
        asked.append((url, expected_hash))
        return {b"a": 0}

    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", fake_load)
    theirs = getattr(openai_public, name)()
    ours = ENCODINGS[name]
    assert ours.pattern == theirs["pat_str"]
    assert dict(ours.special_tokens) == theirs["special_tokens"]
    ((url, sha256),) = asked
    assert ours.sha256 == sha256
    assert ours.cache_name == hashlib.sha1(url.encode()).hexdigest()


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("o1", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("openai/gpt-5-mini", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("text-embedding-ada-002", "cl100k_base"),
        ("claude-sonnet-4-5", None),
        ("gemini-2.5-pro", None),
        ("llama-3.1-70b", None),
        ("omni", None),
    ],
)
def test_model_to_encoding(model: str, encoding: str | None) -> None:
    assert encoding_name(model) == encoding


def test_approximation_is_utf8_bytes_over_four() -> None:
    assert approximate_tokens("") == 0
    assert approximate_tokens("abcd") == 1
    assert approximate_tokens("abcde") == 2
    assert approximate_tokens("日本") == 2  # 6 bytes


# The "How to count tokens with tiktoken" cookbook's example, with the prompt_tokens the
# OpenAI API reported for it: 129 (gpt-3.5-turbo, gpt-4: cl100k_base), 124 (gpt-4o: o200k).
COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities "
        "for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client "
        "deliverable.",
    },
]


def test_the_approximation_against_openais_own_counts() -> None:
    """Documented in docs/configuration.md: about 30 % over, never under, for English."""
    counted = TokenCounter().count_prompt_tokens(
        "/v1/chat/completions", {"messages": COOKBOOK_MESSAGES}, "gpt-4o"
    )
    assert counted == 160
    assert 124 < counted < 124 * 1.35


def test_chat_prompt_framing_and_parts() -> None:
    counter = TokenCounter()
    payload = {
        "messages": [
            {"role": "system", "content": "a" * 8},
            {"role": "user", "name": "bob", "content": [{"type": "text", "text": "b" * 4}]},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"function": {"name": "abcd", "arguments": '{"a":1}'}}],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "c" * 12},
        ],
    }
    framing = 5 * (TOKENS_PER_MESSAGE + ROLE_TOKENS) + TOKENS_PER_NAME + REPLY_PRIMING
    texts = 2 + 1 + 1 + 1 + 2 + 3  # a*8, bob, b*4, abcd, {"a":1}, c*12
    expected = framing + texts + IMAGE_TOKENS
    assert counter.count_prompt_tokens("/v1/chat/completions", payload, "gpt-4o") == expected
    with_tools = {
        **payload,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
    }
    assert counter.count_prompt_tokens("/v1/chat/completions", with_tools, "gpt-4o") > expected


def test_anthropic_and_responses_prompts_count_every_part() -> None:
    counter = TokenCounter()
    messages = {
        "system": [{"type": "text", "text": "s" * 40}],
        "messages": [
            {"role": "user", "content": "u" * 40},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "t" * 40, "signature": "sig"},
                    {"type": "tool_use", "id": "t1", "name": "n" * 4, "input": {"q": "v" * 32}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "r" * 40},
                    {"type": "image", "source": {"type": "base64", "data": "A" * 100_000}},
                ],
            },
        ],
    }
    framing = 3 * (TOKENS_PER_MESSAGE + ROLE_TOKENS) + REPLY_PRIMING
    # s, u, t, name, {"q":"v..."} (40 bytes), r: 10 + 10 + 10 + 1 + 10 + 10; the image is flat.
    expected = framing + 51 + IMAGE_TOKENS
    assert counter.count_prompt_tokens("/v1/messages", messages, "claude-sonnet-4-5") == expected
    assert counter.count_prompt_tokens("/v1/messages/count_tokens", messages, "x") == expected
    responses = {
        "instructions": "i" * 40,
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "u" * 40}]},
            {"type": "function_call", "call_id": "c", "name": "n" * 4, "arguments": "a" * 40},
            {"type": "function_call_output", "call_id": "c", "output": "o" * 40},
        ],
    }
    framing = 4 * TOKENS_PER_MESSAGE + ROLE_TOKENS + REPLY_PRIMING
    expected = framing + 10 + 10 + 1 + 10 + 10
    assert counter.count_prompt_tokens("/v1/responses", responses, "gpt-4o") == expected
    plain = {"input": "x" * 40}
    assert counter.count_prompt_tokens("/v1/responses", plain, "gpt-4o") == 10 + 6


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("abcdefgh", 2),
        (["abcd", "abcdefgh"], 3),
        ([1, 2, 3, 4, 5], 5),
        ([[1, 2], [3, 4, 5]], 5),
    ],
)
def test_embeddings_and_legacy_prompts_take_text_or_token_ids(value: object, expected: int) -> None:
    counter = TokenCounter()
    assert counter.count_prompt_tokens("/v1/embeddings", {"input": value}, "x") == expected
    assert counter.count_prompt_tokens("/v1/completions", {"prompt": value}, "x") == expected


@pytest.mark.usefixtures("no_network")
def test_long_prompts_count_a_prefix_exactly_and_extrapolate(tmp_path: Path) -> None:
    write_encoding(tmp_path / TOKENS_DIR, "o200k_base.tiktoken")
    counter = TokenCounter.load(tmp_path)
    unit = " hello world"  # 2 tokens in 12 bytes
    long_text = unit * (10 * EXACT_BYTES // len(unit))
    payload = {"messages": [{"role": "user", "content": long_text}]}
    counted = counter.count_prompt_tokens("/v1/chat/completions", payload, "gpt-4o")
    exact = counter.count_text_tokens(long_text, "gpt-4o") + TOKENS_PER_MESSAGE + 1 + 3
    assert exact == 2 * long_text.count(unit) + 7
    assert abs(counted - exact) <= exact * 0.001
    # The approximation would be far off (12 bytes / 4 per 2 tokens): the ratio is measured.
    assert abs(counted - approximate_tokens(long_text)) > exact * 0.3


def chat_event(delta: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": delta}]}) + b"\n\n"


def test_streamed_text_of_every_format() -> None:
    openai = [
        chat_event({"role": "assistant", "content": ""}),
        chat_event({"content": "Hel"}) + chat_event({"content": "lo"}),
        chat_event({"reasoning_content": "think"}),
        chat_event({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{}"}}]}),
        b'data: {"choices":[{"index":0,"text":"legacy"}]}\r\n\r\n',
        b"data: [DONE]\n\n",
    ]
    assert streamed_text(openai) == ["Hel", "lo", "think", "f", "{}", "legacy"]
    anthropic = [
        b'event: message_start\ndata: {"type":"message_start","message":{"usage":{}}}\n\n',
        b'event: content_block_start\ndata: {"type":"content_block_start","index":1,'
        b'"content_block":{"type":"tool_use","name":"search","input":{}}}\n\n',
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"Hi"}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"thinking_delta","thinking":"hmm"}}\n\n',
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,'
        b'"delta":{"type":"input_json_delta","partial_json":"{\\"q\\""}}\n\n',
        b"event: ping\ndata: {}\n\n",
    ]
    assert streamed_text(anthropic) == ["search", "Hi", "hmm", '{"q"']
    responses = [
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
        b'"delta":"Yes"}\n\n',
        b'event: response.function_call_arguments.delta\ndata: {"type":'
        b'"response.function_call_arguments.delta","delta":"{}"}\n\n',
        b'event: response.completed\ndata: {"type":"response.completed","response":{}}\n\n',
    ]
    assert streamed_text(responses) == ["Yes", "{}"]


def test_streamed_text_keeps_long_streams_as_text() -> None:
    held = StreamedText()
    event = chat_event({"content": "word "})
    count = 3 * COMPACT_BYTES // len(event)
    for _ in range(count):
        held.add(event)
    assert "".join(held.texts()) == "word " * count
    assert len(held._events) * len(event) <= COMPACT_BYTES  # compacted, not all kept


def test_count_rounds_up_per_string() -> None:
    assert TokenCounter().count_text_tokens("x" * 9, "x") == math.ceil(9 / 4)
    assert TokenCounter().count_text_tokens("", "gpt-4o") == 0


def test_the_speed_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """bench/token_count.py on tiny inputs, so it cannot rot between benchmark runs."""
    spec = importlib.util.spec_from_file_location(
        "token_count", Path(__file__).resolve().parent.parent / "bench" / "token_count.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = bench.main(["--sizes", "100,2000", "--runs", "1", "--vocabulary", "2000"])
    assert "| 2,000 |" in report and "2000 ranks" in capsys.readouterr().out
