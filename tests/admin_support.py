"""Admin API test helpers: users and organisations written straight to the database, so a
test of one resource does not depend on the endpoints of another."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import select

from agentwatch.bootstrap import DEFAULT_ORG
from agentwatch.crypto import hash_password
from agentwatch.db.engine import create_engine, session_factory
from agentwatch.db.models import Organization, TeamMembership, User
from agentwatch.settings import normalise_database_url


def add_user(
    database_url: str,
    email: str,
    password: str,
    *,
    role: str = "member",
    org: str = DEFAULT_ORG,
    super_admin: bool = False,
    teams: dict[int, str] | None = None,
) -> int:
    """Create `org` if missing and a user in it with `role`; `teams` maps team id → team role."""

    async def add() -> int:
        engine = create_engine(normalise_database_url(database_url))
        try:
            async with session_factory(engine).begin() as session:
                org_id = await session.scalar(
                    select(Organization.id).where(Organization.name == org)
                )
                if org_id is None:
                    organization = Organization(name=org, settings={})
                    session.add(organization)
                    await session.flush()
                    org_id = organization.id
                user = User(
                    org_id=org_id,
                    email=email.lower(),
                    password_hash=hash_password(password),
                    role=role,
                    is_super_admin=super_admin,
                )
                session.add(user)
                await session.flush()
                for team_id, team_role in (teams or {}).items():
                    session.add(TeamMembership(team_id=team_id, user_id=user.id, role=team_role))
                return user.id
        finally:
            await engine.dispose()

    return asyncio.run(add())


def login_token(base_url: str, email: str, password: str) -> str:
    response = httpx.post(f"{base_url}/api/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def bearer(token: str, **headers: str) -> dict[str, Any]:
    return {"authorization": f"Bearer {token}", **headers}
