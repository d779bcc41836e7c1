"""Request and answer text in the request log, for an organisation that turns it on: stored
after DLP (redacted values stay redacted, a blocked call stores nothing), shown by
GET /api/conversations/{id}, and deleted after the retention."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import select

from agentwatch.db.engine import create_engine, session_factory
from agentwatch.db.migrate import upgrade_database
from agentwatch.db.models import Conversation
from agentwatch.observe.bodies import BodyLogging, delete_expired
from agentwatch.settings import normalise_database_url
from tests.fake_scripted import FakeScripted
from tests.support import Gateway, gateway_on, new_key

EMAIL = "jane.doe@example.com"


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
tenants:
  - name: app
    api_keys: [{key}]
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeScripted]:
    server = FakeScripted(reply="Sure, noted.")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(upstream: FakeScripted, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    workdir: Path = tmp_path_factory.mktemp("gw-bodies")
    key = new_key()
    env = {"AGENTWATCH_USAGE_FLUSH_SECONDS": "0.05"}
    with gateway_on("sqlite", workdir, config(upstream.base_url, key), env) as gateway:
        gateway.tenant_key = key
        yield gateway


def admin(gateway: Gateway, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {gateway.admin_token()}"}
    return httpx.request(method, f"{gateway.url}/api{path}", headers=headers, **kwargs)


def row_of(gateway: Gateway, request_id: str) -> dict[str, Any]:
    for _ in range(200):
        page = admin(gateway, "GET", "/conversations", params={"limit": 100}).json()
        for row in page["data"]:
            if row["request_id"] == request_id:
                detail = admin(gateway, "GET", f"/conversations/{row['id']}")
                assert detail.status_code == 200
                body: dict[str, Any] = detail.json()
                return body
        asyncio.run(asyncio.sleep(0.05))
    raise AssertionError(f"no request log row for {request_id}")


def test_bodies_are_logged_only_when_the_organisation_asks(gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.tenant_key, max_retries=0)
    plain = client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "nothing to see"}]
    )
    org_id = admin(gateway, "GET", "/auth/me").json()["org_id"]
    bad = admin(gateway, "PATCH", f"/organizations/{org_id}", json={
        "settings": {"log_bodies": True, "log_retention_days": 0}})  # fmt: skip
    assert bad.status_code == 422 and "log_retention_days" in bad.text
    on = {"settings": {"log_bodies": True, "log_retention_days": 7}}
    assert admin(gateway, "PATCH", f"/organizations/{org_id}", json=on).status_code == 200
    try:
        logged = client.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": f"write to {EMAIL} please"}]
        )
        row = row_of(gateway, logged.headers["x-request-id"])
        request, answer = row["messages"]
        assert request["role"] == "request"
        assert request["content"]["messages"][0]["content"] == "write to [REDACTED:EMAIL_1] please"
        assert answer == {"role": "assistant", "content": "Sure, noted."}
        assert EMAIL not in str(row)
        streamed = client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "stream it"}], stream=True
        )
        chunks = list(streamed)
        streamed_row = row_of(gateway, streamed.response.headers["x-request-id"])
        assert streamed_row["messages"][1]["content"] == "Sure, noted."
        assert chunks
        secret = "AKIAQ3EGRXKPLMWN7ZTB"
        with pytest.raises(openai.BadRequestError) as blocked:
            client.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": f"key {secret}"}]
            )
        blocked_row = row_of(gateway, blocked.value.response.headers["x-request-id"])
        assert blocked_row["messages"] == [] and secret not in str(blocked_row)
    finally:
        off = {"settings": {}}
        assert admin(gateway, "PATCH", f"/organizations/{org_id}", json=off).status_code == 200
    # Before it was on, a call with no finding left no row at all.
    page = admin(gateway, "GET", "/conversations", params={"limit": 100}).json()
    assert plain.headers["x-request-id"] not in {r["request_id"] for r in page["data"]}


def test_rows_older_than_the_retention_are_deleted(tmp_path: Path) -> None:
    async def run() -> list[str]:
        engine = create_engine(normalise_database_url(f"sqlite:///{tmp_path / 'r.db'}"))
        try:
            await upgrade_database(engine)
            sessions = session_factory(engine)
            now = datetime(2026, 11, 28, tzinfo=UTC)
            async with sessions.begin() as session:
                for org_id, name, age in ((1, "old", 10), (1, "new", 2), (2, "other", 10)):
                    session.add(
                        Conversation(
                            org_id=org_id,
                            request_id=name,
                            messages=[],
                            dlp_events=[],
                            risk_score=0.0,
                            created_at=now - timedelta(days=age),
                        )
                    )
            removed = await delete_expired(
                sessions, {1: BodyLogging(log_bodies=True, log_retention_days=7)}, now
            )
            assert removed == 1
            async with sessions() as session:
                return sorted(await session.scalars(select(Conversation.request_id)))
        finally:
            await engine.dispose()

    assert asyncio.run(run()) == ["new", "other"]
