"""Cost through a running gateway, with the official SDKs: a streamed call and a non-streamed
call of the same content record the same cost; a client that hangs up mid-stream is metered
for what the upstream produced; missing usage and unknown prices are recorded as unknown."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from agentwatch.tokens import TOKENS_DIR, TokenCounter
from tests.fake_metered import (
    ANTHROPIC_STALL_INPUT,
    ANTHROPIC_USAGE,
    STALL_AFTER,
    WORDS,
    FakeMetered,
)
from tests.support import Gateway, new_key, running_gateway

MESSAGES: list[Any] = [{"role": "user", "content": "Say hello to the world"}]
PRICE = {"input": 2.0, "output": 8.0, "cached": 0.5}  # USD per million tokens
CLAUDE_PRICE = {"input": 3.0, "output": 15.0, "cached": 0.3}
# The gateway's data directory holds an o200k_base file (a small synthetic vocabulary in
# which each of WORDS is one token), so disconnects of gpt-4o models are counted by tiktoken.
VOCABULARY = sorted({w.encode() for w in WORDS} | {b" hello", b"hello", b"Say", b" to", b" the"})


def config(upstream: str) -> str:
    def priced(price: dict[str, float]) -> str:
        return (
            f"    input_cost_per_mtok: {price['input']}\n"
            f"    output_cost_per_mtok: {price['output']}\n"
            f"    cached_input_cost_per_mtok: {price['cached']}\n"
        )

    def alias(name: str, provider: str, upstream_model: str, price: dict[str, float] | None) -> str:
        return (
            f"  - name: {name}\n{priced(price) if price else ''}"
            f"    routes:\n      - provider: {provider}\n        model: {upstream_model}\n"
        )

    return (
        "providers:\n"
        f"  - name: metered\n    type: openai_compatible\n    base_url: {upstream}/v1\n"
        f"  - name: claude\n    type: anthropic\n    base_url: {upstream}\n    api_key: sk-ant-x\n"
        "models:\n"
        + alias("metered", "metered", "gpt-4o-metered", PRICE)
        + alias("silent", "metered", "gpt-4o-no-usage", PRICE)
        + alias("stall", "metered", "gpt-4o-stall", PRICE)
        + alias("unpriced", "metered", "mystery-model", None)
        + alias("claude", "claude", "claude-metered", CLAUDE_PRICE)
        + alias("claude-stall", "claude", "claude-stall", CLAUDE_PRICE)
        + "tenants:\n  - name: ci\n    api_keys: [${CI_TENANT_KEY}]\n"
    )


def cost_usd(price: dict[str, float], prompt: int, cached: int, completion: int) -> float:
    nanos = round(
        (
            (prompt - cached) * price["input"]
            + cached * price["cached"]
            + completion * price["output"]
        )
        * 1000
    )
    return nanos / 1e9


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeMetered]:
    server = FakeMetered()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(upstream: FakeMetered, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("cost")
    ranks = [bytes([b]) for b in range(256)] + [w for w in VOCABULARY if len(w) > 1]
    lines = (base64.b64encode(t) + b" " + str(r).encode() for r, t in enumerate(ranks))
    (workdir / "data" / TOKENS_DIR).mkdir(parents=True)
    (workdir / "data" / TOKENS_DIR / "o200k_base.tiktoken").write_bytes(b"\n".join(lines))
    key = new_key()
    with running_gateway(workdir, config(upstream.base_url), key, {"CI_TENANT_KEY": key}) as gw:
        yield gw


def openai_client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.tenant_key, max_retries=0)


def claude_client(gateway: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=gateway.tenant_key, max_retries=0)


def row(gateway: Gateway, request_id: str) -> dict[str, Any]:
    (found,) = gateway.wait_for_usage(1, request_id=request_id)
    return found


def tokens(found: dict[str, Any]) -> tuple[Any, ...]:
    keys = ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens")
    return tuple(found[key] for key in keys)


def test_streamed_and_non_streamed_chat_record_the_same_cost(
    gateway: Gateway, upstream: FakeMetered
) -> None:
    client = openai_client(gateway)
    plain = client.chat.completions.with_raw_response.create(model="metered", messages=MESSAGES)
    with_usage = client.chat.completions.with_raw_response.create(
        model="metered", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    with_usage_chunks = list(with_usage.parse())
    without = client.chat.completions.with_raw_response.create(
        model="metered", messages=MESSAGES, stream=True
    )
    without_chunks = list(without.parse())
    # The client that did not ask gets no usage chunk; the gateway asked upstream all the same.
    assert [c.usage for c in with_usage_chunks if c.usage is not None]
    assert all(c.usage is None for c in without_chunks)
    assert upstream.requests[-1]["stream_options"] == {"include_usage": True}
    rows = [row(gateway, raw.headers["x-request-id"]) for raw in (plain, with_usage, without)]
    expected = cost_usd(PRICE, 40, 8, 25)
    for found in rows:
        assert tokens(found) == (40, 25, 8, 10)
        assert found["cost_usd"] == pytest.approx(expected, abs=1e-15)
        assert found["status"] == 200 and found["error_type"] is None
    assert len({found["cost_usd"] for found in rows}) == 1  # identical, not merely close
    assert [found["stream"] for found in rows] == [False, True, True]


def test_streamed_and_non_streamed_messages_record_the_same_cost(gateway: Gateway) -> None:
    client = claude_client(gateway)
    plain = client.messages.with_raw_response.create(
        model="claude", max_tokens=100, messages=MESSAGES
    )
    streamed = client.messages.with_raw_response.create(
        model="claude", max_tokens=100, messages=MESSAGES, stream=True
    )
    events = list(streamed.parse())
    assert events[-1].type == "message_stop"
    rows = [row(gateway, raw.headers["x-request-id"]) for raw in (plain, streamed)]
    prompt = ANTHROPIC_USAGE["input_tokens"] + ANTHROPIC_USAGE["cache_read_input_tokens"]
    cached, output = ANTHROPIC_USAGE["cache_read_input_tokens"], ANTHROPIC_USAGE["output_tokens"]
    for found in rows:
        assert tokens(found) == (prompt, output, cached, None)  # Claude reports no reasoning
        assert found["cost_usd"] == cost_usd(CLAUDE_PRICE, prompt, cached, output)


def test_a_chat_client_hanging_up_mid_stream_is_metered_for_what_was_produced(
    gateway: Gateway, upstream: FakeMetered
) -> None:
    raw = openai_client(gateway).chat.completions.with_raw_response.create(
        model="stall", messages=MESSAGES, stream=True
    )
    stream = raw.parse()
    received = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            received.append(chunk.choices[0].delta.content)
        if len(received) == STALL_AFTER:
            break
    stream.close()
    found = row(gateway, raw.headers["x-request-id"])
    assert found["status"] == 499 and found["error_type"] == "client_disconnected"
    counter = TokenCounter.load(gateway.workdir / "data")
    prompt = counter.count_prompt_tokens("/v1/chat/completions", {"messages": MESSAGES}, "gpt-4o")
    # Each streamed word is one token of the gateway's vocabulary (the approximation says 2).
    assert received == WORDS[:STALL_AFTER]
    assert tokens(found) == (prompt, STALL_AFTER, 0, None)
    assert found["cost_usd"] == cost_usd(PRICE, prompt, 0, STALL_AFTER)
    assert "gpt-4o-stall" in upstream.hung_up  # and the upstream stream was abandoned too


def test_a_messages_client_hanging_up_keeps_the_upstreams_own_counts(gateway: Gateway) -> None:
    raw = claude_client(gateway).messages.with_raw_response.create(
        model="claude-stall", max_tokens=100, messages=MESSAGES, stream=True
    )
    stream = raw.parse()
    deltas = 0
    for event in stream:
        deltas += event.type == "content_block_delta"
        if deltas == STALL_AFTER:
            break
    stream.close()
    found = row(gateway, raw.headers["x-request-id"])
    assert found["status"] == 499 and found["error_type"] == "client_disconnected"
    # The input from `message_start`; the output from the text (its own count is a placeholder).
    produced = sum(TokenCounter().count_text_tokens(w, "claude-stall") for w in WORDS[:3])
    assert tokens(found) == (ANTHROPIC_STALL_INPUT, produced, 0, None)
    assert found["cost_usd"] == cost_usd(CLAUDE_PRICE, ANTHROPIC_STALL_INPUT, 0, produced)


@pytest.mark.parametrize("stream", [False, True])
def test_missing_usage_is_unknown_not_zero(gateway: Gateway, stream: bool) -> None:
    raw = openai_client(gateway).chat.completions.with_raw_response.create(
        model="silent", messages=MESSAGES, stream=stream
    )
    if stream:
        list(raw.parse())  # type: ignore[call-overload]
    found = row(gateway, raw.headers["x-request-id"])
    assert found["status"] == 200
    assert tokens(found) == (None, None, 0, None)
    assert found["cost_usd"] is None and found["total_tokens"] is None


def test_an_unknown_price_is_an_unknown_cost(gateway: Gateway) -> None:
    raw = openai_client(gateway).chat.completions.with_raw_response.create(
        model="unpriced", messages=MESSAGES
    )
    found = row(gateway, raw.headers["x-request-id"])
    assert tokens(found) == (40, 25, 8, 10)
    assert found["cost_usd"] is None


def test_a_call_refused_before_any_upstream_costs_nothing(gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        openai_client(gateway).chat.completions.create(model="no-such-alias", messages=MESSAGES)
    request_id = refused.value.response.headers["x-request-id"]
    found = row(gateway, request_id)
    assert tokens(found) == (0, 0, 0, None) and found["cost_usd"] == 0
