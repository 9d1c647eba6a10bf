"""Passwords: the policy, argon2id hashing and verification.

Hashing and verifying cost about 50-100 ms of CPU and 64 MiB each, on purpose. Every function
here that hashes must run in a worker thread (inside a `Database.run` function or through
`run_in_threadpool`), never on the event loop. Nothing here logs or returns a password.
"""

from __future__ import annotations

import functools
import logging
import threading

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from api.errors import Unprocessable

logger = logging.getLogger(__name__)

# Argon2 pre-hashes its input, but a bound keeps the request body and the work predictable.
MAX_PASSWORD_LENGTH = 128

# argon2-cffi's defaults: argon2id with RFC 9106's low-memory profile (t=3, m=64 MiB, p=4).
# When they change, `needs_rehash` says so and a successful login stores a fresh hash.
_hasher = PasswordHasher()

# At most this many hashes at once per process: each takes 64 MiB, and the thread pool would
# otherwise allow 40 (2.5 GiB) under a burst of logins. The others wait their turn.
MAX_CONCURRENT_HASHES = 4
_hashing = threading.BoundedSemaphore(MAX_CONCURRENT_HASHES)


class PasswordRejected(Unprocessable):
    """A new password does not meet the policy (422)."""

    code = "password_rejected"


def check_policy(password: str, min_length: int) -> None:
    """Raise PasswordRejected unless `password` may be set as a new password."""
    if len(password) < min_length:
        raise PasswordRejected(f"password: must be at least {min_length} characters",
                               code="password_too_short", min_length=min_length)
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordRejected(f"password: must be at most {MAX_PASSWORD_LENGTH} characters",
                               code="password_too_long", max_length=MAX_PASSWORD_LENGTH)


def hash_password(password: str) -> str:
    """An argon2id hash in PHC format (`$argon2id$v=19$m=...`). Slow: call it in a thread."""
    with _hashing:
        return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Whether `password` matches `password_hash`. Slow: call it in a thread."""
    try:
        with _hashing:
            return _hasher.verify(password_hash, password)
    except InvalidHashError:
        logger.warning("a stored password hash is not a valid argon2 hash")
        return False
    except VerificationError:  # VerifyMismatchError and friends
        return False


def needs_rehash(password_hash: str) -> bool:
    """Whether a (verified) hash was made with other parameters than today's."""
    return _hasher.check_needs_rehash(password_hash)


def burn_verification(password: str) -> None:
    """Spend the time of one verification, for accounts that do not exist, so that the answer
    time does not tell whether an email is registered."""
    verify_password(_dummy_hash(), password)


@functools.cache
def _dummy_hash() -> str:
    return hash_password("not the password of any account")
