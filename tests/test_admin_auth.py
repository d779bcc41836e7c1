"""Admin authentication: login, lock-out, logout and revocation, token attacks, declared
permissions on every route."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from agentwatch.admin.deps import declared_permission
from agentwatch.admin.rbac import PERMISSIONS, SELF_PERMISSIONS
from agentwatch.app import create_app
from agentwatch.settings import load_settings
from tests.admin_support import add_user
from tests.conftest import BACKENDS
from tests.support import ADMIN_EMAIL, ADMIN_PASSWORD, Gateway, gateway_on

JWT_SECRET = "test-jwt-secret-" + "x" * 64
CONFIG = "providers: []\nmodels: []\n"


@pytest.fixture(scope="module", params=BACKENDS)
def gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    with gateway_on(
        request.param,
        tmp_path_factory.mktemp(f"auth-{request.param}"),
        CONFIG,
        {"JWT_SECRET": JWT_SECRET},
    ) as gateway:
        yield gateway


def login(gateway: Gateway, email: str, password: str) -> httpx.Response:
    return httpx.post(f"{gateway.url}/api/auth/login", json={"email": email, "password": password})


def auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def me(gateway: Gateway, token: str, **headers: str) -> httpx.Response:
    return httpx.get(f"{gateway.url}/api/auth/me", headers={**auth(token), **headers})


def audit(gateway: Gateway, **params: Any) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{gateway.url}/api/audit-logs", params=params, headers=auth(gateway.admin_token())
    )
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["data"]
    return rows


def create_user(gateway: Gateway, email: str, password: str, role: str = "org_admin") -> None:
    add_user(gateway.database_url, email, password, role=role)


def test_every_api_route_declares_a_permission(tmp_path: Path) -> None:
    settings = load_settings({"AGENTWATCH_DATA_DIR": str(tmp_path)})
    app = _fastapi(create_app(settings))
    known = set(PERMISSIONS) | SELF_PERMISSIONS
    seen = 0
    for route in _all_routes(app.routes):
        if not isinstance(route, APIRoute) or not route.path.startswith("/api"):
            assert not _path(route).startswith("/api") or _path(route) == "/api/openapi.json"
            continue
        declared = _declared(route)
        assert declared, f"{sorted(route.methods)} {route.path} declares no permission"
        for permission in declared:
            assert permission.startswith("public:") or permission in known, permission
        seen += 1
    assert seen >= 8


def _fastapi(app: object) -> FastAPI:
    """The admin FastAPI app inside whatever ASGI wrappers the gateway puts around it."""
    for _ in range(5):
        if isinstance(app, FastAPI):
            return app
        app = getattr(app, "api", None) or getattr(app, "app", None)
    raise AssertionError("no FastAPI app inside the gateway")


def _all_routes(routes: list[BaseRoute]) -> Iterator[BaseRoute]:
    """Every route, also inside included routers (FastAPI keeps those as nested routes)."""
    for route in routes:
        nested = getattr(route, "original_router", None)
        if nested is not None:
            yield from _all_routes(nested.routes)
        else:
            yield route


def _path(route: BaseRoute) -> str:
    return str(getattr(route, "path", ""))


def _declared(route: APIRoute) -> list[str]:
    found: list[str] = []
    stack = [route.dependant]
    while stack:
        dependant = stack.pop()
        if dependant.call is not None and (name := declared_permission(dependant.call)):
            found.append(name)
        stack.extend(dependant.dependencies)
    return found


def test_login_issues_a_24_hour_token_with_role_claims(gateway: Gateway) -> None:
    response = login(gateway, ADMIN_EMAIL.upper(), ADMIN_PASSWORD)
    assert response.status_code == 200, response.text
    body = response.json()
    claims = jwt.decode(body["access_token"], JWT_SECRET, algorithms=["HS256"], issuer="agentwatch")
    assert abs(claims["exp"] - claims["iat"] - 24 * 3600) < 1 and body["expires_in"] == 24 * 3600
    assert claims["role"] == "org_admin" and claims["super"] is True
    assert claims["org"] >= 1 and claims["jti"]
    profile = me(gateway, body["access_token"]).json()
    assert profile["email"] == ADMIN_EMAIL and profile["is_super_admin"] is True


def test_unknown_email_and_wrong_password_look_the_same(gateway: Gateway) -> None:
    unknown = login(gateway, "nobody@example.com", "whatever-it-is")
    wrong = login(gateway, ADMIN_EMAIL, "not the password")
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json() == wrong.json()
    failures = audit(gateway, action="auth.login_failed")
    assert any(row["actor"] == ADMIN_EMAIL for row in failures)
    # A failure of an unknown email belongs to no organisation's chain.
    assert all(row["actor"] != "nobody@example.com" for row in failures)


def test_repeated_failures_lock_the_account_even_across_restarts(gateway: Gateway) -> None:
    email, password = "locked@example.com", "Lock-out test 9431!"
    create_user(gateway, email, password, role="org_admin")
    for _ in range(5):
        assert login(gateway, email, "wrong password!!").status_code == 401
    locked = login(gateway, email, password)
    assert locked.status_code == 429, locked.text
    assert int(locked.headers["retry-after"]) > 60
    assert password not in locked.text
    # The lock lives in the database, so another replica (here: a restart) enforces it too.
    gateway.stop()
    gateway.start()
    assert login(gateway, email, password).status_code == 429
    actions = [row["action"] for row in audit(gateway, actor=email)]
    assert actions.count("auth.login_failed") == 5
    assert "auth.locked_out" in actions
    # The CLI's reset is the operator's way out.
    reset = gateway.cli("users", "create-admin", "--email", email, "--password", password)
    assert reset.returncode == 0, reset.stderr
    assert login(gateway, email, password).status_code == 200


def test_logout_revokes_only_that_token_and_logout_all_revokes_every_one(
    gateway: Gateway,
) -> None:
    email, password = "leaver@example.com", "Leaving-soon 5512?"
    create_user(gateway, email, password, role="org_admin")
    first = login(gateway, email, password).json()["access_token"]
    second = login(gateway, email, password).json()["access_token"]
    assert httpx.post(f"{gateway.url}/api/auth/logout", headers=auth(first)).status_code == 204
    assert me(gateway, first).status_code == 401
    assert me(gateway, second).status_code == 200
    time.sleep(1.1)  # token times have one-second resolution
    assert httpx.post(f"{gateway.url}/api/auth/logout-all", headers=auth(second)).status_code == 204
    assert me(gateway, second).status_code == 401
    fresh = login(gateway, email, password).json()["access_token"]
    assert me(gateway, fresh).status_code == 200


def test_password_change_applies_the_policy_and_revokes_old_tokens(gateway: Gateway) -> None:
    email, password = "changer@example.com", "First-password 2231!"
    create_user(gateway, email, password, role="org_admin")
    token = login(gateway, email, password).json()["access_token"]

    def change(current: str, new: str, with_token: str) -> httpx.Response:
        return httpx.post(
            f"{gateway.url}/api/auth/password",
            json={"current_password": current, "new_password": new},
            headers=auth(with_token),
        )

    weak = change(password, "password123", token)
    assert weak.status_code == 422 and "password123" not in weak.text
    assert change("not-current", "Second-password 8812!", token).status_code == 403
    time.sleep(1.1)
    assert change(password, "Second-password 8812!", token).status_code == 204
    assert me(gateway, token).status_code == 401
    token = login(gateway, email, "Second-password 8812!").json()["access_token"]
    reused = change("Second-password 8812!", password, token)
    assert reused.status_code == 422 and "last 5" in reused.text
    assert "auth.password_changed" in [r["action"] for r in audit(gateway, actor=email)]


def _forge(claims: dict[str, Any], secret: str = JWT_SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


def _unsigned(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def test_forged_and_stale_tokens_are_refused(gateway: Gateway) -> None:
    real = jwt.decode(gateway.admin_token(), JWT_SECRET, algorithms=["HS256"], issuer="agentwatch")
    now = int(time.time())
    attacks = {
        "alg none": _unsigned(real),
        "alg none, no signature dot": _unsigned(real).rstrip("."),
        "wrong secret": _forge(real, secret="not-the-secret-" + "y" * 32),
        "HS512": _forge(real, algorithm="HS512"),
        "expired": _forge({**real, "iat": now - 90_000, "exp": now - 3_600}),
        "another org's claims": _forge({**real, "org": real["org"] + 1}),
        "unknown user": _forge({**real, "sub": "987654"}),
        "huge user id": _forge({**real, "sub": str(2**70)}),
        "not an access token": _forge({**real, "typ": "refresh"}),
        "no jti": _forge({k: v for k, v in real.items() if k != "jti"}),
        "wrong issuer": _forge({**real, "iss": "someone-else"}),
        "garbage": "not.a.token",
        "sql": "' OR '1'='1",
    }
    for name, token in attacks.items():
        response = me(gateway, token)
        assert response.status_code == 401, (name, response.status_code, response.text)
    basic = httpx.get(
        f"{gateway.url}/api/auth/me", headers={"authorization": "Basic YWRtaW46YWRtaW4="}
    )
    assert basic.status_code == 401
    assert httpx.get(f"{gateway.url}/api/teams").status_code == 401


def test_only_super_admins_switch_organisation_and_that_is_audited(gateway: Gateway) -> None:
    token = gateway.admin_token()
    assert me(gateway, token, **{"x-agentwatch-org": "999999"}).status_code == 404
    assert me(gateway, token, **{"x-agentwatch-org": "one"}).status_code == 400
    assert me(gateway, token, **{"x-agentwatch-org": str(2**80)}).status_code == 404
    email, password = "plain-admin@example.com", "Plain-admin 7781#"
    create_user(gateway, email, password, role="org_admin")
    plain = login(gateway, email, password).json()["access_token"]
    own_org = me(gateway, plain).json()["org_id"]
    assert me(gateway, plain).json()["is_super_admin"] is False
    refused = me(gateway, plain, **{"x-agentwatch-org": str(own_org)})
    assert refused.status_code == 403, refused.text
    other = add_user(gateway.database_url, "other-org@example.com", password, org="other-org")
    assert other > 0
    other_org = me(
        gateway, login(gateway, "other-org@example.com", password).json()["access_token"]
    )
    other_org_id = other_org.json()["org_id"]
    switched = me(gateway, token, **{"x-agentwatch-org": str(other_org_id)})
    assert switched.status_code == 200
    assert switched.json()["acting_org_id"] == other_org_id
    in_other = httpx.get(
        f"{gateway.url}/api/audit-logs",
        params={"action": "org.accessed"},
        headers={**auth(token), "x-agentwatch-org": str(other_org_id)},
    )
    assert in_other.status_code == 200
    rows = in_other.json()["data"]
    assert rows and rows[0]["actor"] == ADMIN_EMAIL
    assert rows[0]["details"]["acting_from_org"] == me(gateway, token).json()["org_id"]
