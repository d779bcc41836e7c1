"""End to end: the official OpenAI SDK against a running gateway in front of a fake OpenAI."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.fake_openai import (
    COMPLETION_TOKENS,
    PROMPT_TOKENS,
    REPLY_WORDS,
    FakeOpenAI,
)
from tests.support import Gateway

MESSAGES: list[dict[str, str]] = [{"role": "user", "content": "Say hello"}]


def client(gateway: Gateway, key: str | None = None, **kwargs: object) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{gateway.url}/v1",
        api_key=key or gateway.tenant_key,
        max_retries=0,
        **kwargs,  # type: ignore[arg-type]
    )


def test_chat_completion_passes_through(gateway: Gateway, fake_openai: FakeOpenAI) -> None:
    completion = client(gateway).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "".join(REPLY_WORDS)
    assert completion.usage is not None and completion.usage.prompt_tokens == PROMPT_TOKENS
    sent = fake_openai.requests[-1]
    assert sent["model"] == "gpt-4o-mini" and sent["messages"] == MESSAGES
    assert fake_openai.headers[-1]["Authorization"] == "Bearer upstream-secret"


def test_response_carries_request_id(gateway: Gateway) -> None:
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    assert len(raw.headers["x-request-id"]) >= 16
    echoed = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"x-api-key": gateway.tenant_key, "x-request-id": "trace-123"},
        json={"model": "gpt-4o-mini", "messages": MESSAGES},
    )
    assert echoed.status_code == 200 and echoed.headers["x-request-id"] == "trace-123"


def test_streaming_yields_every_chunk_in_order(gateway: Gateway, fake_openai: FakeOpenAI) -> None:
    stream = client(gateway).chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
    )
    chunks = list(stream)
    contents = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert contents == REPLY_WORDS
    assert chunks[-1].choices[0].finish_reason == "stop"
    # The gateway asked the upstream for usage but did not show the client what it never asked for.
    assert fake_openai.requests[-1]["stream_options"] == {"include_usage": True}
    assert all(c.choices for c in chunks)


def test_streaming_usage_is_forwarded_when_asked(gateway: Gateway) -> None:
    stream = client(gateway).chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == COMPLETION_TOKENS


def test_embeddings(gateway: Gateway, fake_openai: FakeOpenAI) -> None:
    result = client(gateway).embeddings.create(model="embedder", input=["a", "b"])
    assert [d.index for d in result.data] == [0, 1]
    assert fake_openai.requests[-1]["model"] == "text-embedding-3-small"


def test_models_lists_the_aliases_this_key_may_use(gateway: Gateway) -> None:
    everything = {m.id for m in client(gateway).models.list()}
    assert {"gpt-4o-mini", "embedder", "broken"} <= everything
    restricted = client(gateway, gateway.restricted_key)
    assert [m.id for m in restricted.models.list()] == ["gpt-4o-mini"]
    assert restricted.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
    with pytest.raises(openai.NotFoundError):
        restricted.models.retrieve("broken")


def test_restricted_key_cannot_use_other_models(gateway: Gateway) -> None:
    restricted = client(gateway, gateway.restricted_key)
    with pytest.raises(openai.PermissionDeniedError):
        restricted.chat.completions.create(model="embedder", messages=MESSAGES)  # type: ignore[arg-type]


@pytest.mark.parametrize("key", ["sk-wrong-key-0123456789abcdef", ""])
def test_unknown_or_missing_key_is_401(gateway: Gateway, key: str) -> None:
    sdk = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key or "placeholder", max_retries=0)
    if not key:
        sdk = sdk.with_options(default_headers={"Authorization": ""})
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.body is not None


def test_unknown_model_is_400(gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway).chat.completions.create(model="no-such-model", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.code == "model_not_found"


def test_upstream_500_is_502(gateway: Gateway) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client(gateway).chat.completions.create(model="broken", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.status_code == 502


def test_upstream_timeout_is_504(gateway: Gateway) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client(gateway).chat.completions.create(model="slow", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.status_code == 504


def test_upstream_rate_limit_is_429_with_retry_after(gateway: Gateway) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        client(gateway).chat.completions.create(model="limited", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.response.headers["retry-after"] == "7"


def test_upstream_rejection_is_400_with_its_message(gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway).chat.completions.create(model="too-long", messages=MESSAGES)  # type: ignore[arg-type]
    assert "maximum context length" in caught.value.message


def test_upstream_credential_failure_is_not_the_clients_401(gateway: Gateway) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client(gateway).chat.completions.create(model="bad-upstream-key", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.status_code == 502


def test_body_over_the_limit_is_413(gateway: Gateway) -> None:
    huge = "x" * (33 * 1024 * 1024)
    with pytest.raises(openai.APIStatusError) as caught:
        client(gateway, timeout=60).chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": huge}],
        )
    assert caught.value.status_code == 413


def test_stream_broken_upstream_ends_with_an_error_event(gateway: Gateway) -> None:
    stream = client(gateway).chat.completions.create(
        model="breaking",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
    )
    received: list[str] = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert received == REPLY_WORDS


def test_upstream_connections_are_pooled(gateway: Gateway, fake_openai: FakeOpenAI) -> None:
    sdk = client(gateway)
    before = len(fake_openai.peers)
    for _ in range(20):
        sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    used = set(fake_openai.peers[before:])
    assert len(fake_openai.peers) - before == 20
    assert len(used) <= 2, f"20 sequential calls opened {len(used)} upstream connections"


def test_legacy_completions(gateway: Gateway, fake_openai: FakeOpenAI) -> None:
    sdk = client(gateway)
    completion = sdk.completions.create(model="gpt-4o-mini", prompt="Say hello")
    assert completion.choices[0].text == "".join(REPLY_WORDS)
    assert fake_openai.requests[-1]["prompt"] == "Say hello"
    streamed = list(sdk.completions.create(model="gpt-4o-mini", prompt="Say hello", stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == "".join(REPLY_WORDS)
    assert all(c.choices for c in streamed)  # the usage chunk was not asked for
    rows = gateway.wait_for_usage(2, endpoint="/v1/completions")
    assert {r["stream"] for r in rows} == {True, False}
    assert all(r["completion_tokens"] == COMPLETION_TOKENS for r in rows)
    with pytest.raises(openai.BadRequestError):
        sdk.completions.create(model="gpt-4o-mini", prompt=None)  # type: ignore[arg-type]
