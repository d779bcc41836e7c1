"""Every role, every resource, every verb: allowed calls succeed, the rest get 403; a user of
another organisation gets 404 for every id, and cannot reach across by body, query or header.

The expectations below are written out by hand from the documented role table (docs/api.md),
not derived from `agentwatch.admin.rbac`, so a change to the grants that the table does not
also make fails here.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from agentwatch.db.models import Conversation
from agentwatch.settings import normalise_database_url
from tests.admin_support import bearer, login_token
from tests.conftest import BACKENDS
from tests.ledger_support import migrated
from tests.support import Gateway, database

CONFIG = "providers: []\nmodels: []\n"
PASSWORD = "Grid-check pw 4471!"
ROLES = ("super_admin", "org_admin", "team_admin", "member", "viewer")
EVERYONE = frozenset(ROLES)
ADMINS = frozenset({"super_admin", "org_admin"})
TEAM_ADMINS = ADMINS | {"team_admin"}
TEAM_MEMBERS = TEAM_ADMINS | {"member"}
_names = itertools.count()
POLICY = {"default_action": "log", "detectors": {"ipv4": "off"}}


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


@dataclass
class World:
    gateway: Gateway
    client: httpx.Client
    tokens: dict[str, str]
    team_a: int  # team_admin admins it, member belongs to it
    team_b: int  # nobody's team
    org_id: int

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.client.request(
            method, path, headers=bearer(self.tokens["super_admin"]), **kwargs
        )
        assert response.status_code < 300, (method, path, response.status_code, response.text)
        return response.json() if response.content else None

    # Fresh targets, made by the super admin.
    def team(self) -> int:
        return int(self.admin("POST", "/api/teams", json={"name": unique("team")})["id"])

    def user(self) -> int:
        body = {"email": f"{unique('u')}@example.com", "password": PASSWORD, "role": "viewer"}
        return int(self.admin("POST", "/api/users", json=body)["id"])

    def role(self) -> int:
        body = {"name": unique("role"), "permissions": ["usage:read"]}
        return int(self.admin("POST", "/api/roles", json=body)["id"])

    def tenant(self, team_id: int) -> int:
        body = {"name": unique("tenant"), "team_id": team_id}
        return int(self.admin("POST", "/api/tenants", json=body)["id"])

    def key(self, team_id: int) -> int:
        tenant = self.tenant(team_id)
        return int(self.admin("POST", f"/api/tenants/{tenant}/keys", json={"name": "k"})["id"])

    def conversation(self) -> int:
        """A request-log row of this organisation, written straight to the database (the
        matrix gateway has no models to call)."""
        return asyncio.run(_insert_conversation(self.gateway.database_url, self.org_id))

    def provider(self) -> tuple[int, str]:
        name = unique("provider")
        body = {"name": name, "type": "openai", "base_url": "http://127.0.0.1:9/v1"}
        return int(self.admin("POST", "/api/providers", json=body)["id"]), name

    def provider_key(self) -> tuple[int, int]:
        provider, _ = self.provider()
        body = {"name": "k", "api_key": "sk-matrix-" + "q" * 24}
        return provider, int(self.admin("POST", f"/api/providers/{provider}/keys", json=body)["id"])

    def model(self) -> int:
        _, provider = self.provider()
        body = {"name": unique("alias"), "routes": [{"provider": provider, "model": "gpt-4o"}]}
        return int(self.admin("POST", "/api/models", json=body)["id"])

    def org(self) -> int:
        return int(self.admin("POST", "/api/organizations", json={"name": unique("org")})["id"])


# A case prepares its target (as the super admin) and returns the call to make as each role.
Call = tuple[str, str, dict[str, Any] | None]


@dataclass(frozen=True)
class Case:
    name: str
    allowed: frozenset[str]
    prepare: Callable[[World], Call]


def _case(name: str, allowed: frozenset[str], prepare: Callable[[World], Call]) -> Case:
    return Case(name, allowed, prepare)


def _body(**fields: Any) -> dict[str, Any]:
    return fields


CASES = [
    # organisations
    _case("orgs list", EVERYONE, lambda w: ("GET", "/api/organizations", None)),
    _case("orgs get own", EVERYONE, lambda w: ("GET", f"/api/organizations/{w.org_id}", None)),
    _case(
        "orgs patch own",
        ADMINS,
        lambda w: ("PATCH", f"/api/organizations/{w.org_id}", _body(settings={"k": 1})),
    ),
    _case(
        "orgs patch own dlp_policy",
        ADMINS,
        lambda w: ("PATCH", f"/api/organizations/{w.org_id}", _body(dlp_policy=POLICY)),
    ),
    _case(
        "orgs create",
        frozenset({"super_admin"}),
        lambda w: ("POST", "/api/organizations", _body(name=unique("org"))),
    ),
    _case(
        "orgs delete",
        frozenset({"super_admin"}),
        lambda w: ("DELETE", f"/api/organizations/{w.org()}", None),
    ),
    # teams and memberships
    _case("teams list", EVERYONE, lambda w: ("GET", "/api/teams", None)),
    _case("teams get", EVERYONE, lambda w: ("GET", f"/api/teams/{w.team_a}", None)),
    _case("teams create", ADMINS, lambda w: ("POST", "/api/teams", _body(name=unique("team")))),
    _case(
        "teams patch",
        ADMINS,
        lambda w: ("PATCH", f"/api/teams/{w.team()}", _body(max_budget_usd=5.0)),
    ),
    _case(
        "teams patch dlp_policy",
        ADMINS,
        lambda w: ("PATCH", f"/api/teams/{w.team()}", _body(dlp_policy=POLICY)),
    ),
    _case("teams delete", ADMINS, lambda w: ("DELETE", f"/api/teams/{w.team()}", None)),
    _case("members list", EVERYONE, lambda w: ("GET", f"/api/teams/{w.team_a}/members", None)),
    _case(
        "members add (own team)",
        TEAM_ADMINS,
        lambda w: ("PUT", f"/api/teams/{w.team_a}/members/{w.user()}", _body(role="member")),
    ),
    _case(
        "members add (other team)",
        ADMINS,
        lambda w: ("PUT", f"/api/teams/{w.team_b}/members/{w.user()}", _body(role="member")),
    ),
    _case("members remove (own team)", TEAM_ADMINS, lambda w: _member_removal(w, w.team_a)),
    _case("members remove (other team)", ADMINS, lambda w: _member_removal(w, w.team_b)),
    # users
    _case("users list", TEAM_MEMBERS, lambda w: ("GET", "/api/users", None)),
    _case("users get", TEAM_MEMBERS, lambda w: ("GET", f"/api/users/{w.user()}", None)),
    _case(
        "users create",
        ADMINS,
        lambda w: (
            "POST",
            "/api/users",
            _body(email=f"{unique('new')}@example.com", password=PASSWORD, role="viewer"),
        ),
    ),
    _case("users patch", ADMINS, lambda w: ("PATCH", f"/api/users/{w.user()}", _body(name="N"))),
    _case("users delete", ADMINS, lambda w: ("DELETE", f"/api/users/{w.user()}", None)),
    # custom org roles
    _case("roles list", TEAM_ADMINS, lambda w: ("GET", "/api/roles", None)),
    _case("roles get", TEAM_ADMINS, lambda w: ("GET", f"/api/roles/{w.role()}", None)),
    _case(
        "roles create",
        ADMINS,
        lambda w: ("POST", "/api/roles", _body(name=unique("role"), permissions=["usage:read"])),
    ),
    _case(
        "roles patch",
        ADMINS,
        lambda w: ("PATCH", f"/api/roles/{w.role()}", _body(permissions=["models:read"])),
    ),
    _case("roles delete", ADMINS, lambda w: ("DELETE", f"/api/roles/{w.role()}", None)),
    # tenants
    _case("tenants list", EVERYONE, lambda w: ("GET", "/api/tenants", None)),
    _case("tenants get", EVERYONE, lambda w: ("GET", f"/api/tenants/{w.tenant(w.team_a)}", None)),
    _case(
        "tenants create (own team)",
        TEAM_ADMINS,
        lambda w: ("POST", "/api/tenants", _body(name=unique("t"), team_id=w.team_a)),
    ),
    _case(
        "tenants create (other team)",
        ADMINS,
        lambda w: ("POST", "/api/tenants", _body(name=unique("t"), team_id=w.team_b)),
    ),
    _case(
        "tenants patch (own team)",
        TEAM_ADMINS,
        lambda w: ("PATCH", f"/api/tenants/{w.tenant(w.team_a)}", _body(is_active=False)),
    ),
    # Team admins manage their teams' tenants, but not the DLP policy applied to them.
    _case(
        "tenants create with dlp_policy (own team)",
        ADMINS,
        lambda w: (
            "POST",
            "/api/tenants",
            _body(name=unique("t"), team_id=w.team_a, dlp_policy=POLICY),
        ),
    ),
    _case(
        "tenants patch dlp_policy (own team)",
        ADMINS,
        lambda w: ("PATCH", f"/api/tenants/{w.tenant(w.team_a)}", _body(dlp_policy=POLICY)),
    ),
    _case(
        "tenants delete (own team)",
        TEAM_ADMINS,
        lambda w: ("DELETE", f"/api/tenants/{w.tenant(w.team_a)}", None),
    ),
    _case(
        "tenants delete (other team)",
        ADMINS,
        lambda w: ("DELETE", f"/api/tenants/{w.tenant(w.team_b)}", None),
    ),
    # tenant API keys
    _case(
        "keys list",
        EVERYONE,
        lambda w: ("GET", f"/api/tenants/{w.tenant(w.team_a)}/keys", None),
    ),
    _case("keys get", EVERYONE, lambda w: ("GET", f"/api/keys/{w.key(w.team_a)}", None)),
    _case(
        "keys create (own team)",
        TEAM_MEMBERS,
        lambda w: ("POST", f"/api/tenants/{w.tenant(w.team_a)}/keys", _body(name="k")),
    ),
    _case(
        "keys create (other team)",
        ADMINS,
        lambda w: ("POST", f"/api/tenants/{w.tenant(w.team_b)}/keys", _body(name="k")),
    ),
    _case(
        "keys patch (own team)",
        TEAM_MEMBERS,
        lambda w: ("PATCH", f"/api/keys/{w.key(w.team_a)}", _body(rpm_limit=10)),
    ),
    _case(
        "keys revoke (own team)",
        TEAM_MEMBERS,
        lambda w: ("POST", f"/api/keys/{w.key(w.team_a)}/revoke", None),
    ),
    _case(
        "keys revoke (other team)",
        ADMINS,
        lambda w: ("POST", f"/api/keys/{w.key(w.team_b)}/revoke", None),
    ),
    _case(
        "keys rotate (own team)",
        TEAM_MEMBERS,
        lambda w: ("POST", f"/api/keys/{w.key(w.team_a)}/rotate", _body(grace_seconds=0)),
    ),
    # providers and their keys
    _case("providers list", EVERYONE, lambda w: ("GET", "/api/providers", None)),
    _case("providers get", EVERYONE, lambda w: ("GET", f"/api/providers/{w.provider()[0]}", None)),
    _case(
        "providers create",
        ADMINS,
        lambda w: (
            "POST",
            "/api/providers",
            _body(name=unique("p"), type="openai", base_url="http://127.0.0.1:9/v1"),
        ),
    ),
    _case(
        "providers patch",
        ADMINS,
        lambda w: ("PATCH", f"/api/providers/{w.provider()[0]}", _body(timeout_seconds=30)),
    ),
    _case(
        "providers delete", ADMINS, lambda w: ("DELETE", f"/api/providers/{w.provider()[0]}", None)
    ),
    _case(
        "provider keys list",
        EVERYONE,
        lambda w: ("GET", f"/api/providers/{w.provider()[0]}/keys", None),
    ),
    _case(
        "provider keys add",
        ADMINS,
        lambda w: (
            "POST",
            f"/api/providers/{w.provider()[0]}/keys",
            _body(name="k2", api_key="sk-other-" + "z" * 24),
        ),
    ),
    _case("provider keys delete", ADMINS, lambda w: _provider_key_call(w, "DELETE")),
    # model aliases
    _case("models list", EVERYONE, lambda w: ("GET", "/api/models", None)),
    _case("models get", EVERYONE, lambda w: ("GET", f"/api/models/{w.model()}", None)),
    _case("models create", ADMINS, lambda w: _model_create(w)),
    _case(
        "models patch", ADMINS, lambda w: ("PATCH", f"/api/models/{w.model()}", _body(retries=1))
    ),
    _case("models delete", ADMINS, lambda w: ("DELETE", f"/api/models/{w.model()}", None)),
    # ledger and audit trail
    _case("usage read", EVERYONE, lambda w: ("GET", "/api/usage/records", None)),
    _case("usage summary", EVERYONE, lambda w: ("GET", "/api/usage/summary", None)),
    _case("audit read", ADMINS, lambda w: ("GET", "/api/audit-logs", None)),
    # DLP
    _case("dlp detectors list", EVERYONE, lambda w: ("GET", "/api/dlp/detectors", None)),
    # request log (dlp:read)
    _case("conversations list", TEAM_ADMINS, lambda w: ("GET", "/api/conversations", None)),
    _case(
        "conversations get",
        TEAM_ADMINS,
        lambda w: ("GET", f"/api/conversations/{w.conversation()}", None),
    ),
]


async def _insert_conversation(url: str, org_id: int) -> int:
    async with migrated(normalise_database_url(url)) as sessions, sessions.begin() as session:
        row = Conversation(org_id=org_id, request_id=unique("req"), model="m", risk_score=1.0)
        session.add(row)
        await session.flush()
        return row.id


def _member_removal(world: World, team_id: int) -> Call:
    user = world.user()
    world.admin("PUT", f"/api/teams/{team_id}/members/{user}", json={"role": "member"})
    return ("DELETE", f"/api/teams/{team_id}/members/{user}", None)


def _provider_key_call(world: World, method: str) -> Call:
    provider, key = world.provider_key()
    return (method, f"/api/providers/{provider}/keys/{key}", None)


def _model_create(world: World) -> Call:
    _, provider = world.provider()
    routes = [{"provider": provider, "model": "gpt-4o"}]
    return ("POST", "/api/models", _body(name=unique("alias"), routes=routes))


@pytest.fixture(scope="module", params=BACKENDS)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp(f"rbac-{request.param}")
    with database(request.param, workdir) as url:
        gateway = Gateway(workdir=workdir, database_url=url, config=CONFIG)
        gateway.start()
        try:
            with httpx.Client(base_url=gateway.url, timeout=30) as client:
                yield _build_world(gateway, client)
        finally:
            gateway.stop()


def _build_world(gateway: Gateway, client: httpx.Client) -> World:
    world = World(gateway, client, {"super_admin": gateway.admin_token()}, 0, 0, 0)
    me = world.admin("GET", "/api/auth/me")
    world.org_id = int(me["org_id"])
    world.team_a, world.team_b = world.team(), world.team()
    for role, team_role in (
        ("org_admin", None),
        ("team_admin", "team_admin"),
        ("member", "member"),
        ("viewer", None),
    ):
        email = f"{role}@matrix.example.com"
        created = world.admin(
            "POST", "/api/users", json={"email": email, "password": PASSWORD, "role": role}
        )
        if team_role is not None:
            world.admin(
                "PUT",
                f"/api/teams/{world.team_a}/members/{created['id']}",
                json={"role": team_role},
            )
        world.tokens[role] = login_token(gateway.url, email, PASSWORD)
    return world


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_role_gets_exactly_what_the_table_grants(world: World, case: Case) -> None:
    outcomes: dict[str, int] = {}
    for role in ROLES:
        method, path, body = case.prepare(world)
        response = world.client.request(method, path, json=body, headers=bearer(world.tokens[role]))
        outcomes[role] = response.status_code
        if role in case.allowed:
            assert response.status_code < 300, (role, method, path, response.text)
        else:
            assert response.status_code == 403, (role, method, path, response.text)
    assert set(outcomes) == set(ROLES)


def test_every_api_operation_is_in_the_matrix(world: World) -> None:
    """A new endpoint without a row here fails: the matrix stays complete."""
    spec = world.client.get("/api/openapi.json").json()
    covered = set()
    for case in CASES:
        method, path, _ = case.prepare(world)
        covered.add((method, _template(path)))
    exempt = {("POST", "/api/auth/login"), ("GET", "/api/auth/me"), ("POST", "/api/auth/logout")}
    exempt |= {("POST", "/api/auth/logout-all"), ("POST", "/api/auth/password")}
    exempt |= {("POST", "/api/users/{}/super-admin")}  # super admins only: test_admin_users
    exempt |= {("PATCH", "/api/providers/{}/keys/{}")}  # same grant as delete, covered there
    operations = {
        (method.upper(), _template(path))
        for path, item in spec["paths"].items()
        if path.startswith("/api/")
        for method in item
    }
    missing = operations - covered - exempt
    assert not missing, f"operations without a row in the RBAC matrix: {sorted(missing)}"


def _template(path: str) -> str:
    return "/".join(
        "{}" if part.isdigit() or part.startswith("{") else part for part in path.split("/")
    )


def test_another_organisation_cannot_reach_anything_by_id_body_query_or_header(
    world: World,
) -> None:
    other_org = world.org()
    email = f"{unique('outsider')}@example.com"
    _create_in_org(world, other_org, email)
    outsider = bearer(login_token(world.gateway.url, email, PASSWORD))

    provider, provider_key = world.provider_key()
    tenant = world.tenant(world.team_a)
    targets = {
        "teams": world.team_a,
        "users": world.user(),
        "roles": world.role(),
        "tenants": tenant,
        "keys": world.key(world.team_a),
        "providers": provider,
        "models": world.model(),
        "organizations": world.org_id,
    }
    for resource, target in targets.items():
        path = f"/api/{resource}/{target}"
        for method, body in (("GET", None), ("PATCH", {"name": "taken-over"}), ("DELETE", None)):
            if (resource, method) == ("keys", "DELETE"):
                continue  # keys are revoked, not deleted: checked below
            response = world.client.request(method, path, json=body, headers=outsider)
            expected = {403, 404} if (resource, method) == ("organizations", "DELETE") else {404}
            assert response.status_code in expected, (method, path, response.text)
    for path in (
        f"/api/teams/{world.team_a}/members",
        f"/api/tenants/{tenant}/keys",
        f"/api/providers/{provider}/keys",
    ):
        assert world.client.get(path, headers=outsider).status_code == 404, path
    conversation = f"/api/conversations/{world.conversation()}"
    assert world.client.get(conversation, headers=outsider).status_code == 404
    listed = world.client.get("/api/conversations", headers=outsider)
    assert listed.status_code == 200 and listed.json()["data"] == [], listed.text
    nested = f"/api/providers/{provider}/keys/{provider_key}"
    assert world.client.delete(nested, headers=outsider).status_code == 404
    assert (
        world.client.post(f"/api/keys/{targets['keys']}/revoke", headers=outsider).status_code
        == 404
    )

    # Lists show only the outsider's organisation, whatever the query says.
    for resource in ("teams", "users", "tenants", "providers", "models", "roles"):
        listed = world.client.get(
            f"/api/{resource}", params={"org_id": world.org_id}, headers=outsider
        )
        assert listed.status_code == 200, listed.text
        ids = {row["id"] for row in listed.json()["data"]}
        assert targets.get(resource) not in ids, resource
    # A body naming an organisation is refused, not obeyed.
    for path, body in (
        ("/api/teams", {"name": unique("t"), "org_id": world.org_id}),
        ("/api/tenants", {"name": unique("t"), "org_id": world.org_id}),
        ("/api/roles", {"name": unique("r"), "permissions": [], "org_id": world.org_id}),
    ):
        assert world.client.post(path, json=body, headers=outsider).status_code == 422, path
    # Only super admins may switch organisation.
    switched = world.client.get(
        "/api/teams", headers={**outsider, "x-agentwatch-org": str(world.org_id)}
    )
    assert switched.status_code == 403
    # Org A's data is unchanged by all of the above.
    assert world.admin("GET", f"/api/teams/{world.team_a}")["id"] == world.team_a
    assert world.admin("GET", f"/api/tenants/{tenant}")["name"] != "taken-over"


def _create_in_org(world: World, org_id: int, email: str) -> None:
    response = world.client.post(
        "/api/users",
        json={"email": email, "password": PASSWORD, "role": "org_admin"},
        headers={**bearer(world.tokens["super_admin"]), "x-agentwatch-org": str(org_id)},
    )
    assert response.status_code == 201, response.text
