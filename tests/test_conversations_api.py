"""The request log API: calls DLP found something in are listed newest or riskiest first,
filtered by tenant, model, status, time, risk and action, paged by cursor, read one by one."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.fake_scripted import FakeScripted
from tests.support import Gateway, new_key, running_gateway

OPENAI_KEY = "sk-proj-" + secrets.token_hex(24)


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
  - name: other
    routes: [{{provider: scripted, model: scripted-chat}}]
tenants:
  - name: app
    api_keys: [{key}]
dlp:
  default_action: log
  categories: {{secret: block, pii: redact}}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    upstream = FakeScripted()
    upstream.start()
    key = new_key()
    workdir = tmp_path_factory.mktemp("conversations")
    env = {"AGENTWATCH_USAGE_FLUSH_SECONDS": "0.05"}
    try:
        with running_gateway(workdir, config(upstream.base_url, key), key, env) as gateway:
            for request_id, model, text in (
                ("c-clean", "chat", "nothing here"),
                ("c-ip", "chat", "ping 10.20.30.40"),
                ("c-mail", "other", f"mail {secrets.token_hex(4)}@example.com"),
                ("c-secret", "chat", f"key {OPENAI_KEY}"),
            ):
                httpx.post(
                    f"{gateway.url}/v1/chat/completions",
                    headers={"authorization": f"Bearer {key}", "x-request-id": request_id},
                    json={"model": model, "messages": [{"role": "user", "content": text}]},
                )
            yield gateway
    finally:
        upstream.stop()


def listing(gateway: Gateway, **params: Any) -> dict[str, Any]:
    response = httpx.get(
        f"{gateway.url}/api/conversations",
        params=params,
        headers={"authorization": f"Bearer {gateway.admin_token()}"},
    )
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def ids(page: dict[str, Any]) -> list[str]:
    return [row["request_id"] for row in page["data"]]


@pytest.fixture(scope="module")
def rows(gateway: Gateway) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found: list[dict[str, Any]] = listing(gateway)["data"]
        if len(found) >= 3:
            return found
        time.sleep(0.05)
    raise AssertionError("conversation rows did not arrive")


def test_rows_are_the_calls_dlp_acted_on_newest_first(rows: list[dict[str, Any]]) -> None:
    assert [row["request_id"] for row in rows] == ["c-secret", "c-mail", "c-ip"]
    by_id = {row["request_id"]: row for row in rows}
    assert by_id["c-secret"]["dlp_action"] == "block" and by_id["c-secret"]["status"] == 400
    assert by_id["c-mail"]["dlp_action"] == "redact" and by_id["c-mail"]["model"] == "other"
    assert by_id["c-ip"]["dlp_action"] == "log" and by_id["c-ip"]["findings"] == 1


def test_filters(gateway: Gateway, rows: list[dict[str, Any]]) -> None:
    assert ids(listing(gateway, model="other")) == ["c-mail"]
    assert ids(listing(gateway, status=400)) == ["c-secret"]
    assert ids(listing(gateway, dlp_action="log")) == ["c-ip"]
    assert ids(listing(gateway, dlp_action="none")) == []
    tenant = rows[0]["tenant_id"]
    assert len(ids(listing(gateway, tenant_id=tenant))) == 3
    assert ids(listing(gateway, tenant_id=tenant + 1000)) == []
    riskiest = max(row["risk_score"] for row in rows)
    assert ids(listing(gateway, min_risk=riskiest)) == [
        row["request_id"] for row in rows if row["risk_score"] == riskiest
    ]
    later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    assert ids(listing(gateway, **{"from": later})) == []
    assert len(ids(listing(gateway, to=later))) == 3


def test_risk_order_and_cursor_pages(gateway: Gateway, rows: list[dict[str, Any]]) -> None:
    by_risk = sorted(rows, key=lambda row: (-row["risk_score"], -row["id"]))
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        params: dict[str, Any] = {"sort": "risk", "limit": 1}
        if cursor is not None:
            params["cursor"] = cursor
        page = listing(gateway, **params)
        seen += ids(page)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [row["request_id"] for row in by_risk]
    first = listing(gateway, limit=1)
    assert first["next_cursor"] is not None
    wrong = httpx.get(
        f"{gateway.url}/api/conversations",
        params={"sort": "risk", "cursor": first["next_cursor"]},
        headers={"authorization": f"Bearer {gateway.admin_token()}"},
    )
    assert wrong.status_code == 400


def test_one_row_has_its_events_without_values(
    gateway: Gateway, rows: list[dict[str, Any]]
) -> None:
    secret_row = next(row for row in rows if row["request_id"] == "c-secret")
    response = httpx.get(
        f"{gateway.url}/api/conversations/{secret_row['id']}",
        headers={"authorization": f"Bearer {gateway.admin_token()}"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["dlp_events"][0]["action"] == "block" and body["messages"] == []
    assert OPENAI_KEY not in response.text
    missing = httpx.get(
        f"{gateway.url}/api/conversations/{secret_row['id'] + 1000}",
        headers={"authorization": f"Bearer {gateway.admin_token()}"},
    )
    assert missing.status_code == 404
