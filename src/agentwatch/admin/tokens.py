"""Admin access tokens: HS256 JWTs signed with JWT_SECRET, valid 24 hours, revocable by id."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import jwt

ALGORITHM = "HS256"
ACCESS_TOKEN_SECONDS = 24 * 3600
ISSUER = "agentwatch"
_ID_LIMIT = 2**63


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: int
    org_id: int
    email: str
    role: str
    is_super_admin: bool
    token_id: str = ""
    issued_at: float = 0.0  # seconds, to the millisecond: revocation compares it exactly
    expires_at: int = 0


class InvalidToken(ValueError):
    pass


def issue_access_token(claims: TokenClaims, secret: str, now: float | None = None) -> str:
    # NumericDate may carry a fraction (RFC 7519): a token issued just after a revocation in
    # the same second must stay valid, and one issued just before must not.
    issued = round(now if now is not None else time.time(), 3)
    return jwt.encode(
        {
            "iss": ISSUER,
            "sub": str(claims.user_id),
            "org": claims.org_id,
            "email": claims.email,
            "role": claims.role,
            "super": claims.is_super_admin,
            "typ": "access",
            "jti": secrets.token_urlsafe(16),
            "iat": issued,
            "exp": int(issued) + ACCESS_TOKEN_SECONDS,
        },
        secret,
        algorithm=ALGORITHM,
    )


def read_access_token(token: str, secret: str) -> TokenClaims:
    """The token's claims, if HS256-signed with `secret` and unexpired; `alg: none` and every
    other algorithm are refused by naming the only one accepted."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "jti", "iss"]},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from exc
    if claims.get("typ") != "access":
        raise InvalidToken("not an access token")
    try:
        identity = TokenClaims(
            user_id=int(claims["sub"]),
            org_id=int(claims["org"]),
            email=str(claims["email"]),
            role=str(claims["role"]),
            is_super_admin=bool(claims.get("super", False)),
            token_id=str(claims["jti"]),
            issued_at=float(claims["iat"]),
            expires_at=int(claims["exp"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidToken("malformed token claims") from exc
    if not (0 < identity.user_id < _ID_LIMIT and 0 < identity.org_id < _ID_LIMIT):
        raise InvalidToken("malformed token claims")
    return identity
