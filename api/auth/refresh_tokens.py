"""Refresh-token families in SQL: rotation, reuse detection, logout.

A login starts a family (a random id, generation 0) and its refresh token names both (`fam`,
`gen` claims). Each refresh moves the family to the next generation and issues the token of
that generation, so only the newest token of a family is ever usable. A token of an older
generation coming back means that two parties hold the chain (a stolen token, or a client
that kept an old one): the family is revoked, which also ends the newest token, whoever holds
it (OAuth 2.0 Security BCP, "refresh token rotation"). Logout revokes the family of the token
it is given.

Races: the move to the next generation is one compare-and-set UPDATE (`WHERE generation =
:gen AND revoked_at IS NULL`), so of two concurrent refreshes with one token exactly one moves
the family on; the other finds the generation gone and counts as a reuse. On MariaDB the
second UPDATE waits for the first transaction's row lock and then re-reads the row; on SQLite
writers are serialised. Either way at most one new token is issued, and then the family is
revoked.

Rows are session state, not history: a login deletes its user's families that no token can
use any more (last refreshed more than JWT_REFRESH_TTL_S ago), so the table holds about one
row per live session.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from api.auth.tokens import FamilyPosition
from api.errors import Unauthorized
from api.models import RefreshTokenFamily


class RevokedBecause(StrEnum):
    LOGOUT = "logout"
    REUSE = "reuse"


class Rotation(StrEnum):
    """What became of a refresh token presented for rotation."""

    ROTATED = "rotated"  # it was the newest: the family moved to the next generation
    REUSED = "reused"  # an older generation: the family is revoked now
    REVOKED = "revoked"  # the family was already revoked (logout, or an earlier reuse)
    UNKNOWN = "unknown"  # no such family (expired and purged, or not ours)


def start_family(session: Session, user_id: int, now: datetime) -> FamilyPosition:
    family = RefreshTokenFamily(id=secrets.token_hex(16), user_id=user_id, generation=0,
                                created_at=now, refreshed_at=now)
    session.add(family)
    session.flush()
    return FamilyPosition(family.id, 0)


def purge_unusable(session: Session, user_id: int, now: datetime, refresh_ttl_s: int) -> int:
    """Delete the user's families whose newest token has expired; how many went."""
    cutoff = now - timedelta(seconds=refresh_ttl_s)
    result = session.execute(delete(RefreshTokenFamily).where(
        RefreshTokenFamily.user_id == user_id, RefreshTokenFamily.refreshed_at < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)


def rotate(session: Session, user_id: int, position: FamilyPosition,
           now: datetime) -> tuple[Rotation, FamilyPosition]:
    """Move the family past `position` if it is the newest; else say why not (revoking the
    family on a reuse). The caller commits in both cases."""
    moved = session.execute(
        update(RefreshTokenFamily)
        .where(RefreshTokenFamily.id == position.family_id,
               RefreshTokenFamily.user_id == user_id,
               RefreshTokenFamily.generation == position.generation,
               RefreshTokenFamily.revoked_at.is_(None))
        .values(generation=position.generation + 1, refreshed_at=now))
    if getattr(moved, "rowcount", 0) == 1:
        return Rotation.ROTATED, FamilyPosition(position.family_id, position.generation + 1)
    # A locking read: the row as last committed, not this transaction's snapshot.
    family = session.scalar(
        select(RefreshTokenFamily)
        .where(RefreshTokenFamily.id == position.family_id,
               RefreshTokenFamily.user_id == user_id)
        .with_for_update().execution_options(populate_existing=True))
    if family is None:
        return Rotation.UNKNOWN, position
    if family.revoked_at is not None:
        return Rotation.REVOKED, position
    family.revoked_at = now
    family.revoked_reason = RevokedBecause.REUSE.value
    return Rotation.REUSED, position


def revoke(session: Session, user_id: int, family_id: str, now: datetime) -> None:
    """Logout: revoke the family (no-op if it is already revoked or gone)."""
    session.execute(
        update(RefreshTokenFamily)
        .where(RefreshTokenFamily.id == family_id, RefreshTokenFamily.user_id == user_id,
               RefreshTokenFamily.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=RevokedBecause.LOGOUT.value))


def refusal(rotation: Rotation) -> Unauthorized:
    """The 401 for a refresh that did not rotate."""
    if rotation is Rotation.REUSED:
        return Unauthorized("this refresh token was already used; its session is revoked, "
                            "log in again", code="refresh_token_reused")
    if rotation is Rotation.REVOKED:
        return Unauthorized("this session was logged out or revoked; log in again",
                            code="token_revoked")
    return Unauthorized("unknown session; log in again", code="invalid_token")
