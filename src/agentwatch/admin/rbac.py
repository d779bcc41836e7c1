"""Who may do what: built-in roles, custom org roles, and the one function that decides.

`can(principal, action, resource)` is pure: the admin API builds a `Principal` from the token and
the database, and a `Resource` from the row it is about to touch, then asks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum


class Role(StrEnum):
    SUPER_ADMIN = "super_admin"  # the operator: every organisation (through X-AgentWatch-Org)
    ORG_ADMIN = "org_admin"
    TEAM_ADMIN = "team_admin"
    MEMBER = "member"
    VIEWER = "viewer"


class Scope(Enum):
    """How far a granted permission reaches."""

    ORG = "org"  # anything in the organisation
    OWN_TEAMS = "own_teams"  # resources of teams the user belongs to
    ADMINED_TEAMS = "admined_teams"  # resources of teams the user is a team admin of


PERMISSIONS: tuple[str, ...] = (
    "orgs:read",
    "orgs:write",
    "orgs:admin",  # create and delete organisations: super admins only
    "teams:read",
    "teams:write",
    "members:write",
    "users:read",
    "users:write",
    "roles:read",
    "roles:write",
    "tenants:read",
    "tenants:write",
    "keys:read",
    "keys:write",
    "providers:read",
    "providers:write",
    "models:read",
    "models:write",
    "usage:read",
    "audit:read",
    "dlp:read",
    "dlp:write",  # set, change or clear a DLP policy (organisation, team or tenant)
    "detectors:read",  # the built-in DLP detector list: product facts, no organisation data
    "billing:read",
    "billing:write",
)
# Every signed-in user may see and manage their own account (profile, password, logout).
SELF_PERMISSIONS = frozenset({"auth:self"})
# Permissions a custom org role may name (granting orgs:admin is not an org's to give).
CUSTOM_ROLE_PERMISSIONS = frozenset(PERMISSIONS) - {"orgs:admin"}

_READS = (
    "orgs:read",
    "teams:read",
    "tenants:read",
    "keys:read",
    "providers:read",
    "models:read",
    "usage:read",
    "detectors:read",
)

ROLE_GRANTS: Mapping[Role, Mapping[str, Scope]] = {
    Role.ORG_ADMIN: {p: Scope.ORG for p in CUSTOM_ROLE_PERMISSIONS},
    Role.TEAM_ADMIN: {
        **{p: Scope.ORG for p in (*_READS, "users:read", "roles:read", "dlp:read")},
        "members:write": Scope.ADMINED_TEAMS,
        "tenants:write": Scope.ADMINED_TEAMS,
        "keys:write": Scope.ADMINED_TEAMS,
    },
    Role.MEMBER: {
        **{p: Scope.ORG for p in (*_READS, "users:read")},
        "keys:write": Scope.OWN_TEAMS,
    },
    Role.VIEWER: {p: Scope.ORG for p in _READS},
}


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated admin user acting in one organisation."""

    user_id: int
    email: str
    org_id: int  # the organisation this request acts in
    home_org_id: int  # the user's own organisation
    role: Role
    is_super_admin: bool = False
    grants: Mapping[str, Scope] = field(default_factory=dict)
    team_ids: frozenset[int] = frozenset()
    admin_team_ids: frozenset[int] = frozenset()

    def may_ever(self, action: str) -> bool:
        """Whether some resource in the acting organisation could allow `action`."""
        return self.is_super_admin or action in self.grants or action in SELF_PERMISSIONS


@dataclass(frozen=True, slots=True)
class Resource:
    org_id: int
    team_id: int | None = None


def grants_for(role: Role, custom_permissions: Iterable[str] = ()) -> dict[str, Scope]:
    """A role's grants, widened by a custom org role's permissions (which reach the org)."""
    grants = dict(ROLE_GRANTS.get(role, {}))
    for permission in custom_permissions:
        if permission in CUSTOM_ROLE_PERMISSIONS:
            grants[permission] = Scope.ORG
    return grants


def can(principal: Principal, action: str, resource: Resource) -> bool:
    if resource.org_id != principal.org_id:
        return False  # another organisation is only reachable by switching the acting org
    if principal.is_super_admin:
        return True
    scope = principal.grants.get(action)
    if scope is None:
        return False
    if scope is Scope.ORG:
        return True
    if resource.team_id is None:
        return False
    if scope is Scope.OWN_TEAMS:
        return resource.team_id in principal.team_ids
    return resource.team_id in principal.admin_team_ids
