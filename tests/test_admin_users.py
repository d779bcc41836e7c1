"""`/api/users`: CRUD, the password policy, token revocation on reset, role changes in the audit
log, and the guards (no super admin from an org admin, no escalation, a last org admin stays)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.admin_support import add_user, bearer, login_token
from tests.conftest import BACKENDS
from tests.support import ADMIN_EMAIL, Gateway, gateway_on

CONFIG = "providers: []\nmodels: []\n"
STRONG = "Velvet-Quokka-Harbour-42"
OTHER_STRONG = "Lantern orbit 7 tangerine!"
WEAK = "password1234"
SECRET_FIELDS = ("password", "password_hash", "password_history")


@pytest.fixture(scope="module", params=BACKENDS)
def gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    with gateway_on(
        request.param, tmp_path_factory.mktemp(f"users-{request.param}"), CONFIG
    ) as gateway:
        yield gateway


def call(gateway: Gateway, token: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = bearer(token, **kwargs.pop("headers", {}))
    return httpx.request(method, f"{gateway.url}{path}", headers=headers, **kwargs)


def email() -> str:
    return f"u{secrets.token_hex(5)}@example.com"


def org_with_admin(gateway: Gateway) -> tuple[str, str]:
    """A fresh organisation with one org admin; returns (their email, their token)."""
    address = email()
    add_user(gateway.database_url, address, STRONG, role="org_admin", org=f"org-{address}")
    return address, login_token(gateway.url, address, STRONG)


def create_user(gateway: Gateway, token: str, **body: Any) -> dict[str, Any]:
    response = call(
        gateway, token, "POST", "/api/users", json={"email": email(), "password": STRONG, **body}
    )
    assert response.status_code == 201, response.text
    user: dict[str, Any] = response.json()
    return user


def test_user_crud_never_shows_a_password_hash(gateway: Gateway) -> None:
    token = gateway.admin_token()
    address = email()
    created = call(
        gateway,
        token,
        "POST",
        "/api/users",
        json={"email": address.upper(), "password": STRONG, "name": "Ada", "role": "viewer"},
    )
    assert created.status_code == 201, created.text
    user = created.json()
    assert user["email"] == address and user["name"] == "Ada" and user["role"] == "viewer"
    assert user["is_active"] and not user["is_super_admin"] and not user["locked"]
    assert user["team_ids"] == [] and user["role_id"] is None
    assert not any(field in user for field in SECRET_FIELDS)
    assert "argon2" not in created.text and STRONG not in created.text

    fetched = call(gateway, token, "GET", f"/api/users/{user['id']}")
    assert fetched.status_code == 200 and fetched.json() == user

    listed = call(gateway, token, "GET", "/api/users", params={"search": address[:8]})
    assert [u["email"] for u in listed.json()["data"]] == [address]
    assert "argon2" not in listed.text
    viewers = call(gateway, token, "GET", "/api/users", params={"role": "viewer"}).json()["data"]
    assert user["id"] in [u["id"] for u in viewers]
    assert all(u["role"] == "viewer" for u in viewers)

    patched = call(
        gateway,
        token,
        "PATCH",
        f"/api/users/{user['id']}",
        json={"name": "Ada L.", "is_active": False},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "Ada L." and patched.json()["is_active"] is False
    inactive = call(gateway, token, "GET", "/api/users", params={"is_active": "false"})
    assert user["id"] in [u["id"] for u in inactive.json()["data"]]
    login = httpx.post(f"{gateway.url}/api/auth/login", json={"email": address, "password": STRONG})
    assert login.status_code == 401

    assert call(gateway, token, "DELETE", f"/api/users/{user['id']}").status_code == 204
    assert call(gateway, token, "GET", f"/api/users/{user['id']}").status_code == 404
    assert call(gateway, token, "DELETE", f"/api/users/{user['id']}").status_code == 404
    actions = audit_actions(gateway, token, f"user:{user['id']}")
    assert actions == ["user.deleted", "user.updated", "user.created"]


def test_listing_pages_with_a_cursor(gateway: Gateway) -> None:
    _, token = org_with_admin(gateway)
    for _ in range(3):
        create_user(gateway, token)
    seen: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = call(gateway, token, "GET", "/api/users", params=params).json()
        seen += [u["id"] for u in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 4 and seen == sorted(seen)


def test_duplicate_email_is_409_without_naming_the_other_org(gateway: Gateway) -> None:
    elsewhere = email()
    add_user(gateway.database_url, elsewhere, STRONG, org="secret-customer-org")
    token = gateway.admin_token()
    for address in (elsewhere, elsewhere.upper()):
        response = call(
            gateway, token, "POST", "/api/users", json={"email": address, "password": STRONG}
        )
        assert response.status_code == 409
        assert response.json() == {"detail": "that email is already registered"}


def test_password_policy_is_422_and_never_echoes_the_password(gateway: Gateway) -> None:
    token = gateway.admin_token()
    response = call(gateway, token, "POST", "/api/users", json={"email": email(), "password": WEAK})
    assert response.status_code == 422
    assert "common" in response.json()["detail"] and WEAK not in response.text
    user = create_user(gateway, token)
    reset = call(gateway, token, "PATCH", f"/api/users/{user['id']}", json={"password": WEAK})
    assert reset.status_code == 422 and WEAK not in reset.text
    reused = call(gateway, token, "PATCH", f"/api/users/{user['id']}", json={"password": STRONG})
    assert reused.status_code == 422 and STRONG not in reused.text


def test_an_admin_password_reset_revokes_the_users_tokens(gateway: Gateway) -> None:
    token = gateway.admin_token()
    user = create_user(gateway, token)
    own_token = login_token(gateway.url, user["email"], STRONG)
    assert call(gateway, own_token, "GET", "/api/auth/me").status_code == 200
    reset = call(
        gateway, token, "PATCH", f"/api/users/{user['id']}", json={"password": OTHER_STRONG}
    )
    assert reset.status_code == 200, reset.text
    assert call(gateway, own_token, "GET", "/api/auth/me").status_code == 401
    assert login_token(gateway.url, user["email"], OTHER_STRONG)
    assert audit_actions(gateway, token, f"user:{user['id']}")[0] == "user.password_reset"
    assert OTHER_STRONG not in call(gateway, token, "GET", "/api/audit-logs").text


def test_an_admin_password_reset_unlocks_a_locked_out_user(gateway: Gateway) -> None:
    token = gateway.admin_token()
    user = create_user(gateway, token)
    for _ in range(5):
        failed = httpx.post(
            f"{gateway.url}/api/auth/login",
            json={"email": user["email"], "password": "Wrong-guess 8812!"},
        )
        assert failed.status_code == 401
    locked = httpx.post(
        f"{gateway.url}/api/auth/login", json={"email": user["email"], "password": STRONG}
    )
    assert locked.status_code == 429
    assert call(gateway, token, "GET", f"/api/users/{user['id']}").json()["locked"] is True
    reset = call(
        gateway, token, "PATCH", f"/api/users/{user['id']}", json={"password": OTHER_STRONG}
    )
    assert reset.status_code == 200 and reset.json()["locked"] is False
    assert login_token(gateway.url, user["email"], OTHER_STRONG)


def test_role_changes_are_audited_as_user_role_changed(gateway: Gateway) -> None:
    token = gateway.admin_token()
    user = create_user(gateway, token, role="member")
    role = call(gateway, token, "POST", "/api/roles", json={"name": email(), "permissions": []})
    changed = call(
        gateway,
        token,
        "PATCH",
        f"/api/users/{user['id']}",
        json={"role": "team_admin", "role_id": role.json()["id"]},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["role"] == "team_admin"
    logs = call(
        gateway,
        token,
        "GET",
        "/api/audit-logs",
        params={"action": "user.role_changed", "target": f"user:{user['id']}"},
    ).json()["data"]
    assert len(logs) == 1 and logs[0]["actor"] == ADMIN_EMAIL
    assert logs[0]["details"]["before"] == {"role": "member", "role_id": None}
    assert logs[0]["details"]["after"] == {"role": "team_admin", "role_id": role.json()["id"]}


def test_write_bodies_refuse_org_id_and_is_super_admin(gateway: Gateway) -> None:
    token = gateway.admin_token()
    for extra in ({"org_id": 1}, {"is_super_admin": True}):
        body = {"email": email(), "password": STRONG, **extra}
        assert call(gateway, token, "POST", "/api/users", json=body).status_code == 422
    user = create_user(gateway, token)
    patch = call(gateway, token, "PATCH", f"/api/users/{user['id']}", json={"is_super_admin": True})
    assert patch.status_code == 422
    for field in ("role", "is_active", "password"):
        nulled = call(gateway, token, "PATCH", f"/api/users/{user['id']}", json={field: None})
        assert nulled.status_code == 422, field


def test_only_super_admins_grant_or_touch_super_admins(gateway: Gateway) -> None:
    _, org_admin = org_with_admin(gateway)
    colleague = create_user(gateway, org_admin, role="org_admin")
    path = f"/api/users/{colleague['id']}/super-admin"
    assert call(gateway, org_admin, "POST", path, json={"enabled": True}).status_code == 403
    assert not call(gateway, org_admin, "GET", f"/api/users/{colleague['id']}").json()[
        "is_super_admin"
    ]

    root = gateway.admin_token()
    org_id = call(gateway, org_admin, "GET", "/api/auth/me").json()["org_id"]
    as_org = {"X-AgentWatch-Org": str(org_id)}
    granted = call(gateway, root, "POST", path, json={"enabled": True}, headers=as_org)
    assert granted.status_code == 200 and granted.json()["is_super_admin"] is True
    # The org admin now faces a super admin in their own organisation: hands off.
    for method, body in (("PATCH", {"name": "x"}), ("PATCH", {"password": OTHER_STRONG})):
        response = call(gateway, org_admin, method, f"/api/users/{colleague['id']}", json=body)
        assert response.status_code == 403
    assert call(gateway, org_admin, "DELETE", f"/api/users/{colleague['id']}").status_code == 403
    revoked = call(gateway, root, "POST", path, json={"enabled": False}, headers=as_org)
    assert revoked.status_code == 200 and revoked.json()["is_super_admin"] is False
    changes = call(
        gateway,
        root,
        "GET",
        "/api/audit-logs",
        params={"action": "user.role_changed", "target": f"user:{colleague['id']}"},
        headers=as_org,
    ).json()["data"]
    assert [c["details"]["after"] for c in changes] == [
        {"is_super_admin": False},
        {"is_super_admin": True},
    ]


def test_the_last_super_admin_cannot_be_revoked(gateway: Gateway) -> None:
    token = gateway.admin_token()
    me = call(gateway, token, "GET", "/api/auth/me").json()
    # Every other test that makes a super admin revokes it again, so the bootstrap one is alone.
    path = f"/api/users/{me['id']}/super-admin"
    response = call(gateway, token, "POST", path, json={"enabled": False})
    assert response.status_code == 409 and "last active super admin" in response.text
    assert call(gateway, token, "GET", "/api/auth/me").json()["is_super_admin"] is True


def test_the_last_org_admin_cannot_demote_disable_or_delete_themselves(
    gateway: Gateway,
) -> None:
    _, token = org_with_admin(gateway)
    me = call(gateway, token, "GET", "/api/auth/me").json()
    path = f"/api/users/{me['id']}"
    for body in ({"role": "member"}, {"is_active": False}):
        response = call(gateway, token, "PATCH", path, json=body)
        assert response.status_code == 409 and "last active org_admin" in response.text
    assert call(gateway, token, "DELETE", path).status_code == 409
    assert call(gateway, token, "PATCH", path, json={"name": "still me"}).status_code == 200

    create_user(gateway, token, role="org_admin")
    demoted = call(gateway, token, "PATCH", path, json={"role": "member"})
    assert demoted.status_code == 200 and demoted.json()["role"] == "member"
    # The role is read from the database on every request: the demotion bites at once.
    body = {"email": email(), "password": STRONG}
    assert call(gateway, token, "POST", "/api/users", json=body).status_code == 403


def test_a_custom_role_cannot_be_used_to_escalate(gateway: Gateway) -> None:
    _, admin = org_with_admin(gateway)
    role = call(
        gateway,
        admin,
        "POST",
        "/api/roles",
        json={"name": "recruiters", "permissions": ["users:read", "users:write"]},
    ).json()
    recruiter = create_user(gateway, admin, role="member", role_id=role["id"])
    token = login_token(gateway.url, recruiter["email"], STRONG)

    assert create_user(gateway, token, role="member")["role"] == "member"
    for role_name in ("org_admin", "team_admin"):
        body = {"email": email(), "password": STRONG, "role": role_name}
        assert call(gateway, token, "POST", "/api/users", json=body).status_code == 403
    own = f"/api/users/{recruiter['id']}"
    assert call(gateway, token, "PATCH", own, json={"role": "org_admin"}).status_code == 403
    me = call(gateway, admin, "GET", "/api/auth/me").json()
    takeover = call(
        gateway, token, "PATCH", f"/api/users/{me['id']}", json={"password": OTHER_STRONG}
    )
    assert takeover.status_code == 403
    assert call(gateway, token, "DELETE", f"/api/users/{me['id']}").status_code == 403


def test_a_role_id_of_another_organisation_is_404(gateway: Gateway) -> None:
    _, first = org_with_admin(gateway)
    _, second = org_with_admin(gateway)
    role = call(gateway, first, "POST", "/api/roles", json={"name": "r", "permissions": []})
    body = {"email": email(), "password": STRONG, "role_id": role.json()["id"]}
    assert call(gateway, second, "POST", "/api/users", json=body).status_code == 404
    user = create_user(gateway, second)
    patch = {"role_id": role.json()["id"]}
    assert call(gateway, second, "PATCH", f"/api/users/{user['id']}", json=patch).status_code == 404


def audit_actions(gateway: Gateway, token: str, target: str) -> list[str]:
    params = {"target": target, "action": "user."}
    response = call(gateway, token, "GET", "/api/audit-logs", params=params)
    assert response.status_code == 200, response.text
    return [row["action"] for row in response.json()["data"]]
