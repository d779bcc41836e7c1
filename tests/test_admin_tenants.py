"""`/api/tenants`: CRUD, team scoping, organisation isolation, audit, hostile input."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import httpx
from sqlalchemy import func, select

from agentwatch.crypto import hash_password
from agentwatch.db.engine import create_engine, session_factory
from agentwatch.db.models import ApiKey, Organization, Tenant, User
from agentwatch.settings import normalise_database_url
from tests.support import Gateway

USER_PASSWORD = "a long enough test password 42"
INJECTIONS = ["' OR '1'='1", "x'; DROP TABLE api_keys;--", 'Robert"); DROP TABLE tenants;--']


def api(gateway: Gateway, token: str | None = None) -> httpx.Client:
    return httpx.Client(
        base_url=f"{gateway.url}/api",
        headers={"authorization": f"Bearer {token or gateway.admin_token()}"},
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


async def _add_user(database_url: str, email: str, role: str, org: str | None) -> int:
    """A user written straight into the database (optionally in a new organisation)."""
    engine = create_engine(normalise_database_url(database_url))
    try:
        async with session_factory(engine)() as session:
            if org is None:
                org_id = await session.scalar(select(func.min(Organization.id)))
                assert org_id is not None
            else:
                organization = Organization(name=org)
                session.add(organization)
                await session.flush()
                org_id = organization.id
            user = User(
                org_id=org_id, email=email, role=role, password_hash=hash_password(USER_PASSWORD)
            )
            session.add(user)
            await session.commit()
            return user.id
    finally:
        await engine.dispose()


def add_user(gateway: Gateway, role: str, org: str | None = None) -> tuple[int, str]:
    """A new user (in the default organisation, or a new one named `org`): (id, access token)."""
    email = f"{unique(role)}@example.com".replace("_", "-")
    user_id = asyncio.run(_add_user(gateway.database_url, email, role, org))
    response = httpx.post(
        f"{gateway.url}/api/auth/login", json={"email": email, "password": USER_PASSWORD}
    )
    assert response.status_code == 200, response.text
    return user_id, str(response.json()["access_token"])


def count_rows(gateway: Gateway, model: Any, **equal: object) -> int:
    async def count() -> int:
        engine = create_engine(normalise_database_url(gateway.database_url))
        try:
            async with session_factory(engine)() as session:
                query = select(func.count()).select_from(model)
                for name, value in equal.items():
                    query = query.where(getattr(model, name) == value)
                return int(await session.scalar(query) or 0)
        finally:
            await engine.dispose()

    return asyncio.run(count())


def audit_actions(client: httpx.Client, target: str) -> list[str]:
    response = client.get("/audit-logs", params={"target": target})
    assert response.status_code == 200, response.text
    return [row["action"] for row in response.json()["data"]]


def test_tenant_crud(gateway: Gateway) -> None:
    client = api(gateway)
    team = client.post("/teams", json={"name": unique("team")}).json()
    name = unique("app")
    created = client.post(
        "/tenants",
        json={"name": name, "team_id": team["id"], "allowed_models": ["gpt-4o-mini"] * 2},
    )
    assert created.status_code == 201, created.text
    tenant = created.json()
    assert tenant["name"] == name and tenant["team_id"] == team["id"]
    assert tenant["allowed_models"] == ["gpt-4o-mini"] and tenant["is_active"] is True

    assert client.post("/tenants", json={"name": name}).status_code == 409
    assert client.get(f"/tenants/{tenant['id']}").json() == tenant

    listed = client.get("/tenants", params={"search": name.upper(), "team_id": team["id"]})
    assert [t["id"] for t in listed.json()["data"]] == [tenant["id"]]
    assert client.get("/tenants", params={"search": name, "is_active": False}).json()["data"] == []

    patched = client.patch(
        f"/tenants/{tenant['id']}",
        json={"allowed_models": None, "is_active": False, "team_id": None},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["allowed_models"] is None and patched.json()["team_id"] is None
    assert patched.json()["is_active"] is False
    assert client.patch(f"/tenants/{tenant['id']}", json={"name": None}).status_code == 422
    assert client.patch(f"/tenants/{tenant['id']}", json={"name": "ci"}).status_code == 409

    client.post(f"/tenants/{tenant['id']}/keys", json={}).raise_for_status()
    assert client.delete(f"/tenants/{tenant['id']}").status_code == 204
    assert client.get(f"/tenants/{tenant['id']}").status_code == 404
    assert count_rows(gateway, ApiKey, tenant_id=tenant["id"]) == 0  # keys go with the tenant
    assert audit_actions(client, f"tenant:{tenant['id']}") == [
        "tenant.deleted",
        "tenant.updated",
        "tenant.created",
    ]


def test_tenant_input_is_bounded(gateway: Gateway) -> None:
    client = api(gateway)
    too_many = [f"m{i}" for i in range(501)]
    for body in (
        {"name": unique("x"), "org_id": 2},  # the organisation never comes from the body
        {"name": "x" * 201},
        {"name": "   "},
        {"name": unique("x"), "allowed_models": too_many},
        {"name": unique("x"), "allowed_models": ["m" * 201]},
        {"name": unique("x"), "team_id": 2**63},
        {"name": unique("x"), "is_active": "maybe"},
    ):
        assert client.post("/tenants", json=body).status_code == 422, body
    assert client.post("/tenants", json={"name": unique("x"), "team_id": 2**62}).status_code == 404
    assert client.get("/tenants/0").status_code == 422
    assert client.get(f"/tenants/{2**63}").status_code == 422
    assert client.get("/tenants", params={"cursor": "garbage!"}).status_code == 400


def test_injection_strings_are_stored_literally(gateway: Gateway) -> None:
    client = api(gateway)
    for text in INJECTIONS:
        created = client.post("/tenants", json={"name": text})
        assert created.status_code == 201, created.text
        assert client.get(f"/tenants/{created.json()['id']}").json()["name"] == text
        found = client.get("/tenants", params={"search": text}).json()["data"]
        assert [t["name"] for t in found] == [text]
    assert client.get("/tenants", params={"search": "%"}).json()["data"] == []
    assert count_rows(gateway, Tenant) >= len(INJECTIONS) + 2  # the tables are still there
    assert count_rows(gateway, ApiKey) >= 2


def test_team_admin_manages_tenants_of_their_teams_only(gateway: Gateway) -> None:
    admin = api(gateway)
    mine = admin.post("/teams", json={"name": unique("mine")}).json()
    theirs = admin.post("/teams", json={"name": unique("theirs")}).json()
    user_id, token = add_user(gateway, "team_admin")
    admin.put(f"/teams/{mine['id']}/members/{user_id}", json={"role": "team_admin"})
    team_admin = api(gateway, token)

    created = team_admin.post("/tenants", json={"name": unique("t"), "team_id": mine["id"]})
    assert created.status_code == 201, created.text
    tenant_id = created.json()["id"]
    assert (
        team_admin.post("/tenants", json={"name": unique("t"), "team_id": theirs["id"]})
    ).status_code == 403
    assert team_admin.post("/tenants", json={"name": unique("t")}).status_code == 403
    moved = team_admin.patch(f"/tenants/{tenant_id}", json={"team_id": theirs["id"]})
    assert moved.status_code == 403
    assert team_admin.patch(f"/tenants/{tenant_id}", json={"is_active": False}).status_code == 200

    other = admin.post("/tenants", json={"name": unique("t"), "team_id": theirs["id"]}).json()
    assert team_admin.get(f"/tenants/{other['id']}").status_code == 200  # reading is org-wide
    assert team_admin.delete(f"/tenants/{other['id']}").status_code == 403
    assert team_admin.delete(f"/tenants/{tenant_id}").status_code == 204

    _, member_token = add_user(gateway, "member")
    member = api(gateway, member_token)
    assert member.post("/tenants", json={"name": unique("t")}).status_code == 403


def test_other_organisations_tenants_look_absent(gateway: Gateway) -> None:
    admin = api(gateway)
    tenant = admin.post("/tenants", json={"name": unique("secret")}).json()
    team = admin.post("/teams", json={"name": unique("team")}).json()
    _, token = add_user(gateway, "org_admin", org=unique("other-org"))
    outsider = api(gateway, token)

    assert outsider.get("/tenants").json()["data"] == []
    assert outsider.get(f"/tenants/{tenant['id']}").status_code == 404
    assert outsider.patch(f"/tenants/{tenant['id']}", json={"name": "mine"}).status_code == 404
    assert outsider.delete(f"/tenants/{tenant['id']}").status_code == 404
    assert outsider.post("/tenants", json={"name": "x", "team_id": team["id"]}).status_code == 404
    own = outsider.post("/tenants", json={"name": tenant["name"]})  # names are per organisation
    assert own.status_code == 201, own.text
    assert admin.get(f"/tenants/{own.json()['id']}").status_code == 404
    assert admin.get(f"/tenants/{tenant['id']}").json() == tenant
