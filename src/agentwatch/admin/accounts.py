"""Admin accounts: login with lock-out, logout, the caller's profile, password changes."""

from __future__ import annotations

import asyncio
import functools
from dataclasses import replace
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from agentwatch.admin.audit import NO_ORG, AuditEvent, append_audit
from agentwatch.admin.deps import (
    AdminContext,
    ClaimsDep,
    SessionDep,
    StateDep,
    client_info,
    public,
    require,
)
from agentwatch.admin.fields import Email, Password, Strict
from agentwatch.admin.passwords import HISTORY_SIZE, PasswordRejected, check_password
from agentwatch.admin.throttle import LOCK_SECONDS, MAX_FAILURES_PER_ACCOUNT
from agentwatch.admin.tokens import (
    ACCESS_TOKEN_SECONDS,
    TokenClaims,
    issue_access_token,
)
from agentwatch.crypto import hash_password, verify_password
from agentwatch.db.models import RevokedToken, User, utcnow

router = APIRouter(prefix="/api/auth", tags=["auth"])


@functools.cache
def _dummy_hash() -> str:
    """Verified when the email is unknown, so a miss costs what a wrong password costs; made
    on the first such login, not at import (an argon2 hash is ~0.1 s of start-up)."""
    return hash_password("agentwatch-dummy-password-for-timing")


class LoginRequest(Strict):
    email: Email
    password: Password


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int = ACCESS_TOKEN_SECONDS


class PasswordChange(Strict):
    current_password: Password
    new_password: Password


class Me(BaseModel):
    id: int
    email: str
    name: str | None
    org_id: int
    acting_org_id: int
    role: str
    is_super_admin: bool
    team_ids: list[int]
    admin_team_ids: list[int]
    permissions: list[str]


@router.post("/login", response_model=TokenResponse, dependencies=[public("login")])
async def login(
    body: LoginRequest, request: Request, session: SessionDep, state: StateDep
) -> TokenResponse:
    client = client_info(request)
    wait = state.login_throttle.retry_after(client.ip, body.email)
    if wait is not None:
        raise _too_many(wait)
    user = await session.scalar(select(User).where(User.email == body.email))
    now = utcnow()
    if user is not None and user.locked_until is not None and user.locked_until > now:
        raise _too_many((user.locked_until - now).total_seconds())
    stored = user.password_hash if user is not None else _dummy_hash()
    valid = await asyncio.to_thread(verify_password, stored, body.password)
    event = AuditEvent(
        org_id=user.org_id if user is not None else NO_ORG,
        actor=body.email,
        actor_id=user.id if user is not None else None,
        action="auth.login_succeeded",
        target=f"user:{user.id}" if user is not None else None,
        ip=client.ip,
        user_agent=client.user_agent,
    )
    if user is None or not valid or not user.is_active:
        state.login_throttle.failed(client.ip, body.email)
        await _record_failure(session, user, event)
        raise HTTPException(401, "wrong email or password")
    state.login_throttle.succeeded(body.email)
    user.failed_logins = 0
    user.locked_until = None
    await append_audit(session, event)
    await session.commit()
    claims = TokenClaims(user.id, user.org_id, user.email, user.role, user.is_super_admin)
    return TokenResponse(access_token=issue_access_token(claims, state.settings.jwt_secret))


async def _record_failure(session: AsyncSession, user: User | None, event: AuditEvent) -> None:
    reason = "unknown email" if user is None else "inactive" if not user.is_active else "password"
    details = {"reason": reason}
    await append_audit(session, replace(event, action="auth.login_failed", details=details))
    if user is not None:
        user.failed_logins += 1
        if user.failed_logins >= MAX_FAILURES_PER_ACCOUNT:
            user.failed_logins = 0
            user.locked_until = utcnow() + timedelta(seconds=LOCK_SECONDS)
            await append_audit(
                session, replace(event, action="auth.locked_out", details={"seconds": LOCK_SECONDS})
            )
    await session.commit()


def _too_many(seconds: float) -> HTTPException:
    wait = max(1, int(seconds + 0.999))
    return HTTPException(
        429,
        f"too many failed logins; try again in {wait} seconds",
        headers={"Retry-After": str(wait)},
    )


@router.post("/logout", status_code=204, response_class=Response)
async def logout(ctx: Annotated[AdminContext, require("auth:self")], claims: ClaimsDep) -> Response:
    """Revokes the token this request carries."""
    expires = utcnow() + timedelta(seconds=max(0, claims.expires_at - int(utcnow().timestamp())))
    ctx.session.add(RevokedToken(jti=claims.token_id, expires_at=expires))
    # Revocations of tokens that expired anyway are kept no longer than the tokens were valid.
    await ctx.session.execute(delete(RevokedToken).where(RevokedToken.expires_at < utcnow()))
    await ctx.audit("auth.logout", f"user:{ctx.principal.user_id}")
    await ctx.session.commit()
    return Response(status_code=204)


@router.post("/logout-all", status_code=204, response_class=Response)
async def logout_everywhere(ctx: Annotated[AdminContext, require("auth:self")]) -> Response:
    """Revokes every token of the caller issued so far."""
    user = await _own_user(ctx)
    user.tokens_valid_after = utcnow()
    await ctx.audit("auth.logout_all", f"user:{user.id}")
    await ctx.session.commit()
    return Response(status_code=204)


@router.get("/me", response_model=Me)
async def me(ctx: Annotated[AdminContext, require("auth:self")]) -> Me:
    user = await _own_user(ctx)
    principal = ctx.principal
    return Me(
        id=user.id,
        email=user.email,
        name=user.name,
        org_id=user.org_id,
        acting_org_id=principal.org_id,
        role=principal.role.value,
        is_super_admin=principal.is_super_admin,
        team_ids=sorted(principal.team_ids),
        admin_team_ids=sorted(principal.admin_team_ids),
        permissions=sorted(principal.grants),
    )


@router.post("/password", status_code=204, response_class=Response)
async def change_password(
    body: PasswordChange, ctx: Annotated[AdminContext, require("auth:self")]
) -> Response:
    """Sets a new password and revokes every token issued before (log in again)."""
    user = await _own_user(ctx)
    if not await asyncio.to_thread(verify_password, user.password_hash, body.current_password):
        raise HTTPException(403, "the current password is wrong")
    await set_password(user, body.new_password)
    user.tokens_valid_after = utcnow()
    await ctx.audit("auth.password_changed", f"user:{user.id}")
    await ctx.session.commit()
    return Response(status_code=204)


async def set_password(user: User, password: str) -> None:
    """Checks the policy (history included) and stores the new hash; 422 when refused."""
    history = [user.password_hash, *user.password_history] if user.password_hash else []
    history = [h for h in history if isinstance(h, str)][:HISTORY_SIZE]
    try:
        await asyncio.to_thread(check_password, password, email=user.email, previous_hashes=history)
    except PasswordRejected as exc:
        raise HTTPException(422, str(exc)) from exc
    user.password_hash = await asyncio.to_thread(hash_password, password)
    user.password_history = history[: HISTORY_SIZE - 1]


async def _own_user(ctx: AdminContext) -> User:
    user = await ctx.session.get(User, ctx.principal.user_id)
    if user is None:
        raise HTTPException(401, "the token's user no longer exists")
    return user
