"""JWT access and refresh tokens: HS256 pinned, expiry, subject and issued-at required.

A token carries the user id (`sub`), email and role, so that a request is authorised without a
database read; role changes take effect when the (short-lived) access token is refreshed. A
refresh token also names its session and generation (`fam`, `gen`), which SQL checks on refresh
(api.auth.refresh_tokens).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

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


@dataclass(frozen=True, slots=True)
class FamilyPosition:
    """Where a refresh token sits in its login's chain (api.auth.refresh_tokens): the family
    and the generation, its `fam` and `gen` claims."""

    family_id: str
    generation: int


@dataclass(frozen=True, slots=True)
class RefreshClaims:
    principal: Principal
    position: FamilyPosition


def issue(principal: Principal, kind: TokenType, key: str, ttl_s: int,
          now: datetime | None = None, family: FamilyPosition | None = None) -> str:
    """A signed token; a refresh token also names its family position (`fam`, `gen`)."""
    issued = now or datetime.now(UTC)
    claims: dict[str, object] = {
        "sub": str(principal.user_id),
        "email": principal.email,
        "role": principal.role.value,
        "typ": kind.value,
        "iat": issued,
        "exp": issued + timedelta(seconds=ttl_s),
        "jti": uuid.uuid4().hex,
    }
    if family is not None:
        claims["fam"] = family.family_id
        claims["gen"] = family.generation
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def verify(token: str, kind: TokenType, key: str) -> Principal:
    """The principal of a valid token of this kind; Unauthorized (401) for anything else."""
    return _verify(token, kind, key)[0]


def verify_refresh(token: str, key: str) -> RefreshClaims:
    """A valid refresh token's principal and family position; 401 for anything else, including
    a refresh token from before families (no `fam`/`gen`: its holder logs in again)."""
    principal, _, claims = _decode(token, TokenType.REFRESH, key)
    family_id, generation = claims.get("fam"), claims.get("gen")
    if not isinstance(family_id, str) or type(generation) is not int or generation < 0:
        raise Unauthorized("this refresh token names no session; log in again",
                           code="invalid_token")
    return RefreshClaims(principal, FamilyPosition(family_id, generation))


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
    principal, expires, _ = _decode(token, kind, key)
    return principal, expires


def _decode(token: str, kind: TokenType, key: str) -> tuple[Principal, float, dict[str, Any]]:
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
        return principal, float(claims["exp"]), claims
    except (KeyError, ValueError) as exc:
        raise Unauthorized("invalid token", code="invalid_token") from exc
