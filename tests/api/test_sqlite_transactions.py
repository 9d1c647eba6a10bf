"""How units of work begin on SQLite (api.db): a unit that may write takes the write lock at
BEGIN (so it never decides on stale rows), a read-only unit reads a WAL snapshot without waiting
for the writer and may not write. The races through real Gunicorn are tests/test_concurrency.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from api.db import Database, make_engine
from api.ledger import service
from api.models import Account, LedgerType, Role, User
from tests.support.databases import fresh_sqlite_database
from tests.support.env import scaled


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    with fresh_sqlite_database(tmp_path) as url:
        # A short busy timeout: a unit of work that cannot get the write lock fails soon.
        database = Database(make_engine(url, busy_timeout_s=0.2))
        yield database
        database.dispose()


@pytest.fixture
def user_id(db: Database) -> int:
    def make_user(session: Session) -> int:
        user = User(email="solo@example.com", password_hash="x", role=Role.USER.value)
        session.add(user)
        session.flush()
        service.open_account(session, user.id, 1_000)
        return user.id
    return db.call(make_user)


def cash(session: Session, user_id: int) -> int:
    return int(session.scalar(select(Account.cash).where(Account.user_id == user_id)) or 0)


def test_while_one_unit_of_work_writes_another_cannot_even_read(
        db: Database, user_id: int) -> None:
    holding, release = threading.Event(), threading.Event()

    def deposit_and_wait(session: Session) -> None:
        service.post(session, service.take_user_lock(session, user_id), LedgerType.DEPOSIT, 500)
        session.flush()
        holding.set()
        assert release.wait(scaled(30))

    writer = threading.Thread(target=db.call, args=(deposit_and_wait,))
    writer.start()
    try:
        assert holding.wait(scaled(30))
        # Before api.db began every unit with BEGIN IMMEDIATE, this read 1,000 (the cash before
        # the uncommitted deposit) and would have decided on it.
        with pytest.raises(OperationalError, match="database is locked"):
            db.call(cash, user_id)
        # A read-only unit does not wait: it reads the snapshot before the deposit.
        assert db.call_read(cash, user_id) == 1_000
    finally:
        release.set()
        writer.join(scaled(30))
    assert db.call(cash, user_id) == db.call_read(cash, user_id) == 1_500


def test_a_read_only_unit_of_work_may_not_write(db: Database, user_id: int) -> None:
    def sneaky_deposit(session: Session) -> None:
        service.post(session, service.take_user_lock(session, user_id), LedgerType.DEPOSIT, 1)

    with pytest.raises(OperationalError, match="readonly database"):
        db.call_read(sneaky_deposit)
    # The same pooled connection writes again in an ordinary unit of work.
    db.call(sneaky_deposit)
    assert db.call_read(cash, user_id) == 1_001
