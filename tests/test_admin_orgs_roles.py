"""`/api/organizations` and `/api/roles`: CRUD, and an org admin of one organisation finding
nothing of another by id."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.admin_support import add_user, bearer, login_token
from tests.conftest import BACKENDS
from tests.support import Gateway, gateway_on

CONFIG = "providers: []\nmodels: []\n"
STRONG = "Velvet-Quokka-Harbour-42"


@pytest.fixture(scope="module", params=BACKENDS)
def gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    with gateway_on(
        request.param, tmp_path_factory.mktemp(f"orgs-{request.param}"), CONFIG
    ) as gateway:
        yield gateway


def call(gateway: Gateway, token: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = bearer(token, **kwargs.pop("headers", {}))
    return httpx.request(method, f"{gateway.url}{path}", headers=headers, **kwargs)


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def test_organization_crud_by_a_super_admin(gateway: Gateway) -> None:
    root = gateway.admin_token()
    name = unique("acme")
    org = created(
        call(gateway, root, "POST", "/api/organizations", json={"name": name, "settings": {"a": 1}})
    )
    assert org["name"] == name and org["settings"] == {"a": 1} and org["plan_id"] is None
    clash = call(gateway, root, "POST", "/api/organizations", json={"name": name})
    assert clash.status_code == 409 and name in clash.json()["detail"]
    huge = {"name": unique("big"), "settings": {"blob": "x" * 20_000}}
    assert call(gateway, root, "POST", "/api/organizations", json=huge).status_code == 422

    listed = call(gateway, root, "GET", "/api/organizations", params={"search": name}).json()
    assert [o["id"] for o in listed["data"]] == [org["id"]]
    everyone = call(gateway, root, "GET", "/api/organizations", params={"limit": 500}).json()
    assert {"default", name} <= {o["name"] for o in everyone["data"]}
    assert call(gateway, root, "GET", f"/api/organizations/{org['id']}").json() == org

    renamed = unique("acme-renamed")
    patched = call(
        gateway,
        root,
        "PATCH",
        f"/api/organizations/{org['id']}",
        json={"name": renamed, "settings": None},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == renamed and patched.json()["settings"] == {}
    taken = call(
        gateway, root, "PATCH", f"/api/organizations/{org['id']}", json={"name": "default"}
    )
    assert taken.status_code == 409
    # Its own admins see who created and changed it: the events are in its chain.
    as_org = {"X-AgentWatch-Org": str(org["id"])}
    trail = call(gateway, root, "GET", "/api/audit-logs", params={"action": "org."}, headers=as_org)
    changes = [r["action"] for r in trail.json()["data"] if r["action"] != "org.accessed"]
    assert changes == ["org.updated", "org.created"]

    home = call(gateway, root, "GET", "/api/auth/me").json()["org_id"]
    own = call(gateway, root, "DELETE", f"/api/organizations/{home}")
    assert own.status_code == 409
    assert call(gateway, root, "DELETE", f"/api/organizations/{org['id']}").status_code == 204
    assert call(gateway, root, "GET", f"/api/organizations/{org['id']}").status_code == 404
    deleted = call(gateway, root, "GET", "/api/audit-logs", params={"action": "org.deleted"})
    assert f"org:{org['id']}" in [r["target"] for r in deleted.json()["data"]]


def test_a_deleted_organisations_id_is_never_handed_out_again(gateway: Gateway) -> None:
    root = gateway.admin_token()
    first = created(call(gateway, root, "POST", "/api/organizations", json={"name": unique("o")}))
    assert call(gateway, root, "DELETE", f"/api/organizations/{first['id']}").status_code == 204
    second = created(call(gateway, root, "POST", "/api/organizations", json={"name": unique("o")}))
    assert second["id"] > first["id"]
    as_second = {"X-AgentWatch-Org": str(second["id"])}
    # The new organisation's audit chain starts with its own creation, not the old one's history.
    trail = call(gateway, root, "GET", "/api/audit-logs", headers=as_second).json()["data"]
    assert {r["target"] for r in trail} == {f"org:{second['id']}"}
    assert trail[-1]["action"] == "org.created" and trail[-1]["seq"] == 1


def test_an_org_admin_sees_and_changes_only_their_own_organisation(gateway: Gateway) -> None:
    address = f"{unique('admin')}@example.com"
    org_name = unique("solo")
    add_user(gateway.database_url, address, STRONG, role="org_admin", org=org_name)
    token = login_token(gateway.url, address, STRONG)
    own = call(gateway, token, "GET", "/api/organizations").json()["data"]
    assert [o["name"] for o in own] == [org_name]
    patched = call(
        gateway, token, "PATCH", f"/api/organizations/{own[0]['id']}", json={"settings": {"k": "v"}}
    )
    assert patched.status_code == 200 and patched.json()["settings"] == {"k": "v"}
    assert call(gateway, token, "POST", "/api/organizations", json={"name": "x"}).status_code == 403
    assert call(gateway, token, "DELETE", f"/api/organizations/{own[0]['id']}").status_code == 403


def test_an_org_admin_of_one_org_finds_nothing_of_another(gateway: Gateway) -> None:
    root = gateway.admin_token()
    home = call(gateway, root, "GET", "/api/auth/me").json()["org_id"]
    victim_user = created(
        call(
            gateway,
            root,
            "POST",
            "/api/users",
            json={"email": f"{unique('victim')}@example.com", "password": STRONG},
        )
    )
    victim_role = created(
        call(gateway, root, "POST", "/api/roles", json={"name": unique("r"), "permissions": []})
    )

    other = created(call(gateway, root, "POST", "/api/organizations", json={"name": unique("b")}))
    intruder_email = f"{unique('intruder')}@example.com"
    intruder = created(
        call(
            gateway,
            root,
            "POST",
            "/api/users",
            json={"email": intruder_email, "password": STRONG, "role": "org_admin"},
            headers={"X-AgentWatch-Org": str(other["id"])},
        )
    )
    token = login_token(gateway.url, intruder_email, STRONG)
    me = call(gateway, token, "GET", "/api/auth/me").json()
    assert me["org_id"] == other["id"] and me["role"] == "org_admin"

    for path in (
        f"/api/users/{victim_user['id']}",
        f"/api/roles/{victim_role['id']}",
        f"/api/organizations/{home}",
    ):
        assert call(gateway, token, "GET", path).status_code == 404, path
        assert call(gateway, token, "PATCH", path, json={"name": "mine"}).status_code == 404, path
    for path in (f"/api/users/{victim_user['id']}", f"/api/roles/{victim_role['id']}"):
        assert call(gateway, token, "DELETE", path).status_code == 404, path
    # Deleting organisations is for super admins, whatever the id.
    assert call(gateway, token, "DELETE", f"/api/organizations/{home}").status_code == 403
    grant = call(
        gateway,
        token,
        "POST",
        f"/api/users/{victim_user['id']}/super-admin",
        json={"enabled": True},
    )
    assert grant.status_code == 403

    smuggled = {"email": f"{unique('s')}@example.com", "password": STRONG, "org_id": home}
    assert call(gateway, token, "POST", "/api/users", json=smuggled).status_code == 422
    switched = call(gateway, token, "GET", "/api/users", headers={"X-AgentWatch-Org": str(home)})
    assert switched.status_code == 403
    users = call(gateway, token, "GET", "/api/users").json()["data"]
    assert [u["id"] for u in users] == [intruder["id"]]
    assert call(gateway, token, "GET", "/api/roles").json()["data"] == []
    orgs = call(gateway, token, "GET", "/api/organizations").json()["data"]
    assert [o["id"] for o in orgs] == [other["id"]]

    # Nothing of the first organisation changed.
    assert call(gateway, root, "GET", f"/api/users/{victim_user['id']}").json() == victim_user
    assert call(gateway, root, "GET", f"/api/roles/{victim_role['id']}").json() == victim_role


def test_role_crud_and_deleting_a_role_in_use(gateway: Gateway) -> None:
    root = gateway.admin_token()
    name = unique("auditors")
    role = created(
        call(
            gateway,
            root,
            "POST",
            "/api/roles",
            json={"name": name, "permissions": ["usage:read", "audit:read", "usage:read"]},
        )
    )
    assert role["name"] == name and role["permissions"] == ["audit:read", "usage:read"]
    clash = call(gateway, root, "POST", "/api/roles", json={"name": name, "permissions": []})
    assert clash.status_code == 409
    for bad in ("audit:destroy", "orgs:admin"):
        refused = call(
            gateway, root, "POST", "/api/roles", json={"name": unique("x"), "permissions": [bad]}
        )
        assert refused.status_code == 422 and bad in refused.json()["detail"]
    extra = {"name": unique("x"), "permissions": [], "description": "no such column"}
    assert call(gateway, root, "POST", "/api/roles", json=extra).status_code == 422

    listed = call(gateway, root, "GET", "/api/roles", params={"search": name}).json()["data"]
    assert listed == [role]
    assert call(gateway, root, "GET", f"/api/roles/{role['id']}").json() == role
    patched = call(
        gateway, root, "PATCH", f"/api/roles/{role['id']}", json={"permissions": ["dlp:read"]}
    )
    assert patched.status_code == 200 and patched.json()["permissions"] == ["dlp:read"]
    bad_patch = call(
        gateway, root, "PATCH", f"/api/roles/{role['id']}", json={"permissions": ["nope"]}
    )
    assert bad_patch.status_code == 422

    holder = created(
        call(
            gateway,
            root,
            "POST",
            "/api/users",
            json={
                "email": f"{unique('holder')}@example.com",
                "password": STRONG,
                "role": "viewer",
                "role_id": role["id"],
            },
        )
    )
    token = login_token(gateway.url, holder["email"], STRONG)
    assert call(gateway, token, "GET", "/api/auth/me").json()["permissions"].count("dlp:read") == 1

    assert call(gateway, root, "DELETE", f"/api/roles/{role['id']}").status_code == 204
    assert call(gateway, root, "GET", f"/api/roles/{role['id']}").status_code == 404
    assert call(gateway, root, "GET", f"/api/users/{holder['id']}").json()["role_id"] is None
    assert "dlp:read" not in call(gateway, token, "GET", "/api/auth/me").json()["permissions"]
    trail = call(
        gateway, root, "GET", "/api/audit-logs", params={"target": f"role:{role['id']}"}
    ).json()["data"]
    assert [r["action"] for r in trail] == ["role.deleted", "role.updated", "role.created"]
    assert trail[0]["details"]["unassigned_user_ids"] == [holder["id"]]
    assert trail[1]["details"]["before"] == {"permissions": ["audit:read", "usage:read"]}


def test_a_role_editor_cannot_give_themselves_more(gateway: Gateway) -> None:
    address = f"{unique('editor')}@example.com"
    add_user(gateway.database_url, address, STRONG, role="org_admin", org=unique("roles-org"))
    admin = login_token(gateway.url, address, STRONG)
    role = created(
        call(
            gateway,
            admin,
            "POST",
            "/api/roles",
            json={"name": "role editors", "permissions": ["roles:read", "roles:write"]},
        )
    )
    editor = created(
        call(
            gateway,
            admin,
            "POST",
            "/api/users",
            json={
                "email": f"{unique('ed')}@example.com",
                "password": STRONG,
                "role": "viewer",
                "role_id": role["id"],
            },
        )
    )
    token = login_token(gateway.url, editor["email"], STRONG)
    widen = {"permissions": ["roles:read", "roles:write", "users:write"]}
    response = call(gateway, token, "PATCH", f"/api/roles/{role['id']}", json=widen)
    assert response.status_code == 403 and "users:write" in response.json()["detail"]
    stronger = {"name": "admins", "permissions": ["users:write"]}
    assert call(gateway, token, "POST", "/api/roles", json=stronger).status_code == 403
    weaker = {"name": "readers", "permissions": ["roles:read"]}
    assert call(gateway, token, "POST", "/api/roles", json=weaker).status_code == 201
