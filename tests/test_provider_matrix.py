"""Every front end reaches every provider: {chat, messages, responses} x {openai, anthropic,
gemini, openrouter} x {stream, no stream} x {plain text, tool call round trip}, with the official
SDKs as clients, and the usage ledger right to the token and the nano-dollar."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tests import fake_anthropic, fake_gemini, fake_openai
from tests.conftest import BACKENDS
from tests.fake_anthropic import FakeAnthropic
from tests.fake_gemini import FakeGemini
from tests.fake_openai import FakeOpenAI
from tests.support import Gateway, database, new_key

TOOL_RESULT = "sunny and 21C"
QUESTION = "What is the weather in Paris?"
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


@dataclass(frozen=True)
class ProviderCase:
    name: str
    upstream_model: str
    prompt_tokens: int  # OpenAI's sense: cached and cache-write tokens included
    completion_tokens: int
    cached_tokens: int
    price: tuple[float, float, float, float]  # USD per million: input, cached, output, cache write
    cache_write_tokens: int = 0

    def cost(self) -> float:
        uncached = self.prompt_tokens - self.cached_tokens - self.cache_write_tokens
        rate_in, rate_cached, rate_out, rate_write = self.price
        return (
            uncached * rate_in
            + self.cached_tokens * rate_cached
            + self.cache_write_tokens * rate_write
            + self.completion_tokens * rate_out
        ) / 1e6


OPENAI_USAGE = (fake_openai.PROMPT_TOKENS, fake_openai.COMPLETION_TOKENS, fake_openai.CACHED_TOKENS)
PROVIDERS = {
    "openai": ProviderCase("openai", "gpt-4o-mini", *OPENAI_USAGE, (0.15, 0.075, 0.6, 0.15)),
    "openrouter": ProviderCase(
        "openrouter", "openai/gpt-4o-mini", *OPENAI_USAGE, (0.15, 0.075, 0.6, 0.15)
    ),
    "anthropic": ProviderCase(
        "anthropic",
        "claude-sonnet-4-5",
        fake_anthropic.PROMPT_TOKENS,
        fake_anthropic.OUTPUT_TOKENS,
        fake_anthropic.CACHE_READ_TOKENS,
        (3.0, 0.3, 15.0, 3.75),
        cache_write_tokens=fake_anthropic.CACHE_CREATION_TOKENS,
    ),
    "gemini": ProviderCase(
        "gemini",
        "gemini-2.5-flash",
        fake_gemini.PROMPT_TOKENS,
        fake_gemini.CANDIDATES_TOKENS,
        fake_gemini.CACHED_TOKENS,
        (0.3, 0.075, 2.5, 0.3),
    ),
}


@pytest.fixture(scope="module")
def anthropic_upstream() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def openai_upstream() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fakes(
    anthropic_upstream: FakeAnthropic, openai_upstream: FakeOpenAI
) -> Iterator[dict[str, str]]:
    gemini_fake = FakeGemini()
    gemini_fake.start()
    openai_fake = openai_upstream
    yield {
        "openai": openai_fake.base_url,
        "openrouter": openai_fake.base_url,
        "anthropic": anthropic_upstream.base_url,
        "gemini": gemini_fake.origin,
    }
    gemini_fake.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def gateway(
    request: pytest.FixtureRequest, fakes: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    key = new_key()
    keys = {name: f"key-{name}" for name in PROVIDERS} | {"gemini": fake_gemini.API_KEY}
    providers = "\n".join(
        f"  - {{name: {name}, type: {name}, base_url: '{fakes[name]}', api_key: {keys[name]}}}"
        for name in PROVIDERS
    )
    routes = [(f"m-{name}", name, case.upstream_model) for name, case in PROVIDERS.items()]
    routes += [(f"e-{name}-{model}", name, model) for name, model, _ in UPSTREAM_FAILURES]
    # Failure aliases: no retries and no breaker, so every call meets the upstream's error.
    models = "\n".join(
        f"  - {{name: {alias}, routes: [{{provider: {provider}, model: {model}}}]"
        + (", retries: 0, circuit: {failure_threshold: 1000}}" if alias.startswith("e-") else "}")
        for alias, provider, model in routes
    )
    tenants = f"  - {{name: t, api_keys: ['{key}']}}"
    config = f"providers:\n{providers}\nmodels:\n{models}\ntenants:\n{tenants}\n"
    workdir: Path = tmp_path_factory.mktemp(f"matrix-{request.param}")
    with database(request.param, workdir) as url:
        gw = Gateway(workdir=workdir, database_url=url, config=config, tenant_key=key)
        gw.start()
        try:
            yield gw
        finally:
            gw.stop()


def assert_metered(
    gateway: Gateway, request_ids: list[str], case: ProviderCase, endpoint: str
) -> None:
    for request_id in request_ids:
        (row,) = gateway.wait_for_usage(1, request_id=request_id)
        assert row["status"] == 200 and row["endpoint"] == endpoint
        assert row["provider"] == case.name and row["upstream_model"] == case.upstream_model
        assert (
            row["prompt_tokens"],
            row["completion_tokens"],
            row["cached_tokens"],
            row["cache_write_tokens"],
        ) == (
            case.prompt_tokens,
            case.completion_tokens,
            case.cached_tokens,
            case.cache_write_tokens,
        )
        assert row["cost_usd"] == pytest.approx(case.cost(), abs=1e-12)


# --- /v1/chat/completions with the openai SDK -------------------------------------------------

CHAT_TOOLS: Any = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}
]


def chat_turn(
    client: openai.OpenAI, model: str, messages: list[Any], stream: bool, tools: Any
) -> tuple[str, str, list[dict[str, Any]]]:
    """One call; returns (request id, text, tool calls as plain dicts)."""
    extra: dict[str, Any] = {"tools": tools} if tools else {}
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=messages, stream=stream, **extra
    )
    request_id = raw.headers["x-request-id"]
    if not stream:
        message = raw.parse().choices[0].message  # type: ignore[union-attr]
        calls = [c.model_dump() for c in message.tool_calls or []]
        return request_id, message.content or "", calls
    text, calls = "", {}
    for chunk in raw.parse():  # type: ignore[union-attr]
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        text += delta.content or ""
        for call in delta.tool_calls or []:
            entry = calls.setdefault(
                call.index,
                {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
            )
            entry["id"] = call.id or entry["id"]
            if call.function is not None:
                entry["function"]["name"] += call.function.name or ""
                entry["function"]["arguments"] += call.function.arguments or ""
    return request_id, text, list(calls.values())


def run_chat(gateway: Gateway, model: str, stream: bool, tools: bool) -> tuple[list[str], str]:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.tenant_key, max_retries=0)
    messages: list[Any] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": QUESTION},
    ]
    if not tools:
        request_id, text, calls = chat_turn(client, model, messages, stream, None)
        assert not calls
        return [request_id], text
    first, _, calls = chat_turn(client, model, messages, stream, CHAT_TOOLS)
    assert len(calls) == 1 and calls[0]["function"]["name"] == "get_weather"
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}
    messages += [
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": TOOL_RESULT},
    ]
    second, text, calls = chat_turn(client, model, messages, stream, CHAT_TOOLS)
    assert not calls
    return [first, second], text


# --- /v1/messages with the anthropic SDK ------------------------------------------------------

MESSAGES_TOOLS: Any = [
    {"name": "get_weather", "description": "Weather", "input_schema": WEATHER_SCHEMA}
]


def messages_turn(
    client: anthropic.Anthropic, model: str, messages: list[Any], stream: bool, tools: Any
) -> tuple[str, list[dict[str, Any]]]:
    """One call; returns (request id, content blocks as plain dicts)."""
    extra: dict[str, Any] = {"tools": tools} if tools else {}
    if not stream:
        raw = client.messages.with_raw_response.create(
            model=model, max_tokens=256, system="Be brief.", messages=messages, **extra
        )
        message = raw.parse()
        assert message.stop_reason == (
            "tool_use" if any(b.type == "tool_use" for b in message.content) else "end_turn"
        )
        return raw.headers["x-request-id"], [b.model_dump() for b in message.content]
    with client.messages.stream(
        model=model, max_tokens=256, system="Be brief.", messages=messages, **extra
    ) as events:
        final = events.get_final_message()
        request_id = events.response.headers["x-request-id"]
    assert final.usage.output_tokens > 0
    return request_id, [b.model_dump() for b in final.content]


def run_messages(gateway: Gateway, model: str, stream: bool, tools: bool) -> tuple[list[str], str]:
    client = anthropic.Anthropic(base_url=gateway.url, api_key=gateway.tenant_key, max_retries=0)
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    if not tools:
        request_id, blocks = messages_turn(client, model, messages, stream, None)
        return [request_id], "".join(b.get("text", "") for b in blocks)
    first, blocks = messages_turn(client, model, messages, stream, MESSAGES_TOOLS)
    uses = [b for b in blocks if b["type"] == "tool_use"]
    assert (
        len(uses) == 1
        and uses[0]["name"] == "get_weather"
        and uses[0]["input"] == {"city": "Paris"}
    )
    messages += [
        {"role": "assistant", "content": blocks},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": uses[0]["id"], "content": TOOL_RESULT}
            ],
        },
    ]
    second, blocks = messages_turn(client, model, messages, stream, MESSAGES_TOOLS)
    assert not [b for b in blocks if b["type"] == "tool_use"]
    return [first, second], "".join(b.get("text", "") for b in blocks)


# --- /v1/responses with the openai SDK --------------------------------------------------------

RESPONSES_TOOLS: Any = [{"type": "function", "name": "get_weather", "parameters": WEATHER_SCHEMA}]


def responses_turn(
    client: openai.OpenAI, model: str, items: list[Any], stream: bool, tools: Any
) -> tuple[str, list[dict[str, Any]]]:
    extra: dict[str, Any] = {"tools": tools} if tools else {}
    raw = client.responses.with_raw_response.create(
        model=model, instructions="Be brief.", input=items, stream=stream, **extra
    )
    request_id = raw.headers["x-request-id"]
    if not stream:
        return request_id, [item.model_dump() for item in raw.parse().output]  # type: ignore[union-attr]
    completed = [e for e in raw.parse() if e.type == "response.completed"]  # type: ignore[union-attr]
    assert len(completed) == 1
    return request_id, [item.model_dump() for item in completed[0].response.output]


def run_responses(gateway: Gateway, model: str, stream: bool, tools: bool) -> tuple[list[str], str]:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.tenant_key, max_retries=0)
    items: list[Any] = [{"role": "user", "content": QUESTION}]

    def text_of(output: list[dict[str, Any]]) -> str:
        return "".join(
            part.get("text", "")
            for item in output
            if item["type"] == "message"
            for part in item["content"]
        )

    if not tools:
        request_id, output = responses_turn(client, model, items, stream, None)
        return [request_id], text_of(output)
    first, output = responses_turn(client, model, items, stream, RESPONSES_TOOLS)
    calls = [item for item in output if item["type"] == "function_call"]
    assert len(calls) == 1 and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}
    items += [
        {
            "type": "function_call",
            "call_id": calls[0]["call_id"],
            "name": "get_weather",
            "arguments": calls[0]["arguments"],
        },
        {"type": "function_call_output", "call_id": calls[0]["call_id"], "output": TOOL_RESULT},
    ]
    second, output = responses_turn(client, model, items, stream, RESPONSES_TOOLS)
    assert not [item for item in output if item["type"] == "function_call"]
    return [first, second], text_of(output)


FRONT_ENDS = {
    "chat": ("/v1/chat/completions", run_chat),
    "messages": ("/v1/messages", run_messages),
    "responses": ("/v1/responses", run_responses),
}


@pytest.mark.parametrize("tools", [False, True], ids=["text", "tools"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("front_end", list(FRONT_ENDS))
def test_matrix(gateway: Gateway, front_end: str, provider: str, stream: bool, tools: bool) -> None:
    endpoint, run = FRONT_ENDS[front_end]
    request_ids, text = run(gateway, f"m-{provider}", stream, tools)
    assert text, "the final answer has text"
    if tools:
        assert TOOL_RESULT in text, "the model saw the tool result"
    assert_metered(gateway, request_ids, PROVIDERS[provider], endpoint)


def test_anthropic_beta_reaches_a_native_anthropic_upstream(
    gateway: Gateway, anthropic_upstream: FakeAnthropic
) -> None:
    client = anthropic.Anthropic(base_url=gateway.url, api_key=gateway.tenant_key, max_retries=0)
    beta = "context-1m-2025-08-07,interleaved-thinking-2025-05-14"
    message = client.messages.create(
        model="m-anthropic",
        max_tokens=64,
        messages=[{"role": "user", "content": QUESTION}],
        extra_headers={"anthropic-beta": beta},
    )
    assert message.content
    assert anthropic_upstream.headers[-1]["anthropic-beta"] == beta
    count = client.messages.count_tokens(
        model="m-anthropic",
        messages=[{"role": "user", "content": QUESTION}],
        extra_headers={"anthropic-beta": beta},
    )
    assert count.input_tokens == fake_anthropic.COUNTED_TOKENS
    assert anthropic_upstream.headers[-1]["anthropic-beta"] == beta


def test_openrouter_gets_its_attribution_header(
    gateway: Gateway, openai_upstream: FakeOpenAI
) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.tenant_key, max_retries=0)
    client.chat.completions.create(
        model="m-openrouter", messages=[{"role": "user", "content": "hi"}]
    )
    assert openai_upstream.headers[-1]["X-Title"] == "AgentWatch"
    assert openai_upstream.headers[-1]["Authorization"] == "Bearer key-openrouter"
    client.chat.completions.create(model="m-openai", messages=[{"role": "user", "content": "hi"}])
    assert "X-Title" not in openai_upstream.headers[-1]


# --- upstream errors, in each provider's format, reach each client in its own format ----------

# (provider, the fake's failing model, the status the client must see)
UPSTREAM_FAILURES = [
    ("openai", "fail-400", 400),
    ("openai", "fail-429", 429),
    ("openai", "fail-500", 502),
    ("openai", "fail-401", 502),
    ("anthropic", "fail-400", 400),
    ("anthropic", "fail-429", 429),
    ("anthropic", "fail-529", 503),
    ("anthropic", "fail-500", 502),
    ("anthropic", "fail-401", 502),
    ("gemini", "fail-400", 400),
    ("gemini", "fail-429", 429),
    ("gemini", "fail-503", 503),
    ("gemini", "fail-500", 502),
    ("gemini", "fail-403", 502),
]
OPENAI_TYPES = {
    400: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "overloaded_error",
}
ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    429: "rate_limit_error",
    502: "api_error",
    503: "overloaded_error",
}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(("provider", "model", "status"), UPSTREAM_FAILURES)
@pytest.mark.parametrize("front_end", list(FRONT_ENDS))
def test_upstream_errors_arrive_in_the_clients_format(
    gateway: Gateway, front_end: str, provider: str, model: str, status: int, stream: bool
) -> None:
    alias = f"e-{provider}-{model}"
    if front_end == "messages":
        client = anthropic.Anthropic(
            base_url=gateway.url, api_key=gateway.tenant_key, max_retries=0
        )
        with pytest.raises(anthropic.APIStatusError) as anthropic_error:
            client.messages.create(
                model=alias,
                max_tokens=32,
                messages=[{"role": "user", "content": "hi"}],
                stream=stream,
            )
        assert anthropic_error.value.status_code == status
        body: Any = anthropic_error.value.body
        assert body["type"] == "error" and body["error"]["type"] == ANTHROPIC_TYPES[status]
        assert body["error"]["message"]
    else:
        sdk = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.tenant_key, max_retries=0)
        with pytest.raises(openai.APIStatusError) as openai_error:
            if front_end == "chat":
                sdk.chat.completions.create(
                    model=alias, messages=[{"role": "user", "content": "hi"}], stream=stream
                )
            else:
                sdk.responses.create(model=alias, input="hi", stream=stream)
        assert openai_error.value.status_code == status
        error: Any = openai_error.value.body
        assert error["type"] == OPENAI_TYPES[status] and error["message"]
    if status == 429:
        rows = gateway.wait_for_usage(1, model=alias, status=429)
        assert {row["provider"] for row in rows} == {provider}
