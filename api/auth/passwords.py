"""Passwords: the policy, argon2id hashing and verification.

Hashing and verifying cost about 170 ms of CPU and 64 MiB each, on purpose (the standard
profile; tests use a cheap one, `PasswordProfile`). Every method of `Passwords` must run in a
worker thread (inside a `Database.run` function or through
`run_in_threadpool`), never on the event loop. Nothing here logs or returns a password.
"""

from __future__ import annotations

import logging
import threading
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from api.errors import Unprocessable

logger = logging.getLogger(__name__)

# Argon2 pre-hashes its input, but a bound keeps the request body and the work predictable.
MAX_PASSWORD_LENGTH = 128

# At most this many hashes at once per process: each takes 64 MiB, and the thread pool would
# otherwise allow 40 (2.5 GiB) under a burst of logins. The others wait their turn.
MAX_CONCURRENT_HASHES = 4
_hashing = threading.BoundedSemaphore(MAX_CONCURRENT_HASHES)


class PasswordProfile(StrEnum):
    """How expensive a password hash is (PASSWORD_HASH_PROFILE).

    `standard`: argon2-cffi's defaults, argon2id with RFC 9106's low-memory profile (t=3,
    m=64 MiB, p=4), about 170 ms of CPU per hash here. When they change, `needs_rehash` says so
    and a successful login stores a fresh hash.
    `tests-only`: the cheapest argon2id there is (t=1, m=8 KiB, p=1), same code path, for test
    suites that register and log in hundreds of users (the production profile cost them minutes
    of CPU). Worthless as protection: production refuses it (api.settings).
    """

    STANDARD = "standard"
    TESTS_ONLY = "tests-only"


def _hasher_for(profile: PasswordProfile) -> PasswordHasher:
    if profile is PasswordProfile.TESTS_ONLY:
        return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    return PasswordHasher()


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


class Passwords:
    """Hashing and verification with one profile's parameters. Slow by design (the standard
    profile): call every method in a worker thread, never on the event loop."""

    def __init__(self, profile: PasswordProfile = PasswordProfile.STANDARD) -> None:
        self.profile = profile
        self._hasher = _hasher_for(profile)
        self._dummy: str | None = None

    def hash(self, password: str) -> str:
        """An argon2id hash in PHC format (`$argon2id$v=19$m=...`)."""
        with _hashing:
            return self._hasher.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        """Whether `password` matches `password_hash`."""
        try:
            with _hashing:
                return self._hasher.verify(password_hash, password)
        except InvalidHashError:
            logger.warning("a stored password hash is not a valid argon2 hash")
            return False
        except VerificationError:  # VerifyMismatchError and friends
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        """Whether a (verified) hash was made with other parameters than this profile's."""
        return self._hasher.check_needs_rehash(password_hash)

    def burn_verification(self, password: str) -> None:
        """Spend the time of one verification, for accounts that do not exist, so that the
        answer time does not tell whether an email is registered."""
        if self._dummy is None:
            self._dummy = self.hash("not the password of any account")
        self.verify(self._dummy, password)
