"""Accounts: registration, authentication, tokens, refresh, and the admin account.

SQL work is plain `fn(session, ...)` functions that `Database.run` executes in a worker thread,
which is also where the slow password hashing happens; the async functions compose them with
the Redis rate limits for the routes. Nothing here hashes on the event loop, and nothing logs
a password or a token.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.auth.passwords import (
    PasswordRejected,
    burn_verification,
    check_policy,
    hash_password,
    needs_rehash,
    verify_password,
)
from api.auth.rate_limit import begin_login_attempt, login_succeeded
from api.auth.schemas import TokenPair
from api.auth.tokens import Principal, TokenType, issue, verify
from api.errors import Conflict, Unauthorized
from api.ledger.service import ensure_account, open_account
from api.models import Role, User
from api.resources import Resources
from api.settings import ApiSettings

logger = logging.getLogger(__name__)


def normalize_email(email: str) -> str:
    return email.strip().lower()


def _principal(user: User) -> Principal:
    return Principal(user.id, user.email, Role(user.role))


def _find_user(session: Session, email: str) -> User | None:
    return session.scalar(select(User).where(User.email == email))


# --- SQL units of work (run with `await db.run(fn, ...)`) ---------------------------------------


def register(session: Session, email: str, password: str, *, min_password_length: int,
             initial_cash: int) -> User:
    """A new user account, with a cash account credited `initial_cash` (one DEPOSIT ledger
    row); Conflict `email_taken` if the (normalised) email is registered."""
    check_policy(password, min_password_length)
    # Hashed before the first statement, so no connection is held while it runs.
    user = User(email=normalize_email(email), password_hash=hash_password(password),
                role=Role.USER.value)
    session.add(user)
    try:
        # The UNIQUE constraint decides, so two concurrent registrations cannot both win.
        session.flush()
    except IntegrityError as exc:
        raise Conflict("an account with this email already exists", code="email_taken") from exc
    open_account(session, user.id, initial_cash)
    session.refresh(user)  # created_at as stored (DATETIME drops the microseconds)
    return user


def authenticate(session: Session, email: str, password: str) -> Principal:
    """The principal whose email and password these are; one uniform 401 otherwise."""
    user = _find_user(session, normalize_email(email))
    if user is None:
        burn_verification(password)  # as slow as a real check: no hint that the email is unknown
        raise _invalid_credentials()
    if not verify_password(user.password_hash, password):
        raise _invalid_credentials()
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return _principal(user)


def current_principal(session: Session, user_id: int) -> Principal:
    """The user as SQL knows it now (its current role), or 401 if the account is gone."""
    return _principal(get_user(session, user_id))


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise Unauthorized("the account of this token no longer exists", code="invalid_token")
    return user


def _invalid_credentials() -> Unauthorized:
    return Unauthorized("invalid email or password", code="invalid_credentials")


# --- Flows for the routes ---------------------------------------------------------------------


def issue_tokens(principal: Principal, settings: ApiSettings) -> TokenPair:
    key = settings.signing_key()
    return TokenPair(
        access_token=issue(principal, TokenType.ACCESS, key, settings.jwt_access_ttl_s),
        refresh_token=issue(principal, TokenType.REFRESH, key, settings.jwt_refresh_ttl_s),
        expires_in=settings.jwt_access_ttl_s,
    )


async def login(resources: Resources, email: str, password: str, address: str) -> TokenPair:
    """Tokens for valid credentials; failures are rate limited per account and per address."""
    email = normalize_email(email)
    # Counted before the check (see api.auth.rate_limit), so an attacker over the limit learns
    # nothing, not even whether a guess was right.
    attempt = await begin_login_attempt(resources.redis, resources.names, resources.settings,
                                        email, address)
    principal = await resources.db.run(authenticate, email, password)
    await login_succeeded(resources.redis, attempt)
    return issue_tokens(principal, resources.settings)


async def refresh(resources: Resources, refresh_token: str) -> TokenPair:
    """A new pair for a valid refresh token, with the role SQL holds now."""
    claimed = verify(refresh_token, TokenType.REFRESH, resources.settings.signing_key())
    principal = await resources.db.run(current_principal, claimed.user_id)
    return issue_tokens(principal, resources.settings)


# --- The admin account ------------------------------------------------------------------------


async def ensure_admin_account(resources: Resources) -> None:
    """Create the STOCKING_ADMIN_EMAIL account with the admin role, or promote an existing one
    and set its password to STOCKING_ADMIN_PASSWORD. Every worker runs this at start, possibly
    at the same moment: it is idempotent, and the UNIQUE email decides an insert race."""
    settings = resources.settings
    configured_email = settings.stocking_admin_email
    configured_password = settings.stocking_admin_password
    if not configured_email or configured_password is None:
        if configured_email or configured_password is not None:
            logger.warning("only one of STOCKING_ADMIN_EMAIL and STOCKING_ADMIN_PASSWORD is "
                           "set; no admin account is ensured")
        return
    email = normalize_email(configured_email)
    password = configured_password.get_secret_value()
    try:
        check_policy(password, settings.password_min_length)
    except PasswordRejected as exc:
        raise ValueError(f"STOCKING_ADMIN_PASSWORD is refused: {exc.detail}") from None
    try:
        outcome = await resources.db.run(_ensure_admin, email, password, settings.initial_cash)
    except IntegrityError:
        # Another worker inserted the user (or its cash account) between our read and our
        # insert: it exists now.
        outcome = await resources.db.run(_ensure_admin, email, password, settings.initial_cash)
    logger.info("admin account %s: %s", email, outcome)


def _ensure_admin(session: Session, email: str, password: str, initial_cash: int) -> str:
    user = _find_user(session, email)
    if user is None:
        user = User(email=email, password_hash=hash_password(password), role=Role.ADMIN.value)
        session.add(user)
        session.flush()
        open_account(session, user.id, initial_cash)
        return "created"
    changes = []
    # An admin created before cash accounts existed gets one now.
    if ensure_account(session, user.id, initial_cash):
        changes.append("cash account opened")
    if user.role != Role.ADMIN.value:
        user.role = Role.ADMIN.value
        changes.append("promoted to admin")
    if not verify_password(user.password_hash, password) or needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
        changes.append("password reset")
    return ", ".join(changes) or "already in place"
