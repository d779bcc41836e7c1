"""DLP in the admin API: `dlp_policy` on organisations, teams and tenants (set, clear, refused
values, who may change it, other organisations), and `GET /api/dlp/detectors`."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from agentwatch.db.engine import create_engine, session_factory
from agentwatch.db.models import Organization, Team, Tenant
from agentwatch.dlp.detectors import BUILTIN
from agentwatch.settings import normalise_database_url
from tests.admin_support import add_user, bearer, login_token
from tests.conftest import BACKENDS
from tests.support import Gateway, gateway_on

CONFIG = "providers: []\nmodels: []\n"
STRONG = "Cobalt-Heron-Lantern-73"
POLICY = {
    "default_action": "log",
    "categories": {"secret": "block", "pii": "redact"},
    "detectors": {"ipv4": "off", "email": "log"},
    "min_confidence": 0.6,
}


@pytest.fixture(scope="module", params=BACKENDS)
def gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    with gateway_on(
        request.param, tmp_path_factory.mktemp(f"dlp-{request.param}"), CONFIG
    ) as gateway:
        yield gateway


def call(gateway: Gateway, token: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = bearer(token, **kwargs.pop("headers", {}))
    return httpx.request(method, f"{gateway.url}{path}", headers=headers, **kwargs)


def ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def new_user(gateway: Gateway, role: str, **options: Any) -> str:
    """A user (in the default organisation unless `org` names another): their token."""
    email = f"{unique(role.replace('_', '-'))}@example.com"
    add_user(gateway.database_url, email, STRONG, role=role, **options)
    return login_token(gateway.url, email, STRONG)


def stored_policies(gateway: Gateway, model: Any, row_id: int) -> tuple[object, bool]:
    """The row's `dlp_policy` as read back, and whether the column is SQL NULL (not JSON null)."""

    async def read() -> tuple[object, bool]:
        engine = create_engine(normalise_database_url(gateway.database_url))
        try:
            async with session_factory(engine)() as session:
                value = await session.scalar(select(model.dlp_policy).where(model.id == row_id))
                null = await session.scalar(
                    select(model.id).where(model.id == row_id, model.dlp_policy.is_(None))
                )
                return value, null is not None
        finally:
            await engine.dispose()

    return asyncio.run(read())


def audit_trail(gateway: Gateway, token: str, target: str, **headers: str) -> list[dict[str, Any]]:
    trail = ok(call(gateway, token, "GET", "/api/audit-logs", params={"target": target}, **headers))
    return [row for row in trail["data"] if row["action"] != "org.accessed"]


@pytest.mark.parametrize(
    ("resource", "model"), [("teams", Team), ("tenants", Tenant)], ids=["teams", "tenants"]
)
def test_policy_set_changed_and_cleared_on_teams_and_tenants(
    gateway: Gateway, resource: str, model: Any
) -> None:
    root = gateway.admin_token()
    path = f"/api/{resource}"
    row = ok(
        call(gateway, root, "POST", path, json={"name": unique("r"), "dlp_policy": POLICY}), 201
    )
    assert row["dlp_policy"] == POLICY  # unset fields (scan_responses) are not stored
    assert ok(call(gateway, root, "GET", f"{path}/{row['id']}"))["dlp_policy"] == POLICY
    assert stored_policies(gateway, model, row["id"]) == (POLICY, False)

    # A PATCH without the field leaves the policy alone.
    renamed = ok(call(gateway, root, "PATCH", f"{path}/{row['id']}", json={"name": unique("n")}))
    assert renamed["dlp_policy"] == POLICY
    narrower = {"detectors": {"credit_card": "block"}, "scan_responses": True}
    changed = ok(call(gateway, root, "PATCH", f"{path}/{row['id']}", json={"dlp_policy": narrower}))
    assert changed["dlp_policy"] == {**narrower, "categories": {}}
    cleared = ok(call(gateway, root, "PATCH", f"{path}/{row['id']}", json={"dlp_policy": None}))
    assert cleared["dlp_policy"] is None
    assert stored_policies(gateway, model, row["id"]) == (None, True)  # SQL NULL: inherit
    plain = ok(call(gateway, root, "POST", path, json={"name": unique("plain")}), 201)
    assert plain["dlp_policy"] is None and stored_policies(gateway, model, plain["id"])[1]

    label = resource.rstrip("s")
    trail = audit_trail(gateway, root, f"{label}:{row['id']}")
    assert [r["action"] for r in trail] == [f"{label}.{a}" for a in ("updated",) * 3 + ("created",)]
    assert trail[0]["details"]["before"] == {"dlp_policy": {**narrower, "categories": {}}}
    assert trail[0]["details"]["after"] == {"dlp_policy": None}
    assert trail[1]["details"]["before"] == {"dlp_policy": POLICY}
    assert "dlp_policy" not in trail[2]["details"]["after"]  # the rename only
    assert trail[3]["details"]["after"]["dlp_policy"] == POLICY


def test_policy_set_and_cleared_on_organisations(gateway: Gateway) -> None:
    root = gateway.admin_token()
    org = ok(
        call(
            gateway,
            root,
            "POST",
            "/api/organizations",
            json={"name": unique("org"), "dlp_policy": POLICY},
        ),
        201,
    )
    assert org["dlp_policy"] == POLICY
    assert stored_policies(gateway, Organization, org["id"]) == (POLICY, False)

    path = f"/api/organizations/{org['id']}"
    update = {"dlp_policy": {"default_action": "block"}, "settings": {"k": 1}}
    patched = ok(call(gateway, root, "PATCH", path, json=update))
    assert patched["dlp_policy"] == {"default_action": "block", "categories": {}, "detectors": {}}
    assert patched["settings"] == {"k": 1}
    assert ok(call(gateway, root, "PATCH", path, json={"dlp_policy": None}))["dlp_policy"] is None
    assert stored_policies(gateway, Organization, org["id"]) == (None, True)

    as_org = {"headers": {"X-AgentWatch-Org": str(org["id"])}}
    trail = audit_trail(gateway, root, f"org:{org['id']}", **as_org)
    assert [r["action"] for r in trail] == ["org.updated", "org.updated", "org.created"]
    assert trail[0]["details"]["after"] == {"dlp_policy": None}
    assert trail[1]["details"]["after"] == {
        "settings": {"k": 1},
        "dlp_policy": {"default_action": "block", "categories": {}, "detectors": {}},
    }
    assert trail[2]["details"]["after"]["dlp_policy"] == POLICY


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"detectors": {"credit_card": "block", "no_such_detector": "block"}}, "no_such_detector"),
        ({"default_action": "quarantine"}, "'block', 'redact', 'log' or 'off'"),
        ({"detectors": {"email": "shred"}}, "'block', 'redact', 'log' or 'off'"),
        ({"categories": {"medical": "block"}}, "'secret', 'pii', 'financial'"),
        ({"categories": {"pii": "maybe"}}, "'block', 'redact', 'log' or 'off'"),
        ({"min_confidence": 1.5}, "less than or equal to 1"),
        ({"min_confidence": -0.1}, "greater than or equal to 0"),
        ({"scan_responses": "sometimes"}, "valid boolean"),
        ({"action": "block"}, "Extra inputs are not permitted"),
        ({"detectors": ["email"]}, "valid dictionary"),
        ("block", "valid dictionary"),
    ],
)
def test_bad_policies_are_422_naming_the_problem(
    gateway: Gateway, policy: object, message: str
) -> None:
    root = gateway.admin_token()
    team = ok(call(gateway, root, "POST", "/api/teams", json={"name": unique("t")}), 201)
    tenant = ok(call(gateway, root, "POST", "/api/tenants", json={"name": unique("t")}), 201)
    org_id = ok(call(gateway, root, "GET", "/api/auth/me"))["org_id"]
    for method, path in (
        ("POST", "/api/teams"),
        ("POST", "/api/tenants"),
        ("POST", "/api/organizations"),
        ("PATCH", f"/api/teams/{team['id']}"),
        ("PATCH", f"/api/tenants/{tenant['id']}"),
        ("PATCH", f"/api/organizations/{org_id}"),
    ):
        body = {"dlp_policy": policy} | ({"name": unique("x")} if method == "POST" else {})
        refused = call(gateway, root, method, path, json=body)
        assert refused.status_code == 422, (method, path, refused.text)
        assert message in refused.text, (method, path, refused.text)
    # Nothing was stored on the way.
    assert ok(call(gateway, root, "GET", f"/api/teams/{team['id']}"))["dlp_policy"] is None
    assert ok(call(gateway, root, "GET", f"/api/tenants/{tenant['id']}"))["dlp_policy"] is None
    assert ok(call(gateway, root, "GET", f"/api/organizations/{org_id}"))["dlp_policy"] is None


def test_changing_a_policy_needs_dlp_write_beyond_the_rows_own_permission(
    gateway: Gateway,
) -> None:
    root = gateway.admin_token()
    team = ok(call(gateway, root, "POST", "/api/teams", json={"name": unique("team")}), 201)
    team_admin = new_user(gateway, "team_admin", teams={team["id"]: "team_admin"})

    # The team admin manages their team's tenants, but not the DLP applied to them.
    body = {"name": unique("app"), "team_id": team["id"]}
    refused = call(gateway, team_admin, "POST", "/api/tenants", json={**body, "dlp_policy": POLICY})
    assert refused.status_code == 403 and "dlp:write" in refused.json()["detail"]
    tenant = ok(call(gateway, team_admin, "POST", "/api/tenants", json=body), 201)
    path = f"/api/tenants/{tenant['id']}"
    ok(call(gateway, root, "PATCH", path, json={"dlp_policy": POLICY}))
    for weaker in ({"default_action": "off"}, None):
        attempt = call(gateway, team_admin, "PATCH", path, json={"dlp_policy": weaker})
        assert attempt.status_code == 403, attempt.text
    # Sending the stored policy back with other changes (a form saving every field) is fine.
    echoed = call(
        gateway, team_admin, "PATCH", path, json={"is_active": False, "dlp_policy": POLICY}
    )
    assert echoed.status_code == 200, echoed.text
    assert echoed.json()["dlp_policy"] == POLICY and echoed.json()["is_active"] is False

    # A custom role with orgs:write but not dlp:write edits the organisation, not its policy.
    role_body = {"name": unique("r"), "permissions": ["orgs:write"]}
    role = ok(call(gateway, root, "POST", "/api/roles", json=role_body), 201)
    email = f"{unique('editor')}@example.com"
    user = ok(
        call(gateway, root, "POST", "/api/users", json={"email": email, "password": STRONG}), 201
    )
    ok(call(gateway, root, "PATCH", f"/api/users/{user['id']}", json={"role_id": role["id"]}))
    editor = login_token(gateway.url, email, STRONG)
    org_path = f"/api/organizations/{user_org(gateway, root)}"
    assert call(gateway, editor, "PATCH", org_path, json={"settings": {"a": 1}}).status_code == 200
    policy = {"dlp_policy": {"default_action": "off"}}
    assert call(gateway, editor, "PATCH", org_path, json=policy).status_code == 403
    assert ok(call(gateway, root, "GET", org_path))["dlp_policy"] is None


def user_org(gateway: Gateway, token: str) -> int:
    return int(ok(call(gateway, token, "GET", "/api/auth/me"))["org_id"])


def test_another_organisations_rows_are_404_with_or_without_a_policy(gateway: Gateway) -> None:
    root = gateway.admin_token()
    home = user_org(gateway, root)
    team = ok(call(gateway, root, "POST", "/api/teams", json={"name": unique("t")}), 201)
    tenant = ok(call(gateway, root, "POST", "/api/tenants", json={"name": unique("t")}), 201)
    outsider = new_user(gateway, "org_admin", org=unique("elsewhere"))

    for path in (f"/api/teams/{team['id']}", f"/api/tenants/{tenant['id']}"):
        for body in ({"dlp_policy": {"default_action": "off"}}, {"dlp_policy": None}):
            refused = call(gateway, outsider, "PATCH", path, json=body)
            assert refused.status_code == 404, (path, refused.text)
        assert call(gateway, outsider, "GET", path).status_code == 404
    org_path = f"/api/organizations/{home}"
    refused = call(gateway, outsider, "PATCH", org_path, json={"dlp_policy": POLICY})
    assert refused.status_code == 404
    # The outsider's own organisation takes a policy; the home one is untouched.
    own = f"/api/organizations/{user_org(gateway, outsider)}"
    assert ok(call(gateway, outsider, "PATCH", own, json={"dlp_policy": POLICY}))["dlp_policy"]
    for path in (org_path, f"/api/teams/{team['id']}", f"/api/tenants/{tenant['id']}"):
        assert ok(call(gateway, root, "GET", path))["dlp_policy"] is None, path


def test_detectors_are_listed_for_every_signed_in_user(gateway: Gateway) -> None:
    viewer = new_user(gateway, "viewer")
    listed = ok(call(gateway, viewer, "GET", "/api/dlp/detectors"))
    assert listed["next_cursor"] is None
    rows = {row["id"]: row for row in listed["data"]}
    assert list(rows) == [d.id for d in BUILTIN] and len(rows) >= 49
    for detector in BUILTIN:
        assert rows[detector.id] == {
            "id": detector.id,
            "category": detector.category.value,
            "severity": detector.severity.name.lower(),
            "default_action": detector.default_action,
            "validator_name": detector.validator_name or None,
            "description": None,
        }
    assert rows["credit_card"]["severity"] == "high"
    assert rows["credit_card"]["category"] == "financial"
    assert "Luhn" in rows["credit_card"]["validator_name"]
    assert rows["openai_api_key"]["severity"] == "critical"
    assert rows["openai_api_key"]["default_action"] == "block"
    assert rows["private_key"]["validator_name"] is None
    assert {row["category"] for row in rows.values()} == {
        "secret",
        "pii",
        "financial",
        "network",
        "injection",
    }
    for headers in ({}, bearer("not-a-token")):
        anonymous = httpx.get(f"{gateway.url}/api/dlp/detectors", headers=headers)
        assert anonymous.status_code == 401
