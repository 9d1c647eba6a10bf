"""Idempotent POSTs: the `Idempotency-Key` header (docs/api/ORDERS.md). The same key with the
same request answers what the first one answered, without doing it again; the same key with a
different request is refused (422 `idempotency_key_reused`). Keys are per user.

Every endpoint that honours the header (orders, deposit, withdraw) does it one way: its unit of
work takes the user's write lock (api.ledger.service.take_user_lock; on SQLite the whole unit of
work is serialised, api.db), then `answer_once` checks the key, and only for a new key builds
the answer, serialises it once and records that JSON in the same transaction. So two requests
with one key cannot both pass the check: a concurrent repeat waits for the first to commit, then
replays its answer. The UNIQUE (user_id, key) constraint is the second guard: should two ever
both execute, the one whose record collides raises `RunAgain`, its effect is rolled back, and
its run again (`run_retrying`) replays the winner's answer, so the client still gets the first
answer, never a 500. A refused request (an error) records nothing: nothing executed, so a retry
may execute.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import Header
from pydantic import BaseModel
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.db import RunAgain
from api.errors import Unprocessable
from api.models import IdempotencyKey

T = TypeVar("T")

MAX_KEY_LENGTH = 128

# The optional header of every POST that moves money or creates an order.
IdempotencyKeyHeader = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=MAX_KEY_LENGTH,
    description="repeat a request with the same key to get the same answer, not a second "
                "effect (keys are per user, kept at least 24 h)")]


def fingerprint(method: str, path: str, body: dict[str, Any]) -> str:
    canonical = json.dumps([method.upper(), path, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyedRequest:
    """What a repeat is recognised by: the user, the key they sent (None: no header, so every
    request executes) and the fingerprint of the request."""

    user_id: int
    key: str | None
    fingerprint: str

    @classmethod
    def of(cls, user_id: int, key: str | None, method: str, path: str,
           body: dict[str, Any]) -> KeyedRequest:
        return cls(user_id, key, fingerprint(method, path, body))


def replay(session: Session, user_id: int, key: str, request_fingerprint: str) -> str | None:
    """The answer recorded for this key (JSON text), or None if the key is new."""
    stored = session.scalar(select(IdempotencyKey).where(IdempotencyKey.user_id == user_id,
                                                         IdempotencyKey.key == key))
    if stored is None:
        return None
    if stored.fingerprint != request_fingerprint:
        raise Unprocessable("this Idempotency-Key was used for a different request",
                            code="idempotency_key_reused")
    return stored.response


def remember(session: Session, user_id: int, key: str, request_fingerprint: str,
             response: str) -> None:
    """Record the answer under the key; `RunAgain` if another transaction recorded the key
    first (its caller must run under `Database.run_retrying`, whose next run replays it)."""
    session.flush()  # the effect's own writes first: their errors are theirs, not the key's
    session.add(IdempotencyKey(user_id=user_id, key=key, fingerprint=request_fingerprint,
                               response=response))
    try:
        session.flush()
    except IntegrityError as exc:
        raise RunAgain(f"Idempotency-Key {key!r} of user {user_id} was recorded by a "
                       "concurrent request") from exc


def once(session: Session, user_id: int, key: str | None, request_fingerprint: str,
         execute: Callable[[], T], *, encode: Callable[[T], str] = json.dumps,
         decode: Callable[[str], T] = json.loads) -> T:
    """The answer of `execute()`, run at most once per key: a repeated key answers what was
    recorded (`encode`d, `decode`d: by default a JSON value). The caller has locked the row
    that serialises this user's requests."""
    if key is None:
        return execute()
    stored = replay(session, user_id, key, request_fingerprint)
    if stored is not None:
        return decode(stored)
    answer = execute()
    remember(session, user_id, key, request_fingerprint, encode(answer))
    return answer


def answer_once(session: Session, request: KeyedRequest, answer: Callable[[], BaseModel]) -> str:
    """The JSON body of `answer()`, built and serialised once, or the one recorded for this
    key. The caller holds the user's write lock (module docstring)."""
    return once(session, request.user_id, request.key, request.fingerprint,
                lambda: answer().model_dump_json(),
                encode=str, decode=str)  # already JSON text: stored and replayed as it is


def purge(session: Session, older_than: datetime, batch: int = 1000) -> int:
    """Delete recorded answers created before `older_than`, at most `batch` of them (small
    deletes keep locks short); returns how many were deleted."""
    ids = list(session.scalars(select(IdempotencyKey.id)
                               .where(IdempotencyKey.created_at < older_than)
                               .order_by(IdempotencyKey.id).limit(batch)))
    if ids:
        session.execute(delete(IdempotencyKey).where(IdempotencyKey.id.in_(ids)))
    return len(ids)
