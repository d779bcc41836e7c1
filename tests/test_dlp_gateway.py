"""End to end: DLP through a running gateway with the official SDKs. Secrets are blocked,
personal data is redacted before it leaves (checked at the fake upstream), network addresses
are logged, answers are scanned (streamed ones across chunk boundaries), and each call's
events and risk land on its `conversations` row without the matched values."""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import string
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import asyncpg
import httpx
import openai
import pytest

from tests.conftest import BACKENDS
from tests.fake_scripted import FakeScripted
from tests.support import Gateway, gateway_on, new_key

EMAIL = "jane.doe@example.com"
OTHER_EMAIL = "raj.patel@example.org"
SSN = "536-22-8741"
IP = "10.20.30.40"
AWS_KEY_ID = "AKIAQ3EGRXKPLMWN7ZTB"


def luhn_card(prefix: str = "4539", length: int = 16) -> str:
    """A random card number with a valid Luhn check digit, written in groups of four."""
    body = prefix + "".join(secrets.choice(string.digits) for _ in range(length - 1 - len(prefix)))
    total = 0
    for position, char in enumerate(reversed(body)):
        digit = int(char)
        if position % 2 == 0:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    number = body + str((10 - total % 10) % 10)
    return " ".join(number[i : i + 4] for i in range(0, len(number), 4))


def openai_key() -> str:
    alphabet = string.ascii_letters + string.digits
    return "sk-proj-" + "".join(secrets.choice(alphabet) for _ in range(48))


CARD = luhn_card()


def config(upstream: str, key: str) -> str:
    return f"""
providers:
  - name: scripted
    type: openai_compatible
    base_url: {upstream}
    api_key: upstream-key
models:
  - name: chat
    routes: [{{provider: scripted, model: scripted-chat}}]
  - name: embedder
    routes: [{{provider: scripted, model: scripted-embed}}]
tenants:
  - name: app
    api_keys: [{key}]
dlp:
  default_action: log
  categories: {{secret: block, pii: redact, financial: redact}}
  scan_responses: true
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeScripted]:
    server = FakeScripted()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def gateway(
    request: pytest.FixtureRequest, upstream: FakeScripted, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    workdir: Path = tmp_path_factory.mktemp(f"gw-dlp-{request.param}")
    key = new_key()
    env = {"AGENTWATCH_USAGE_FLUSH_SECONDS": "0.05"}
    with gateway_on(request.param, workdir, config(upstream.base_url, key), env) as gateway:
        gateway.tenant_key = key
        yield gateway


@pytest.fixture
def client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.tenant_key, max_retries=0)


@pytest.fixture
def claude(gateway: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=gateway.tenant_key, max_retries=0)


@pytest.fixture(autouse=True)
def quiet_reply(upstream: FakeScripted) -> None:
    upstream.reply = "Noted."
    upstream.piece = 3


def conversation(gateway: Gateway, request_id: str, timeout: float = 10) -> dict[str, Any]:
    """The call's `conversations` row, read straight from the database (written off-request)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = _select(gateway.database_url, request_id)
        if rows:
            return rows[0]
        time.sleep(0.05)
    raise AssertionError(f"no conversations row for {request_id}")


def _select(url: str, request_id: str) -> list[dict[str, Any]]:
    columns = "request_id, dlp_events, dlp_action, risk_score, status, model, endpoint, tenant_id"
    query = f"SELECT {columns} FROM conversations WHERE request_id = "
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            db.row_factory = sqlite3.Row
            found = [dict(row) for row in db.execute(query + "?", (request_id,))]
        for row in found:
            row["dlp_events"] = json.loads(row["dlp_events"])
        return found

    async def fetch() -> list[dict[str, Any]]:
        connection = await asyncpg.connect(url)
        try:
            rows = await connection.fetch(query + "$1", request_id)
        finally:
            await connection.close()
        out = [dict(row) for row in rows]
        for row in out:
            row["dlp_events"] = json.loads(row["dlp_events"])
        return out

    return asyncio.run(fetch())


def test_a_secret_in_a_prompt_is_blocked_and_never_sent(
    gateway: Gateway, upstream: FakeScripted, client: openai.OpenAI
) -> None:
    secret = openai_key()
    sent_before = len(upstream.requests)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": f"my key is {secret}, fix it"}]
        )
    error = caught.value
    assert error.status_code == 400
    body = error.response.json()["error"]
    assert body["type"] == "dlp_blocked" and body["code"] == "dlp_blocked"
    assert body["detectors"] == ["openai_api_key"]
    assert "openai_api_key" in body["message"] and secret not in error.response.text
    assert len(upstream.requests) == sent_before
    row = conversation(gateway, error.response.headers["x-request-id"])
    assert row["dlp_action"] == "block" and row["status"] == 400
    [event] = row["dlp_events"]
    assert event["detector"] == "openai_api_key" and event["action"] == "block"
    assert event["path"] == "messages[0].content"
    assert (event["start"], event["end"]) == (10, 10 + len(secret))
    assert secret not in str(row)


def test_personal_data_is_redacted_before_it_leaves(
    gateway: Gateway, upstream: FakeScripted, client: openai.OpenAI
) -> None:
    prompt = f"Mail {EMAIL} about card {CARD}; cc {OTHER_EMAIL} and {EMAIL} again."
    raw = client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": prompt}]
    )
    assert raw.parse().choices[0].message.content == "Noted."
    sent = upstream.requests[-1]["messages"][0]["content"]
    assert sent == (
        "Mail [REDACTED:EMAIL_1] about card [REDACTED:CREDIT_CARD_1]; "
        "cc [REDACTED:EMAIL_2] and [REDACTED:EMAIL_1] again."
    )
    row = conversation(gateway, raw.headers["x-request-id"])
    assert row["dlp_action"] == "redact"
    assert sorted(e["detector"] for e in row["dlp_events"]) == [
        "credit_card",
        "email",
        "email",
        "email",
    ]
    first = row["dlp_events"][0]
    assert prompt[first["start"] : first["end"]] in (EMAIL, CARD)
    assert EMAIL not in str(row) and CARD not in str(row)


def test_log_action_lets_the_text_through_and_records_it(
    gateway: Gateway, upstream: FakeScripted, client: openai.OpenAI
) -> None:
    prompt = f"The server at {IP} is down."
    raw = client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": prompt}]
    )
    assert upstream.requests[-1]["messages"][0]["content"] == prompt
    row = conversation(gateway, raw.headers["x-request-id"])
    assert row["dlp_action"] == "log"
    assert [(e["detector"], e["action"]) for e in row["dlp_events"]] == [("ipv4", "log")]


def test_risk_ranks_a_blocked_secret_above_a_logged_address(
    gateway: Gateway, client: openai.OpenAI
) -> None:
    logged = client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": f"ping {IP}"}]
    )
    with pytest.raises(openai.BadRequestError) as blocked:
        client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": f"key {AWS_KEY_ID} and {IP}"}]
        )
    low = conversation(gateway, logged.headers["x-request-id"])["risk_score"]
    high = conversation(gateway, blocked.value.response.headers["x-request-id"])["risk_score"]
    assert 0 < low < high <= 100


def test_tool_arguments_and_results_are_scanned(
    upstream: FakeScripted, client: openai.OpenAI
) -> None:
    client.chat.completions.create(
        model="chat",
        messages=[
            {"role": "user", "content": "look the customer up"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "crm", "arguments": f'{{"email": "{EMAIL}"}}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": f"SSN on file: {SSN}"},
        ],
    )
    messages = upstream.requests[-1]["messages"]
    assert messages[1]["tool_calls"][0]["function"]["arguments"] == (
        '{"email": "[REDACTED:EMAIL_1]"}'
    )
    assert messages[2]["content"] == "SSN on file: [REDACTED:US_SSN_1]"
    assert messages[1]["tool_calls"][0]["id"] == "call_1"


def test_embedding_inputs_are_redacted(upstream: FakeScripted, client: openai.OpenAI) -> None:
    client.embeddings.create(model="embedder", input=[f"customer {EMAIL}", "plain text"])
    assert upstream.requests[-1]["input"] == ["customer [REDACTED:EMAIL_1]", "plain text"]


def test_messages_endpoint_redacts_and_blocks(
    upstream: FakeScripted, claude: anthropic.Anthropic
) -> None:
    claude.messages.create(
        model="chat",
        max_tokens=50,
        system=f"The user is {EMAIL}.",
        messages=[{"role": "user", "content": [{"type": "text", "text": f"My SSN is {SSN}"}]}],
    )
    sent = upstream.sent_text()
    assert EMAIL not in sent and SSN not in sent
    assert "[REDACTED:EMAIL_1]" in sent and "[REDACTED:US_SSN_1]" in sent
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.create(
            model="chat",
            max_tokens=50,
            messages=[{"role": "user", "content": f"aws {AWS_KEY_ID}"}],
        )
    error = caught.value.response.json()
    assert error["type"] == "error" and error["error"]["type"] == "dlp_blocked"
    assert "aws_access_key_id" in error["error"]["message"]


def test_responses_endpoint_redacts_and_blocks(
    upstream: FakeScripted, client: openai.OpenAI
) -> None:
    client.responses.create(
        model="chat",
        instructions=f"Answer {OTHER_EMAIL} politely.",
        input=[{"role": "user", "content": [{"type": "input_text", "text": f"card {CARD}"}]}],
    )
    sent = upstream.sent_text()
    assert OTHER_EMAIL not in sent and CARD not in sent
    assert "[REDACTED:EMAIL_1]" in sent and "[REDACTED:CREDIT_CARD_1]" in sent
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="chat", input=f"token {openai_key()}")
    assert caught.value.response.json()["error"]["type"] == "dlp_blocked"


def test_an_answer_is_redacted(upstream: FakeScripted, client: openai.OpenAI) -> None:
    upstream.reply = f"Write to {EMAIL} today."
    answer = client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "who do I write to?"}]
    )
    assert answer.choices[0].message.content == "Write to [REDACTED:EMAIL_1] today."


@pytest.mark.parametrize("piece", [1, 3, 7])
def test_a_streamed_answer_is_redacted_across_chunks(
    gateway: Gateway, upstream: FakeScripted, client: openai.OpenAI, piece: int
) -> None:
    upstream.reply = f"Reach {EMAIL} or card {CARD} now, {EMAIL} again."
    upstream.piece = piece
    stream = client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "contact?"}], stream=True
    )
    deltas = [c.choices[0].delta.content or "" for c in stream if c.choices]
    text = "".join(deltas)
    assert text == (
        "Reach [REDACTED:EMAIL_1] or card [REDACTED:CREDIT_CARD_1] now, [REDACTED:EMAIL_1] again."
    )
    assert sum(1 for d in deltas if d) > 3  # still streamed, not buffered into one chunk
    request_id = stream.response.headers["x-request-id"]
    events = conversation(gateway, request_id)["dlp_events"]
    assert [(e["detector"], e["where"]) for e in events] == [
        ("email", "response"),
        ("credit_card", "response"),
        ("email", "response"),
    ]
    first = events[0]
    assert upstream.reply[first["start"] : first["end"]] == EMAIL


def test_a_streamed_secret_ends_the_stream_before_it_is_shown(
    upstream: FakeScripted, client: openai.OpenAI
) -> None:
    upstream.reply = f"Here you go: {AWS_KEY_ID} is the key."
    upstream.piece = 4
    stream = client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "the key?"}], stream=True
    )
    seen = ""
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            if chunk.choices:
                seen += chunk.choices[0].delta.content or ""
    assert "dlp_blocked" in str(caught.value.body) or "data loss" in caught.value.message
    assert AWS_KEY_ID[:4] not in seen
    assert seen.startswith("Here you go")


def test_streamed_messages_and_responses_are_redacted(
    upstream: FakeScripted, client: openai.OpenAI, claude: anthropic.Anthropic
) -> None:
    upstream.reply = f"Call {EMAIL} about {SSN}."
    upstream.piece = 2
    expected = "Call [REDACTED:EMAIL_1] about [REDACTED:US_SSN_1]."
    with claude.messages.stream(
        model="chat", max_tokens=50, messages=[{"role": "user", "content": "who?"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == expected
    assert final.content[0].type == "text" and final.content[0].text == expected
    events = list(client.responses.create(model="chat", input="who?", stream=True))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == expected
    done = [e for e in events if e.type == "response.output_text.done"]
    assert done and done[0].text == expected
    completed = next(e for e in events if e.type == "response.completed")
    assert completed.response.output_text == expected


def _admin(gateway: Gateway, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    response = httpx.request(
        method,
        f"{gateway.url}/api{path}",
        headers={"authorization": f"Bearer {gateway.admin_token()}"},
        **kwargs,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_database_overrides_change_the_policy_at_once(
    gateway: Gateway, upstream: FakeScripted, client: openai.OpenAI
) -> None:
    [tenant] = _admin(gateway, "GET", "/tenants", params={"name": "app"})["data"]
    org_id = _admin(gateway, "GET", "/auth/me")["org_id"]
    prompt = f"Mail {EMAIL} from {IP}"

    def ask() -> str:
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": prompt}])
        return str(upstream.requests[-1]["messages"][0]["content"])

    assert ask() == f"Mail [REDACTED:EMAIL_1] from {IP}"
    try:
        # The organisation redacts addresses too; its tenant lets e-mail through.
        org_policy = {"categories": {"network": "redact"}}
        _admin(gateway, "PATCH", f"/organizations/{org_id}", json={"dlp_policy": org_policy})
        assert ask() == "Mail [REDACTED:EMAIL_1] from [REDACTED:IPV4_1]"
        tenant_policy = {"detectors": {"email": "off"}}
        _admin(gateway, "PATCH", f"/tenants/{tenant['id']}", json={"dlp_policy": tenant_policy})
        assert ask() == f"Mail {EMAIL} from [REDACTED:IPV4_1]"
        # A tenant-level block wins over the file's redact for personal data.
        block = {"categories": {"pii": "block"}}
        _admin(gateway, "PATCH", f"/tenants/{tenant['id']}", json={"dlp_policy": block})
        with pytest.raises(openai.BadRequestError):
            ask()
    finally:
        _admin(gateway, "PATCH", f"/tenants/{tenant['id']}", json={"dlp_policy": None})
        _admin(gateway, "PATCH", f"/organizations/{org_id}", json={"dlp_policy": None})
    assert ask() == f"Mail [REDACTED:EMAIL_1] from {IP}"
