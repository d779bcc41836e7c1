"""Access log: a running gateway writes one JSON line per `/v1` call with the call's facts
(ids, model, provider, status, latency, tokens, cost, DLP action) and never its prompt text
or key material; `AGENTWATCH_LOG_FORMAT=text` writes logfmt, `AGENTWATCH_ACCESS_LOG=off` none."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.fake_scripted import COMPLETION_TOKENS, PROMPT_TOKENS, FakeScripted
from tests.support import Gateway, new_key, running_gateway

# 9 prompt tokens at $1000/Mtok + 7 completion tokens at $2000/Mtok
EXPECTED_COST_USD = (PROMPT_TOKENS * 1000 + COMPLETION_TOKENS * 2000) / 1_000_000
OPENAI_KEY = "sk-proj-" + secrets.token_hex(24)


def config(upstream: str, key: str) -> str:
    return f"""
providers:
  - name: scripted
    type: openai_compatible
    base_url: {upstream}
    api_key: upstream-key-do-not-log
models:
  - name: chat
    input_cost_per_mtok: 1000
    output_cost_per_mtok: 2000
    routes: [{{provider: scripted, model: scripted-chat}}]
tenants:
  - name: app
    api_keys: [{key}]
dlp:
  default_action: log
  categories: {{secret: block, pii: redact}}
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeScripted]:
    server = FakeScripted()
    server.start()
    yield server
    server.stop()


def start(upstream: FakeScripted, workdir: Path, env: dict[str, str]) -> Iterator[Gateway]:
    key = new_key()
    with running_gateway(workdir, config(upstream.base_url, key), key, env) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def gateway(upstream: FakeScripted, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    yield from start(upstream, tmp_path_factory.mktemp("access-json"), {})


def client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.tenant_key, max_retries=0)


def access_lines(gateway: Gateway, request_id: str, timeout: float = 10) -> list[dict[str, Any]]:
    """The JSON access-log lines of one call (the line is written as the call ends)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [
            line
            for line in _json_lines(gateway.log_path.read_bytes())
            if line.get("request_id") == request_id
        ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _json_lines(raw: bytes) -> list[dict[str, Any]]:
    parsed = []
    for line in raw.splitlines():
        if line.startswith(b"{"):
            parsed.append(orjson.loads(line))
    return parsed


def test_a_completed_call_is_one_line_with_its_facts(gateway: Gateway) -> None:
    canary = f"the launch code is {secrets.token_hex(12)}"
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": canary}]
    )
    request_id = raw.headers["x-request-id"]
    [line] = access_lines(gateway, request_id)
    assert line["event"] == "request" and line["endpoint"] == "/v1/chat/completions"
    assert line["status"] == 200 and line["error_type"] is None and line["stream"] is False
    assert line["model"] == "chat" and line["provider"] == "scripted"
    assert line["upstream_model"] == "scripted-chat"
    assert isinstance(line["org_id"], int) and isinstance(line["tenant_id"], int)
    assert isinstance(line["api_key_id"], int)
    assert line["prompt_tokens"] == PROMPT_TOKENS
    assert line["completion_tokens"] == COMPLETION_TOKENS
    assert line["cost_usd"] == pytest.approx(EXPECTED_COST_USD)
    assert line["latency_ms"] > 0 and line["ttft_ms"] <= line["latency_ms"]
    assert "dlp_action" not in line
    assert line["ts"].endswith("+00:00")
    log = gateway.log_path.read_text()
    assert canary.split()[-1] not in log
    assert gateway.tenant_key not in log and "upstream-key-do-not-log" not in log


def test_a_stream_and_a_redaction_are_logged_without_the_value(gateway: Gateway) -> None:
    email = f"{secrets.token_hex(6)}@example.com"
    stream = client(gateway).chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": f"mail {email}"}], stream=True
    )
    request_id = stream.headers["x-request-id"]
    list(stream.parse())
    [line] = access_lines(gateway, request_id)
    assert line["stream"] is True and line["status"] == 200
    assert line["dlp_action"] == "redact" and line["dlp_findings"] == 1
    assert line["ttft_ms"] is not None
    assert email not in gateway.log_path.read_text()


def test_a_blocked_secret_is_logged_as_a_refusal_without_the_secret(gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client(gateway).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": f"key {OPENAI_KEY}"}]
        )
    request_id = refused.value.response.headers["x-request-id"]
    [line] = access_lines(gateway, request_id)
    assert line["status"] == 400 and line["dlp_action"] == "block"
    assert line["error_type"] is not None and line["cost_usd"] == 0
    assert OPENAI_KEY not in gateway.log_path.read_text()


def test_an_unknown_key_is_logged_without_caller_or_key(gateway: Gateway) -> None:
    bad_key = new_key()
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {bad_key}", "x-request-id": "bad-key-1"},
        json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 401
    [line] = access_lines(gateway, "bad-key-1")
    assert line["status"] == 401 and line["error_type"] == "invalid_api_key"
    assert "org_id" not in line and line["latency_ms"] >= 0
    assert bad_key not in gateway.log_path.read_text()


def test_text_format_and_off(upstream: FakeScripted, tmp_path: Path) -> None:
    body = {"model": "chat", "messages": [{"role": "user", "content": "hello"}]}
    for setting, workdir in (("text", tmp_path / "text"), ("off", tmp_path / "off")):
        workdir.mkdir()
        env = (
            {"AGENTWATCH_LOG_FORMAT": "text"}
            if setting == "text"
            else {"AGENTWATCH_ACCESS_LOG": "off"}
        )
        for gateway in start(upstream, workdir, env):
            request_id = f"fmt-{setting}"
            headers = {"authorization": f"Bearer {gateway.tenant_key}", "x-request-id": request_id}
            response = httpx.post(f"{gateway.url}/v1/chat/completions", headers=headers, json=body)
            assert response.status_code == 200
            gateway.stop()  # the line is written before the answer ends; stop flushes nothing
            text = gateway.log_path.read_text()
            lines = [line for line in text.splitlines() if f"request_id={request_id}" in line]
            if setting == "text":
                [line] = lines
                assert "event=request" in line and "status=200" in line and "model=chat" in line
                assert f"prompt_tokens={PROMPT_TOKENS}" in line
            else:
                assert lines == [] and request_id not in text
