"""JWT access and refresh tokens: HS256 pinned, expiry, subject and issued-at required.

A token carries the user id (`sub`), email and role, so that a request is authorised without a
database read; role changes take effect when the (short-lived) access token is refreshed.
"""

from __future__ import annotations

import time
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
    return _verify(token, kind, key)[0]


class AccessTokenCache:
    """Access tokens this process verified recently, until they expire.

    A client sends the same token with every request for its whole lifetime; checking the
    signature each time was the largest single cost of an authenticated quote read. A token
    cannot change, so a cached verdict is as good as a fresh one until `exp`; revocation is not
    weakened, since a stateless access token is valid until expiry anyway. Bounded: cleared
    when full.
    """

    def __init__(self, key: str, max_entries: int = 10_000) -> None:
        self._key = key
        self._max_entries = max_entries
        self._verified: dict[str, tuple[Principal, float]] = {}

    def verify(self, token: str) -> Principal:
        hit = self._verified.get(token)
        if hit is not None and hit[1] > time.time():
            return hit[0]
        principal, expires = _verify(token, TokenType.ACCESS, self._key)
        if len(self._verified) >= self._max_entries:
            self._verified.clear()
        self._verified[token] = (principal, expires)
        return principal


def _verify(token: str, kind: TokenType, key: str) -> tuple[Principal, float]:
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
        principal = Principal(int(claims["sub"]), str(claims.get("email", "")),
                              Role(claims["role"]))
        return principal, float(claims["exp"])
    except (KeyError, ValueError) as exc:
        raise Unauthorized("invalid token", code="invalid_token") from exc
