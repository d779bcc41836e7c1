"""Every call lands in the usage ledger with exact tokens and cost, readable through /api."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import openai
import pytest

from tests.fake_openai import CACHED_TOKENS, COMPLETION_TOKENS, PROMPT_TOKENS, REPLY_WORDS
from tests.support import Gateway

MESSAGES = [{"role": "user", "content": "Say hello"}]
# gpt-4o-mini list price: $0.15 input, $0.075 cached input, $0.60 output per million tokens.
GPT_4O_MINI_COST = (
    (PROMPT_TOKENS - CACHED_TOKENS) * 0.15 + CACHED_TOKENS * 0.075 + COMPLETION_TOKENS * 0.60
) / 1e6


def sdk(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.tenant_key, max_retries=0)


def row_for(gateway: Gateway, request_id: str) -> dict[str, object]:
    (row,) = gateway.wait_for_usage(1, request_id=request_id)
    return row


def test_non_streaming_row(gateway: Gateway) -> None:
    raw = sdk(gateway).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    )  # type: ignore[arg-type]
    row = row_for(gateway, raw.headers["x-request-id"])
    assert row["tenant"] == "ci"
    assert row["model"] == "gpt-4o-mini"
    assert row["provider"] == "local"
    assert row["upstream_model"] == "gpt-4o-mini"
    assert row["endpoint"] == "/v1/chat/completions"
    assert row["status"] == 200 and row["stream"] is False
    assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]) == (
        PROMPT_TOKENS,
        COMPLETION_TOKENS,
        CACHED_TOKENS,
    )
    assert row["cost_usd"] == pytest.approx(GPT_4O_MINI_COST, abs=1e-12)
    assert isinstance(row["latency_ms"], float) and row["latency_ms"] > 0
    assert row["ttft_ms"] is not None


def test_streaming_row_has_exact_usage_and_ttft(gateway: Gateway) -> None:
    raw = sdk(gateway).chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
    )
    list(raw.parse())
    row = row_for(gateway, raw.headers["x-request-id"])
    assert row["stream"] is True and row["status"] == 200
    assert (row["prompt_tokens"], row["completion_tokens"]) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    assert row["cost_usd"] == pytest.approx(GPT_4O_MINI_COST, abs=1e-12)
    assert 0 < row["ttft_ms"] <= row["latency_ms"]  # type: ignore[operator]


def test_streamed_usage_is_found_in_pretty_printed_crlf_events(gateway: Gateway) -> None:
    raw = sdk(gateway).chat.completions.with_raw_response.create(
        model="spaced",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
    )
    chunks = list(raw.parse())
    assert [c.choices[0].delta.content for c in chunks if c.choices][1:-1] == list(REPLY_WORDS)
    row = row_for(gateway, raw.headers["x-request-id"])
    assert (row["prompt_tokens"], row["completion_tokens"]) == (PROMPT_TOKENS, COMPLETION_TOKENS)


def test_configured_price_overrides_the_catalogue(gateway: Gateway) -> None:
    raw = sdk(gateway).chat.completions.with_raw_response.create(
        model="custom-priced", messages=MESSAGES
    )  # type: ignore[arg-type]
    row = row_for(gateway, raw.headers["x-request-id"])
    # No cached price configured, so cached tokens cost the input price.
    assert row["cost_usd"] == pytest.approx((PROMPT_TOKENS * 1000 + COMPLETION_TOKENS * 2000) / 1e6)


def test_embeddings_are_recorded(gateway: Gateway) -> None:
    raw = sdk(gateway).embeddings.with_raw_response.create(model="embedder", input="hello")
    row = row_for(gateway, raw.headers["x-request-id"])
    assert row["endpoint"] == "/v1/embeddings"
    assert row["prompt_tokens"] == 4 and row["completion_tokens"] == 0
    assert row["cost_usd"] == pytest.approx(4 * 0.02 / 1e6)


@pytest.mark.parametrize(
    ("body", "status", "error_type", "cost"),
    [
        ({"model": "no-such-model", "messages": MESSAGES}, 400, "model_not_found", 0),
        # The upstream answered without a count: unknown, not zero.
        ({"model": "broken", "messages": MESSAGES}, 502, "upstream_error", None),
        ({"model": "gpt-4o-mini", "messages": "hi"}, 400, "invalid_request_error", 0),
    ],
)
def test_failed_and_refused_calls_are_recorded(
    gateway: Gateway, body: dict[str, object], status: int, error_type: str, cost: int | None
) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {gateway.tenant_key}"},
        json=body,
    )
    assert response.status_code == status
    row = row_for(gateway, response.headers["x-request-id"])
    assert row["status"] == status and row["error_type"] == error_type
    assert row["cost_usd"] == cost


def test_client_disconnect_mid_stream_is_recorded(gateway: Gateway) -> None:
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {gateway.tenant_key}"},
        json={"model": "endless", "messages": MESSAGES, "stream": True},
    ) as response:
        request_id = response.headers["x-request-id"]
        lines = response.iter_lines()
        received = [next(lines) for _ in range(6)]
    assert any(line.startswith("data: ") for line in received)
    row = row_for(gateway, request_id)
    assert row["status"] == 499 and row["error_type"] == "client_disconnected"
    assert row["completion_tokens"] >= 1  # estimated from what was streamed


def test_cursor_pagination_and_filters(gateway: Gateway) -> None:
    client = sdk(gateway)
    ids = [
        client.chat.completions.with_raw_response.create(
            model="embedder" if i % 2 else "gpt-4o-mini", messages=MESSAGES
        ).headers["x-request-id"]  # type: ignore[arg-type]
        for i in range(5)
    ]
    for request_id in ids:
        row_for(gateway, request_id)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, object] = {
            "limit": 2,
            "since": (datetime.now(UTC) - timedelta(minutes=10)).isoformat(),
        }
        if cursor:
            params["cursor"] = cursor
        page = gateway.usage(**params)
        seen.extend(r["request_id"] for r in page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), "pages overlap"
    positions = [seen.index(i) for i in ids]
    assert positions == sorted(positions, reverse=True), "not newest first"
    stamps = [r["created_at"] for r in gateway.usage(limit=1000)["data"]]
    assert stamps == sorted(stamps, reverse=True)
    only_embedder = gateway.usage(model="embedder", limit=1000)["data"]
    assert only_embedder and {r["model"] for r in only_embedder} == {"embedder"}
    assert gateway.usage(tenant="nobody")["data"] == []
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert gateway.usage(since=future)["data"] == []


def test_usage_api_requires_an_admin_token(gateway: Gateway) -> None:
    assert httpx.get(f"{gateway.url}/api/usage/records").status_code == 401
    bad = httpx.get(
        f"{gateway.url}/api/usage/records", headers={"authorization": "Bearer not-a-jwt"}
    )
    assert bad.status_code == 401
    tenant_key = httpx.get(
        f"{gateway.url}/api/usage/records",
        headers={"authorization": f"Bearer {gateway.tenant_key}"},
    )
    assert tenant_key.status_code == 401


def test_bad_cursor_is_400(gateway: Gateway) -> None:
    response = httpx.get(
        f"{gateway.url}/api/usage/records",
        params={"cursor": "!!!"},
        headers={"authorization": f"Bearer {gateway.admin_token()}"},
    )
    assert response.status_code == 400


def test_login_rejects_a_wrong_password(gateway: Gateway) -> None:
    response = httpx.post(
        f"{gateway.url}/api/auth/login", json={"email": "admin@example.com", "password": "nope"}
    )
    assert response.status_code == 401
    malformed = httpx.post(f"{gateway.url}/api/auth/login", content=b"{")
    assert 400 <= malformed.status_code < 500
