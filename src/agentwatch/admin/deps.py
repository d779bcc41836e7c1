"""FastAPI dependencies for the admin API: the app state, a database session, the current admin."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from agentwatch.admin.tokens import AdminIdentity, InvalidToken, read_access_token
from agentwatch.state import AppState

_bearer = HTTPBearer(auto_error=False)


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.agentwatch
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    async with state.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


def get_current_admin(
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> AdminIdentity:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    try:
        return read_access_token(credentials.credentials, state.settings.jwt_secret)
    except InvalidToken as exc:
        raise HTTPException(
            401, f"invalid token: {exc}", headers={"WWW-Authenticate": "Bearer"}
        ) from exc


CurrentAdmin = Annotated[AdminIdentity, Depends(get_current_admin)]
