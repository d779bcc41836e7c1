"""Admin access tokens: short-lived HS256 JWTs signed with JWT_SECRET."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

ALGORITHM = "HS256"
ACCESS_TOKEN_SECONDS = 12 * 3600


@dataclass(frozen=True, slots=True)
class AdminIdentity:
    user_id: int
    org_id: int
    email: str
    is_super_admin: bool


class InvalidToken(ValueError):
    pass


def issue_access_token(identity: AdminIdentity, secret: str, now: float | None = None) -> str:
    issued = int(now if now is not None else time.time())
    claims = {
        "sub": str(identity.user_id),
        "org": identity.org_id,
        "email": identity.email,
        "super": identity.is_super_admin,
        "typ": "access",
        "iat": issued,
        "exp": issued + ACCESS_TOKEN_SECONDS,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def read_access_token(token: str, secret: str) -> AdminIdentity:
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]}
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from exc
    if claims.get("typ") != "access":
        raise InvalidToken("not an access token")
    try:
        return AdminIdentity(
            user_id=int(claims["sub"]),
            org_id=int(claims["org"]),
            email=str(claims["email"]),
            is_super_admin=bool(claims.get("super", False)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidToken("malformed token claims") from exc
