"""Accounts: registration, authentication, tokens, refresh, logout, and the admin account.

SQL work is plain `fn(session, ...)` functions that `Database.run` executes in a worker thread;
the async functions compose them with the Redis rate limits and the password hashing for the
routes. Hashing and verifying (50-100 ms of CPU each, much more on a busy machine) run in a
thread of their own *between* units of work: they hold no database connection and do not count
against the request's database deadline. Nothing here hashes on the event loop, and nothing
logs a password or a token.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.auth import refresh_tokens
from api.auth.passwords import (
    PasswordRejected,
    Passwords,
    check_policy,
)
from api.auth.rate_limit import begin_login_attempt, count_registration, login_succeeded
from api.auth.schemas import TokenPair, UserOut
from api.auth.tokens import (
    FamilyPosition,
    Principal,
    RefreshClaims,
    TokenType,
    issue,
    verify_refresh,
)
from api.auth.users import token_user
from api.errors import Conflict, Unauthorized
from api.ledger.service import ensure_account, open_account
from api.models import Role, User
from api.portfolios.service import add_default_portfolio
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


def register(session: Session, email: str, password_hash: str, *, initial_cash: int) -> User:
    """A new user account, with a cash account credited `initial_cash` (one DEPOSIT ledger
    row) and its default portfolio; Conflict `email_taken` if the (normalised) email is
    registered."""
    user = User(email=normalize_email(email), password_hash=password_hash,
                role=Role.USER.value)
    session.add(user)
    try:
        # The UNIQUE constraint decides, so two concurrent registrations cannot both win.
        session.flush()
    except IntegrityError as exc:
        raise Conflict("an account with this email already exists", code="email_taken") from exc
    open_account(session, user.id, initial_cash)
    session.refresh(user)  # created_at as stored (DATETIME drops the microseconds)
    add_default_portfolio(session, user)
    return user


def stored_credentials(session: Session, email: str) -> tuple[Principal, str] | None:
    """The account of this (normalised) email and its password hash, if there is one."""
    user = _find_user(session, email)
    return None if user is None else (_principal(user), user.password_hash)


def check_password(passwords: Passwords, stored: tuple[Principal, str] | None,
                   password: str) -> tuple[Principal, str | None]:
    """The principal if `password` is right, and a fresh hash when the stored one was made with
    other parameters; one uniform 401 otherwise. Slow: call it in a thread."""
    if stored is None:
        # As slow as a real check: no hint that the email is unknown.
        passwords.burn_verification(password)
        raise _invalid_credentials()
    principal, password_hash = stored
    if principal.role is Role.PORTFOLIO:
        # A portfolio's account is nobody's login (api.portfolios.service): its hash is of a
        # secret nobody kept, and this refuses the role itself, in the time of a real check.
        passwords.burn_verification(password)
        raise _invalid_credentials()
    if not passwords.verify(password_hash, password):
        raise _invalid_credentials()
    return principal, (passwords.hash(password) if passwords.needs_rehash(password_hash)
                       else None)


def current_principal(session: Session, user_id: int) -> Principal:
    """The user as SQL knows it now (its current role), or 401 `user_not_found` if it is gone."""
    return _principal(token_user(session, user_id))


def _invalid_credentials() -> Unauthorized:
    return Unauthorized("invalid email or password", code="invalid_credentials")


# --- Flows for the routes ---------------------------------------------------------------------


def issue_tokens(principal: Principal, family: FamilyPosition,
                 settings: ApiSettings) -> TokenPair:
    key = settings.signing_key()
    return TokenPair(
        access_token=issue(principal, TokenType.ACCESS, key, settings.jwt_access_ttl_s),
        refresh_token=issue(principal, TokenType.REFRESH, key, settings.jwt_refresh_ttl_s,
                            family=family),
        expires_in=settings.jwt_access_ttl_s,
    )


def _start_session(session: Session, user_id: int, new_password_hash: str | None,
                   now: datetime, refresh_ttl_s: int) -> tuple[Principal, FamilyPosition]:
    """After a verified password: store a re-made hash, and start a refresh-token family (the
    new session) with the user as SQL knows it now."""
    user = token_user(session, user_id)  # deleted since its password was checked: 401
    if new_password_hash is not None:
        user.password_hash = new_password_hash
    refresh_tokens.purge_unusable(session, user_id, now, refresh_ttl_s)
    return _principal(user), refresh_tokens.start_family(session, user_id, now)


def _rotate(session: Session, claims: RefreshClaims, now: datetime
            ) -> tuple[refresh_tokens.Rotation, FamilyPosition, Principal | None]:
    """Rotate the token's family; the user as SQL knows it now when it rotated. A reuse is
    returned, not raised, so that the family's revocation is committed."""
    principal = current_principal(session, claims.principal.user_id)  # 401 if the user is gone
    rotation, position = refresh_tokens.rotate(session, principal.user_id, claims.position, now)
    return rotation, position, principal if rotation is refresh_tokens.Rotation.ROTATED else None


async def register_from(resources: Resources, email: str, password: str,
                        address: str) -> UserOut:
    """`register`, counted against the address's registrations (429 beyond)."""
    await count_registration(resources.redis, resources.names, resources.settings, address)
    check_policy(password, resources.settings.password_min_length)
    password_hash = await run_in_threadpool(resources.passwords.hash, password)
    return UserOut.model_validate(await resources.db.run(
        register, email, password_hash, initial_cash=resources.settings.initial_cash))


async def me(resources: Resources, user_id: int) -> UserOut:
    """The signed-in user's account; 401 `user_not_found` if it has been deleted."""
    return UserOut.model_validate(await resources.db.read(token_user, user_id))


async def login(resources: Resources, email: str, password: str, address: str) -> TokenPair:
    """Tokens for valid credentials; failures are rate limited per account and per address."""
    email = normalize_email(email)
    # Counted before the check (see api.auth.rate_limit), so an attacker over the limit learns
    # nothing, not even whether a guess was right.
    attempt = await begin_login_attempt(resources.redis, resources.names, resources.settings,
                                        email, address)
    stored = await resources.db.read(stored_credentials, email)
    checked, new_password_hash = await run_in_threadpool(check_password, resources.passwords,
                                                           stored, password)
    principal, family = await resources.db.run(_start_session, checked.user_id,
                                               new_password_hash, resources.clock(),
                                               resources.settings.jwt_refresh_ttl_s)
    await login_succeeded(resources.redis, attempt)
    return issue_tokens(principal, family, resources.settings)


async def refresh(resources: Resources, refresh_token: str) -> TokenPair:
    """A new pair for the newest refresh token of a live family, with the role SQL holds now;
    an older token revokes its family (api.auth.refresh_tokens)."""
    claims = verify_refresh(refresh_token, resources.settings.signing_key())
    rotation, position, principal = await resources.db.run(_rotate, claims, resources.clock())
    if principal is None:
        if rotation is refresh_tokens.Rotation.REUSED:
            logger.warning("refresh token reused: session %s of user %d revoked",
                           position.family_id, claims.principal.user_id)
        raise refresh_tokens.refusal(rotation)
    return issue_tokens(principal, position, resources.settings)


async def logout(resources: Resources, refresh_token: str) -> None:
    """Revoke the session (family) of a valid refresh token, whatever its generation."""
    claims = verify_refresh(refresh_token, resources.settings.signing_key())
    await resources.db.run(refresh_tokens.revoke, claims.principal.user_id,
                           claims.position.family_id, resources.clock())


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
        outcome = await resources.db.run(_ensure_admin, resources.passwords, email, password,
                                         settings.initial_cash)
    except IntegrityError:
        # Another worker inserted the user (or its cash account) between our read and our
        # insert: it exists now.
        outcome = await resources.db.run(_ensure_admin, resources.passwords, email, password,
                                         settings.initial_cash)
    logger.info("admin account %s: %s", email, outcome)


def _ensure_admin(session: Session, passwords: Passwords, email: str, password: str,
                  initial_cash: int) -> str:
    user = _find_user(session, email)
    if user is None:
        user = User(email=email, password_hash=passwords.hash(password), role=Role.ADMIN.value)
        session.add(user)
        session.flush()
        open_account(session, user.id, initial_cash)
        session.refresh(user)
        add_default_portfolio(session, user)
        return "created"
    changes = []
    # An admin created before cash accounts existed gets one now.
    if ensure_account(session, user.id, initial_cash):
        changes.append("cash account opened")
    if user.role != Role.ADMIN.value:
        user.role = Role.ADMIN.value
        changes.append("promoted to admin")
    if not passwords.verify(user.password_hash, password) or passwords.needs_rehash(
            user.password_hash):
        user.password_hash = passwords.hash(password)
        changes.append("password reset")
    return ", ".join(changes) or "already in place"
