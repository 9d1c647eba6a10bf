"""The second guard of Idempotency-Key (api.idempotency): two transactions that both got past
the check, because nothing serialised them, still give one effect and one answer, not a 500.

The routes serialise a user's requests before the check (the account lock; on SQLite the write
lock), so this race needs a caller that takes no such lock, and MariaDB (on SQLite every unit of
work that may write is serialised): the second transaction passes the check, then the first
commits the same key, then the second records it and collides.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from api import idempotency
from api.db import Database, make_engine
from api.models import IdempotencyKey, Role, User, Watchlist
from tests.support.env import scaled


@pytest.fixture
def db(mysql_database_url: str) -> Iterator[Database]:
    database = Database(make_engine(mysql_database_url, pool_size=4))
    yield database
    database.dispose()


def test_a_key_recorded_by_a_concurrent_transaction_replays_its_answer(db: Database) -> None:
    def make_user(session: Session) -> int:
        user = User(email="twice@example.com", password_hash="x", role=Role.USER.value)
        session.add(user)
        session.flush()
        return user.id
    user_id = db.call(make_user)
    fingerprint = idempotency.fingerprint("POST", "/test", {"n": 1})
    second_checked = threading.Event()
    first_committed = threading.Event()
    executed: list[str] = []

    def request(session: Session, name: str) -> dict[str, Any]:
        def execute() -> dict[str, Any]:
            executed.append(name)
            if name == "second":  # it found no key; now the first commits that key
                second_checked.set()
                assert first_committed.wait(scaled(30))
            session.add(Watchlist(user_id=user_id, name=name))  # the effect
            return {"by": name}
        return idempotency.once(session, user_id, "k", fingerprint, execute)

    answers: dict[str, dict[str, Any]] = {}
    second = threading.Thread(target=lambda: answers.update(
        second=db.call_retrying(request, "second")))
    second.start()
    try:
        assert second_checked.wait(scaled(30))
        answers["first"] = db.call_retrying(request, "first")
    finally:
        first_committed.set()
        second.join(scaled(30))

    assert answers == {"first": {"by": "first"}, "second": {"by": "first"}}
    assert executed == ["second", "first"]  # both executed; the second ran again and replayed
    names = db.call(lambda session: list(session.scalars(select(Watchlist.name))))
    assert names == ["first"]  # the second's effect was rolled back
    assert db.call(lambda session: len(session.scalars(select(IdempotencyKey)).all())) == 1
