"""The daily snapshot job (api.performance.snapshots) with its database killed: the job's error
is one the fills worker's loop waits out (api.db.is_unavailable), and the worker, running
through the outage, neither dies nor loses the day: it snapshots it once the database is back.

A private MariaDB (tests/support/mariadb_server.py), since the test kills it; the Redis outage
is tests/api/test_performance.py's."""

from __future__ import annotations

import threading
import time
from datetime import date
from datetime import time as time_of_day
from decimal import Decimal

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from api.app import create_app
from api.db import Database, is_unavailable, make_engine
from api.fills.worker import FillsWorker
from api.market.rules import Costs
from api.models import AccountSnapshot
from api.performance.snapshots import SnapshotJob
from api.settings import ApiSettings
from tests.conftest import RedisServer
from tests.support.api import TEST_JWT_KEY
from tests.support.env import scaled
from tests.support.mariadb_server import (
    MariaDbServer,
)
from tests.support.quotes import NAMES
from tests.support.weekday_calendar import WeekdayCalendar, kst

# One private mariadbd at a time, with the other database fault tests.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("mariadb_faults")]

CALENDAR = WeekdayCalendar()


def test_the_snapshot_job_waits_out_a_database_outage(redis_server: RedisServer,
                                                      mariadb: MariaDbServer) -> None:
    settings = ApiSettings(redis_url=redis_server.url, database_url=mariadb.new_database(),
                           jwt_secret_key=SecretStr(TEST_JWT_KEY))
    with TestClient(create_app(settings)) as client:
        response = client.post("/api/v1/auth/register", json={
            "email": "alice@example.com", "password": "test-password-0001"})
        assert response.status_code == 201, response.text
    # Monday 2026-12-07, after its close (15:30) and the closing print's grace (60 s).
    after_close = kst(date(2026, 12, 7), time_of_day(15, 32))
    db = Database(make_engine(settings.database_url, pool_size=2, connect_timeout_s=1,
                              read_timeout_s=2))
    store = redis.Redis.from_url(redis_server.url)
    mariadb.kill()
    try:
        with pytest.raises(DBAPIError) as raised:
            SnapshotJob(db, store, NAMES, batch_size=10).take_due(CALENDAR, after_close)
        assert is_unavailable(raised.value)  # what the worker's loop waits out

        worker = FillsWorker(db, store, NAMES, Costs(Decimal("0.00015")), group="fills",
                             batch_size=100, block_ms=50, idempotency_ttl_s=86_400,
                             calendar=CALENDAR, clock=lambda: after_close)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        time.sleep(1)  # the worker meets the outage
        assert thread.is_alive()
        mariadb.start()

        def snapshots() -> int:
            try:
                count: int = db.call(lambda s: s.scalar(
                    select(func.count()).select_from(AccountSnapshot)))
                return count
            except DBAPIError:
                return 0

        deadline = time.monotonic() + scaled(20)
        while snapshots() < 1:  # alice's account (no admin in these settings)
            assert thread.is_alive(), "the fills worker died"
            assert time.monotonic() < deadline, "the day was never snapshotted"
            time.sleep(0.1)
        worker.stopping.set()
        thread.join(timeout=scaled(10))
        assert not thread.is_alive()
        assert snapshots() == 1
    finally:
        store.close()
        db.dispose()
