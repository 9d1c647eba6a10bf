"""JWT access and refresh tokens: HS256 pinned, expiry, subject and issued-at required.

A token carries the user id (`sub`), email and role, so that a request is authorised without a
database read; role changes take effect when the (short-lived) access token is refreshed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import jwt

from api.errors import Unauthorized
from api.models import Role

ALGORITHM = "HS256"  # pinned: a token claiming any other algorithm, "none" included, is refused
REQUIRED_CLAIMS = ["exp", "iat", "sub", "typ"]


class TokenType(StrEnum):
    ACCESS = "access"
    REFRESH = "refresh"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as the token says."""

    user_id: int
    email: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


def issue(principal: Principal, kind: TokenType, key: str, ttl_s: int,
          now: datetime | None = None) -> str:
    issued = now or datetime.now(UTC)
    claims = {
        "sub": str(principal.user_id),
        "email": principal.email,
        "role": principal.role.value,
        "typ": kind.value,
        "iat": issued,
        "exp": issued + timedelta(seconds=ttl_s),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def verify(token: str, kind: TokenType, key: str) -> Principal:
    """The principal of a valid token of this kind; Unauthorized (401) for anything else."""
    try:
        claims = jwt.decode(token, key, algorithms=[ALGORITHM],
                            options={"require": REQUIRED_CLAIMS})
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("token expired", code="token_expired") from exc
    except jwt.InvalidTokenError as exc:
        raise Unauthorized("invalid token", code="invalid_token") from exc
    if claims.get("typ") != kind.value:
        raise Unauthorized(f"not an {kind.value} token", code="invalid_token")
    try:
        return Principal(int(claims["sub"]), str(claims.get("email", "")), Role(claims["role"]))
    except (KeyError, ValueError) as exc:
        raise Unauthorized("invalid token", code="invalid_token") from exc
