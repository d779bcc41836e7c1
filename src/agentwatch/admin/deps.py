"""FastAPI dependencies of the admin API: the session, the authenticated principal, permissions.

Every route under `/api` declares what it needs with `require("<permission>")` (or `public()`
for the few that run before authentication); a test fails on a route that declares neither.
The organisation a request acts in comes from the token, or for a super admin from an explicit
`X-AgentWatch-Org` header (audited), never from the body, query or path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from agentwatch.admin.audit import AuditEvent, append_audit
from agentwatch.admin.rbac import Principal, Resource, Role, can, grants_for
from agentwatch.admin.tokens import InvalidToken, TokenClaims, read_access_token
from agentwatch.db.models import Organization, OrgRole, RevokedToken, TeamMembership, User
from agentwatch.state import AppState

ORG_HEADER = "x-agentwatch-org"
PERMISSION_ATTRIBUTE = "agentwatch_permission"
_bearer = HTTPBearer(auto_error=False)
_MAX_ID = 2**63 - 1


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.agentwatch
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    async with state.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


@dataclass(frozen=True, slots=True)
class ClientInfo:
    ip: str | None
    user_agent: str | None


def client_info(request: Request) -> ClientInfo:
    agent = request.headers.get("user-agent")
    return ClientInfo(request.client.host if request.client else None, agent)


@dataclass(slots=True)
class AdminContext:
    """One authenticated admin request: who, in which organisation, with which session."""

    state: AppState
    session: AsyncSession
    principal: Principal
    client: ClientInfo

    @property
    def org_id(self) -> int:
        return self.principal.org_id

    def allowed(self, action: str, team_id: int | None = None) -> bool:
        return can(self.principal, action, Resource(self.org_id, team_id))

    def authorize(self, action: str, team_id: int | None = None) -> None:
        if not self.allowed(action, team_id):
            raise HTTPException(403, f"your role does not allow {action} here")

    async def audit(
        self,
        action: str,
        target: str | None,
        *,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Append to the organisation's audit chain inside this request's transaction."""
        summary: dict[str, Any] = dict(details or {})
        if before is not None:
            summary["before"] = dict(before)
        if after is not None:
            summary["after"] = dict(after)
        if self.principal.org_id != self.principal.home_org_id:
            summary["acting_from_org"] = self.principal.home_org_id
        await append_audit(
            self.session,
            AuditEvent(
                org_id=self.org_id,
                actor=self.principal.email,
                actor_id=self.principal.user_id,
                action=action,
                target=target,
                details=summary,
                ip=self.client.ip,
                user_agent=self.client.user_agent,
            ),
        )


def bearer_claims(
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> TokenClaims:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("missing bearer token")
    try:
        return read_access_token(credentials.credentials, state.settings.jwt_secret)
    except InvalidToken as exc:
        raise _unauthorized(f"invalid token: {exc}") from exc


ClaimsDep = Annotated[TokenClaims, Depends(bearer_claims)]


async def admin_context(
    request: Request, state: StateDep, session: SessionDep, claims: ClaimsDep
) -> AdminContext:
    user = await session.get(User, claims.user_id)
    if user is None or not user.is_active or user.org_id != claims.org_id:
        raise _unauthorized("the token's user no longer exists or is disabled")
    if (
        user.tokens_valid_after is not None
        and claims.issued_at < user.tokens_valid_after.timestamp()
    ):
        raise _unauthorized("the token was revoked")
    if await session.get(RevokedToken, claims.token_id) is not None:
        raise _unauthorized("the token was revoked")
    principal = await _principal(session, user)
    client = client_info(request)
    requested = request.headers.get(ORG_HEADER)
    if requested is not None:
        principal = await _switch_org(session, principal, requested)
        if principal.org_id != principal.home_org_id:
            context = AdminContext(state, session, principal, client)
            await context.audit(
                "org.accessed", f"org:{principal.org_id}", details={"request": _request(request)}
            )
            await session.commit()
    return AdminContext(state, session, principal, client)


async def _principal(session: AsyncSession, user: User) -> Principal:
    try:
        role = Role(user.role)
    except ValueError:
        role = Role.VIEWER  # an unknown stored role grants the least, never more
    custom: list[Any] = []
    if user.role_id is not None:
        stored = await session.scalar(
            select(OrgRole.permissions).where(
                OrgRole.id == user.role_id, OrgRole.org_id == user.org_id
            )
        )
        custom = [p for p in stored or [] if isinstance(p, str)]
    memberships = (
        await session.execute(
            select(TeamMembership.team_id, TeamMembership.role).where(
                TeamMembership.user_id == user.id
            )
        )
    ).all()
    return Principal(
        user_id=user.id,
        email=user.email,
        org_id=user.org_id,
        home_org_id=user.org_id,
        role=role,
        is_super_admin=user.is_super_admin,
        grants=grants_for(role, custom),
        team_ids=frozenset(team for team, _ in memberships),
        admin_team_ids=frozenset(team for team, r in memberships if r == Role.TEAM_ADMIN),
    )


async def _switch_org(session: AsyncSession, principal: Principal, requested: str) -> Principal:
    if not principal.is_super_admin:
        raise HTTPException(403, f"only super admins may send {ORG_HEADER}")
    try:
        org_id = int(requested.strip())
    except ValueError as exc:
        raise HTTPException(400, f"{ORG_HEADER} must be an organisation id") from exc
    if not 1 <= org_id <= _MAX_ID or await session.get(Organization, org_id) is None:
        raise HTTPException(404, "no such organisation")
    return Principal(
        user_id=principal.user_id,
        email=principal.email,
        org_id=org_id,
        home_org_id=principal.home_org_id,
        role=principal.role,
        is_super_admin=True,
        grants=principal.grants,
    )


def _request(request: Request) -> str:
    return f"{request.method} {request.url.path}"


def require(permission: str) -> Any:
    """`ctx: Annotated[AdminContext, require("keys:write")]`: authenticated, and holding
    `permission` somewhere in the acting organisation (handlers narrow it to the row)."""

    async def check(context: Annotated[AdminContext, Depends(admin_context)]) -> AdminContext:
        if not context.principal.may_ever(permission):
            raise HTTPException(403, f"your role does not allow {permission}")
        return context

    setattr(check, PERMISSION_ATTRIBUTE, permission)
    return Depends(check)


def public(reason: str) -> Any:
    """Marks a route that runs before authentication (login): declared, not forgotten."""

    def mark() -> None:
        return None

    setattr(mark, PERMISSION_ATTRIBUTE, f"public:{reason}")
    return Depends(mark)


def declared_permission(call: Callable[..., Any]) -> str | None:
    value = getattr(call, PERMISSION_ATTRIBUTE, None)
    return value if isinstance(value, str) else None


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})
