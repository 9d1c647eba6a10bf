"""Idempotent POSTs: the `Idempotency-Key` header (docs/api/ORDERS.md). The same key with the
same request answers what the first one answered, without doing it again; the same key with a
different request is refused (422 `idempotency_key_reused`). Keys are per user.

The check and the record happen inside the request's own transaction, after the caller has
locked the row that serialises the user's requests (the cash account; on SQLite the whole unit
of work is serialised, api.db), so two requests with one key cannot both pass the check: a
concurrent repeat waits for the first to commit, then replays its answer. The UNIQUE (user_id,
key) constraint is the second guard: should two ever both execute, the one whose record
collides raises `RunAgain`, its effect is rolled back, and its run again (`run_retrying`)
replays the winner's answer, so the client still gets the first answer, never a 500. A refused
request (an error) records nothing: nothing executed, so a retry may execute.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import Header
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.db import RunAgain
from api.errors import Unprocessable
from api.models import IdempotencyKey

MAX_KEY_LENGTH = 128

# The optional header of every POST that moves money or creates an order.
IdempotencyKeyHeader = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=MAX_KEY_LENGTH,
    description="repeat a request with the same key to get the same answer, not a second "
                "effect (keys are per user, kept at least 24 h)")]


def fingerprint(method: str, path: str, body: dict[str, Any]) -> str:
    canonical = json.dumps([method.upper(), path, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def replay(session: Session, user_id: int, key: str, request_fingerprint: str) -> Any | None:
    """The answer recorded for this key, or None if the key is new."""
    stored = session.scalar(select(IdempotencyKey).where(IdempotencyKey.user_id == user_id,
                                                         IdempotencyKey.key == key))
    if stored is None:
        return None
    if stored.fingerprint != request_fingerprint:
        raise Unprocessable("this Idempotency-Key was used for a different request",
                            code="idempotency_key_reused")
    return json.loads(stored.response)


def remember(session: Session, user_id: int, key: str, request_fingerprint: str,
             response: Any) -> None:
    """Record the answer under the key; `RunAgain` if another transaction recorded the key
    first (its caller must run under `Database.run_retrying`, whose next run replays it)."""
    session.flush()  # the effect's own writes first: their errors are theirs, not the key's
    session.add(IdempotencyKey(user_id=user_id, key=key, fingerprint=request_fingerprint,
                               response=json.dumps(response)))
    try:
        session.flush()
    except IntegrityError as exc:
        raise RunAgain(f"Idempotency-Key {key!r} of user {user_id} was recorded by a "
                       "concurrent request") from exc


def once(session: Session, user_id: int, key: str | None, request_fingerprint: str,
         execute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The JSON answer of `execute()`, run at most once per key: a repeated key answers what
    was recorded. The caller has locked the row that serialises this user's requests."""
    if key is None:
        return execute()
    stored = replay(session, user_id, key, request_fingerprint)
    if stored is not None:
        answer: dict[str, Any] = stored
        return answer
    answer = execute()
    remember(session, user_id, key, request_fingerprint, answer)
    return answer


def purge(session: Session, older_than: datetime, batch: int = 1000) -> int:
    """Delete recorded answers created before `older_than`, at most `batch` of them (small
    deletes keep locks short); returns how many were deleted."""
    ids = list(session.scalars(select(IdempotencyKey.id)
                               .where(IdempotencyKey.created_at < older_than)
                               .order_by(IdempotencyKey.id).limit(batch)))
    if ids:
        session.execute(delete(IdempotencyKey).where(IdempotencyKey.id.in_(ids)))
    return len(ids)
