"""Tenant API keys through the admin API, used with the official OpenAI SDK against /v1."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import update

from agentwatch.db.engine import create_engine, session_factory
from agentwatch.db.models import ApiKey, Tenant
from agentwatch.settings import normalise_database_url
from tests.support import Gateway
from tests.test_admin_tenants import INJECTIONS, add_user, api, audit_actions, count_rows, unique

MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]


def sdk(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)


def chat(gateway: Gateway, key: str, model: str = "gpt-4o-mini") -> str | None:
    completion = sdk(gateway, key).chat.completions.create(model=model, messages=MESSAGES)
    return completion.choices[0].message.content


def refused(gateway: Gateway, key: str) -> bool:
    try:
        chat(gateway, key)
    except openai.AuthenticationError:
        return True
    return False


def new_tenant(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/tenants", json={"name": unique("app"), **body})
    assert response.status_code == 201, response.text
    tenant: dict[str, Any] = response.json()
    return tenant


def new_key(client: httpx.Client, tenant_id: int, **body: Any) -> dict[str, Any]:
    response = client.post(f"/tenants/{tenant_id}/keys", json=body)
    assert response.status_code == 201, response.text
    key: dict[str, Any] = response.json()
    return key


def set_expiry(gateway: Gateway, key_id: int, when: datetime) -> None:
    """Moves a key's expiry straight in the database, as if time had passed."""

    async def write() -> None:
        engine = create_engine(normalise_database_url(gateway.database_url))
        try:
            async with session_factory(engine)() as session:
                await session.execute(
                    update(ApiKey).where(ApiKey.id == key_id).values(expires_at=when)
                )
                await session.commit()
        finally:
            await engine.dispose()

    asyncio.run(write())


def test_key_works_until_revoked(gateway: Gateway) -> None:
    client = api(gateway)
    tenant = new_tenant(client)
    created = new_key(client, tenant["id"], name="ci runner", rpm_limit=60, tpm_limit=10_000)
    secret = created["key"]
    assert secret.startswith("aw-") and created["prefix"] == secret[:8]
    assert created["status"] == "active" and created["name"] == "ci runner"
    assert created["rpm_limit"] == 60 and created["tpm_limit"] == 10_000
    assert "key_hash" not in created

    assert chat(gateway, secret) == "Hello from the fake upstream."
    listed = client.get(f"/tenants/{tenant['id']}/keys")
    one = client.get(f"/keys/{created['id']}")
    audit = client.get("/audit-logs", params={"target": f"key:{created['id']}"})
    for response in (listed, one, audit):
        assert response.status_code == 200 and secret not in response.text
        assert secret[8:16] not in response.text  # nor any part beyond the prefix
    assert one.json() == {k: v for k, v in created.items() if k != "key"}
    assert [k["id"] for k in listed.json()["data"]] == [created["id"]]
    assert audit.json()["data"][0]["details"]["after"]["prefix"] == created["prefix"]

    revoked = client.post(f"/keys/{created['id']}/revoke")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["status"] == "revoked" and revoked.json()["revoked_at"] is not None
    assert refused(gateway, secret)  # at once: this process's cache dropped it
    assert client.post(f"/keys/{created['id']}/revoke").status_code == 200  # idempotent
    assert audit_actions(client, f"key:{created['id']}") == ["key.revoked", "key.created"]
    by_status = client.get(f"/tenants/{tenant['id']}/keys", params={"status": "revoked"})
    assert [k["id"] for k in by_status.json()["data"]] == [created["id"]]
    active = client.get(f"/tenants/{tenant['id']}/keys", params={"status": "active"})
    assert active.json()["data"] == []


def test_rotation_keeps_the_old_key_for_the_grace_period(gateway: Gateway) -> None:
    client = api(gateway)
    tenant = new_tenant(client, allowed_models=["gpt-4o-mini", "embedder"])
    first = new_key(client, tenant["id"], name="svc", allowed_models=["gpt-4o-mini"], rpm_limit=5)
    assert chat(gateway, first["key"])  # cached from here on

    rotated = client.post(f"/keys/{first['id']}/rotate", json={"grace_seconds": 3600})
    assert rotated.status_code == 201, rotated.text
    second = rotated.json()
    assert second["key"] != first["key"] and second["id"] != first["id"]
    assert (second["name"], second["allowed_models"], second["rpm_limit"]) == (
        "svc",
        ["gpt-4o-mini"],
        5,
    )
    assert chat(gateway, first["key"]) and chat(gateway, second["key"])
    old = client.get(f"/keys/{first['id']}").json()
    assert old["status"] == "active" and old["expires_at"] is not None
    assert secret_free(client, tenant["id"], [first["key"], second["key"]])

    third = client.post(f"/keys/{second['id']}/rotate", json={"grace_seconds": 0})
    assert third.status_code == 201, third.text
    assert refused(gateway, second["key"])
    assert chat(gateway, third.json()["key"])
    assert client.get(f"/keys/{second['id']}").json()["status"] == "revoked"
    assert client.post(f"/keys/{second['id']}/rotate").status_code == 409
    assert audit_actions(client, f"key:{second['id']}") == ["key.rotated"]

    defaulted = client.post(f"/keys/{third.json()['id']}/rotate")  # no body: one hour of grace
    assert defaulted.status_code == 201, defaulted.text
    for grace in (-1, 7 * 24 * 3600 + 1):
        response = client.post(f"/keys/{first['id']}/rotate", json={"grace_seconds": grace})
        assert response.status_code == 422


def secret_free(client: httpx.Client, tenant_id: int, secrets: list[str]) -> bool:
    text = client.get(f"/tenants/{tenant_id}/keys").text
    return not any(secret in text for secret in secrets)


def test_expired_keys_are_refused(gateway: Gateway) -> None:
    client = api(gateway)
    tenant = new_tenant(client)
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    assert (
        client.post(f"/tenants/{tenant['id']}/keys", json={"expires_at": past}).status_code == 422
    )

    never_used = new_key(client, tenant["id"], expires_in_days=30)
    set_expiry(gateway, never_used["id"], datetime.now(UTC) - timedelta(seconds=1))
    assert refused(gateway, never_used["key"])
    assert client.get(f"/keys/{never_used['id']}").json()["status"] == "expired"
    expired = client.get(f"/tenants/{tenant['id']}/keys", params={"status": "expired"})
    assert [k["id"] for k in expired.json()["data"]] == [never_used["id"]]

    # A key that expires while cached is refused once it has expired, not 30 s later.
    soon = datetime.now(UTC) + timedelta(seconds=2)
    short = new_key(client, tenant["id"], expires_at=soon.isoformat())
    assert chat(gateway, short["key"])
    time.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.2)
    assert refused(gateway, short["key"])

    # Extending an expired key takes effect at once, its cached refusal dropped.
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    extended = client.patch(f"/keys/{short['id']}", json={"expires_at": later})
    assert extended.status_code == 200 and extended.json()["status"] == "active"
    assert chat(gateway, short["key"])


def test_key_models_narrow_the_tenants(gateway: Gateway) -> None:
    client = api(gateway)
    tenant = new_tenant(client, allowed_models=["gpt-4o-mini", "embedder"])
    key = new_key(client, tenant["id"], allowed_models=["embedder"])
    with pytest.raises(openai.PermissionDeniedError) as denied:
        chat(gateway, key["key"])
    assert denied.value.code == "model_not_allowed"
    embedded = sdk(gateway, key["key"]).embeddings.create(model="embedder", input="hi")
    assert embedded.data
    assert [m.id for m in sdk(gateway, key["key"]).models.list()] == ["embedder"]
    outside = client.post(f"/tenants/{tenant['id']}/keys", json={"allowed_models": ["slow"]})
    assert outside.status_code == 422 and "slow" in outside.text

    widened = client.patch(f"/keys/{key['id']}", json={"allowed_models": None})
    assert widened.status_code == 200 and widened.json()["allowed_models"] is None
    assert chat(gateway, key["key"])  # the tenant's list applies again, at once

    narrowed = client.patch(f"/tenants/{tenant['id']}", json={"allowed_models": ["embedder"]})
    assert narrowed.status_code == 200
    with pytest.raises(openai.PermissionDeniedError):
        chat(gateway, key["key"])

    client.patch(f"/tenants/{tenant['id']}", json={"is_active": False}).raise_for_status()
    assert sdk_refused_embeddings(gateway, key["key"])
    client.patch(f"/tenants/{tenant['id']}", json={"is_active": True}).raise_for_status()
    assert sdk(gateway, key["key"]).embeddings.create(model="embedder", input="hi").data


def sdk_refused_embeddings(gateway: Gateway, key: str) -> bool:
    try:
        sdk(gateway, key).embeddings.create(model="embedder", input="hi")
    except openai.AuthenticationError:
        return True
    return False


def test_key_input_is_bounded(gateway: Gateway) -> None:
    client = api(gateway)
    tenant = new_tenant(client)
    key = new_key(client, tenant["id"])
    soon = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    for body in (
        {"tenant_id": 1},
        {"key": "aw-chosen-by-the-client-0000000"},
        {"name": "n" * 201},
        {"rpm_limit": 0},
        {"tpm_limit": 2**31},
        {"expires_in_days": 0},
        {"expires_in_days": 36_501},
        {"expires_at": soon, "expires_in_days": 1},
        {"expires_at": "not a date"},
        {"expires_at": "9999-12-31T23:59:59-05:00"},
        {"allowed_models": ["m"] * 501},
    ):
        response = client.post(f"/tenants/{tenant['id']}/keys", json=body)
        assert response.status_code == 422, (body, response.text)
    assert client.patch(f"/keys/{key['id']}", json={"prefix": "aw-x"}).status_code == 422
    assert client.patch(f"/keys/{key['id']}", json={"is_active": True}).status_code == 422
    assert client.get(f"/keys/{2**63}").status_code == 422
    assert client.get(f"/keys/{2**62}").status_code == 404
    assert client.post(f"/tenants/{2**62}/keys", json={}).status_code == 404


def test_other_organisations_keys_look_absent(gateway: Gateway) -> None:
    client = api(gateway)
    tenant = new_tenant(client)
    key = new_key(client, tenant["id"])
    _, token = add_user(gateway, "org_admin", org=unique("other-org"))
    outsider = api(gateway, token)
    for method, path, body in (
        ("GET", f"/tenants/{tenant['id']}/keys", None),
        ("POST", f"/tenants/{tenant['id']}/keys", {}),
        ("GET", f"/keys/{key['id']}", None),
        ("PATCH", f"/keys/{key['id']}", {"name": "mine"}),
        ("POST", f"/keys/{key['id']}/revoke", None),
        ("POST", f"/keys/{key['id']}/rotate", {"grace_seconds": 0}),
    ):
        response = outsider.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
    assert chat(gateway, key["key"])  # untouched
    assert client.get(f"/keys/{key['id']}").json()["name"] is None


def test_members_manage_keys_of_their_own_teams(gateway: Gateway) -> None:
    admin = api(gateway)
    mine = admin.post("/teams", json={"name": unique("mine")}).json()
    theirs = admin.post("/teams", json={"name": unique("theirs")}).json()
    user_id, token = add_user(gateway, "member")
    admin.put(f"/teams/{mine['id']}/members/{user_id}", json={"role": "member"}).raise_for_status()
    member = api(gateway, token)
    own_tenant = new_tenant(admin, team_id=mine["id"])
    other_tenant = new_tenant(admin, team_id=theirs["id"])

    own_key = new_key(member, own_tenant["id"])
    assert member.post(f"/keys/{own_key['id']}/revoke").status_code == 200
    assert member.post(f"/tenants/{other_tenant['id']}/keys", json={}).status_code == 403
    other_key = new_key(admin, other_tenant["id"])
    assert member.get(f"/keys/{other_key['id']}").status_code == 200  # reading is org-wide
    assert member.post(f"/keys/{other_key['id']}/revoke").status_code == 403
    assert member.post(f"/keys/{other_key['id']}/rotate").status_code == 403


def test_injection_strings_as_api_keys_are_refused(gateway: Gateway) -> None:
    keys_before = count_rows(gateway, ApiKey)
    for text in INJECTIONS:
        response = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            headers={"authorization": f"Bearer {text}"},
            json={"model": "gpt-4o-mini", "messages": MESSAGES},
        )
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert refused(gateway, text)
    assert count_rows(gateway, ApiKey) == keys_before >= 2
    assert count_rows(gateway, Tenant) >= 2
    assert chat(gateway, gateway.tenant_key)
