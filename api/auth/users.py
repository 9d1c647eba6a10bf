"""The user a token names, as SQL knows it: the one place that answers "this user is gone".

An access token is checked without SQL (api.auth.deps), so a token outlives a deleted user
until it expires. Every unit of work that loads the caller's user or cash account meets the
deletion there, and answers the same 401 `user_not_found` (never a foreign-key error or a
misleading 404): `/users/me` and `/auth/refresh` through `token_user`, every money, order,
watchlist and payment write through the ledger's account loaders, which call `user_gone`
when the account row is missing. Reads that only list the caller's own rows (orders,
transactions, payments, watchlists) load neither and answer an empty list.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from api.errors import Unauthorized
from api.models import User


def user_gone() -> Unauthorized:
    return Unauthorized("the user of this token no longer exists", code="user_not_found")


def token_user(session: Session, user_id: int) -> User:
    """The user of a token; 401 `user_not_found` if it has been deleted."""
    user = session.get(User, user_id)
    if user is None:
        raise user_gone()
    return user


def user_exists(session: Session, user_id: int) -> bool:
    return session.get(User, user_id) is not None
