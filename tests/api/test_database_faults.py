"""Database faults: a MariaDB that is killed, frozen (SIGSTOP) or down at start.

Every database-bound request answers `503 database_unavailable` (problem+json, Retry-After)
quickly, on a keep-alive connection that stays usable; quote reads (Redis only) keep answering
200; and once the database is back, requests succeed again within seconds with no stale
pooled connection failing afterwards. The API starts while the database is down and finishes
its startup work once it returns; the fills worker waits out an outage instead of dying.

The MariaDB here is a private one (tests/support/mariadb_server.py) on a free port, since the
tests kill it. The times printed (`pytest -s`) are what docs/OPERATIONS.md reports; the tests
only bound them generously, so that a regression to a hang fails rather than blocks.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError
from sqlalchemy import Engine, event, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from api.app import create_app
from api.auth.tokens import Principal, TokenType, issue
from api.db import Database, DatabaseDeadlineExceeded, make_engine
from api.fills.worker import FillsWorker
from api.market.rules import Costs
from api.models import Order, Role, User
from api.settings import ApiSettings
from relayer.bus import BusNames
from tests.conftest import RedisServer
from tests.support.api import database
from tests.support.concurrency import concurrently
from tests.support.env import free_port, scaled
from tests.support.mariadb_server import (
    MariaDbServer,
)
from tests.support.platform import environment, start_gunicorn, wait_for
from tests.support.quotes import make_quote, publish_ticks, put

# One private mariadbd at a time, on one test worker (scripts/test.sh runs `--dist loadgroup`):
# these tests time deadlines, which two servers starting at once on two cores would blur.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("mariadb_faults")]

JWT_KEY = "database-faults-signing-key-" + "x" * 32
ADMIN_EMAIL, ADMIN_PASSWORD = "admin@stocking.test", "admin-password-0001"
DEADLINE_S = 2.0  # DATABASE_DEADLINE_S for these tests: short, so that they stay quick
CODE = "A005930"
QUOTE = f"/api/v1/trading/realtime/stock/{CODE}"
ACCOUNT = "/api/v1/account"
# Generous bounds: a request that takes longer than this hung, whatever the machine.
ANSWER_GUARD_S = scaled(DEADLINE_S + 10)
RECOVERY_GUARD_S = scaled(20)


@dataclass
class Api:
    """Gunicorn (one worker, so that one keep-alive connection meets one process)."""

    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def connection(self) -> KeepAlive:
        return KeepAlive(self.port)

    def wait_started(self) -> None:
        wait_for(lambda: "Application startup complete" in self.log.read_text(),
                 "the worker started", 60, self.process, self.log)


@contextlib.contextmanager
def gunicorn(tmp_path: Path, redis_server: RedisServer, database_url: str) -> Iterator[Api]:
    log = tmp_path / "gunicorn.log"
    port = free_port()
    process = start_gunicorn(environment(
        REDIS_URL=redis_server.url, DATABASE_URL=database_url, PORT=str(port),
        WEB_CONCURRENCY="1", JWT_SECRET_KEY=JWT_KEY, STOCKING_ADMIN_EMAIL=ADMIN_EMAIL,
        STOCKING_ADMIN_PASSWORD=ADMIN_PASSWORD, DATABASE_DEADLINE_S=str(DEADLINE_S)), log)
    try:
        yield Api(port, process, log)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class KeepAlive:
    """One HTTP/1.1 connection: every request goes over the same socket, and a server that
    closed it fails the request (http.client would otherwise silently open a new one)."""

    def __init__(self, port: int) -> None:
        self.http = http.client.HTTPConnection("127.0.0.1", port, timeout=ANSWER_GUARD_S)
        self.http.connect()
        self.sock = self.http.sock

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        self.http.request(method, path, None if body is None else json.dumps(body),
                          {"content-type": "application/json", **(headers or {})})
        response = self.http.getresponse()
        payload = response.read()
        assert self.http.sock is self.sock, "the server closed the keep-alive connection"
        return response.status, dict(response.headers), json.loads(payload) if payload else None

    def close(self) -> None:
        self.http.close()


def token(user_id: int, role: Role = Role.USER) -> dict[str, str]:
    principal = Principal(user_id, f"user{user_id}@stocking.test", role)
    return {"Authorization": f"Bearer {issue(principal, TokenType.ACCESS, JWT_KEY, 900)}"}


def assert_database_unavailable(status: int, headers: dict[str, str], body: Any) -> None:
    assert status == 503, body
    assert headers["content-type"] == "application/problem+json"
    assert body["code"] == "database_unavailable", body
    assert int(headers["retry-after"]) > 0


def timed(call: Callable[[], tuple[int, dict[str, str], Any]]
          ) -> tuple[float, tuple[int, dict[str, str], Any]]:
    started = time.monotonic()
    answer = call()
    return time.monotonic() - started, answer


def until_ok(connection: KeepAlive, headers: dict[str, str]) -> float:
    """Seconds until GET /account answers 200; every answer before that must be a 503
    database_unavailable (never a 500)."""
    started = time.monotonic()
    while True:
        status, answer_headers, body = connection.request("GET", ACCOUNT, headers=headers)
        if status == 200:
            return time.monotonic() - started
        assert_database_unavailable(status, answer_headers, body)
        assert time.monotonic() - started < RECOVERY_GUARD_S, "no recovery"
        time.sleep(0.05)


def assert_all_ok_afterwards(connection: KeepAlive, headers: dict[str, str]) -> None:
    """No stale pooled connection fails a request once the database is back."""
    statuses = [connection.request("GET", ACCOUNT, headers=headers)[0] for _ in range(30)]
    assert statuses == [200] * 30


def admin_exists(engine: Engine) -> bool:
    try:
        with engine.connect() as connection:
            return connection.scalar(select(User.id).where(User.email == ADMIN_EMAIL)) is not None
    except DBAPIError:
        return False


def sign_up(connection: KeepAlive) -> dict[str, str]:
    credentials = {"email": "alice@example.com", "password": "test-password-0001"}
    status, _, body = connection.request("POST", "/api/v1/auth/register", credentials)
    assert status == 201, body
    status, _, body = connection.request("POST", "/api/v1/auth/login", credentials)
    assert status == 200, body
    return {"Authorization": f"Bearer {body['access_token']}"}


def test_killed_database_answers_503_at_once_quotes_still_work_and_it_recovers(
        tmp_path: Path, redis_server: RedisServer, mariadb: MariaDbServer) -> None:
    with gunicorn(tmp_path, redis_server, mariadb.new_database()) as api:
        api.wait_started()
        put(redis_server.client(), make_quote(CODE))
        connection = api.connection()
        alice = sign_up(connection)
        assert connection.request("GET", ACCOUNT, headers=alice)[0] == 200

        mariadb.kill()

        took, answer = timed(lambda: connection.request("GET", ACCOUNT, headers=alice))
        assert_database_unavailable(*answer)
        print(f"\nkilled database: 503 after {took * 1000:.0f} ms")
        # Writes and logins too, on the same connection.
        assert_database_unavailable(*connection.request(
            "POST", "/api/v1/orders", {"code": CODE, "side": "BUY", "type": "MARKET",
                                       "quantity": 1}, alice))
        assert_database_unavailable(*connection.request(
            "POST", "/api/v1/auth/login", {"email": "alice@example.com",
                                           "password": "test-password-0001"}))
        status, _, quote = connection.request("GET", QUOTE, headers=alice)
        assert (status, quote["code"]) == (200, CODE)

        mariadb.start()
        print(f"killed database: 200 again {until_ok(connection, alice) * 1000:.0f} ms after "
              "it answers")
        assert_all_ok_afterwards(connection, alice)
        connection.close()
    # 503s are logged as one line each, not as tracebacks of unhandled errors.
    assert "Traceback" not in api.log.read_text()


def test_frozen_database_answers_503_within_the_deadline_and_recovers_when_thawed(
        tmp_path: Path, redis_server: RedisServer, mariadb: MariaDbServer) -> None:
    with gunicorn(tmp_path, redis_server, mariadb.new_database()) as api:
        api.wait_started()
        put(redis_server.client(), make_quote(CODE))
        connection = api.connection()
        alice = sign_up(connection)

        mariadb.freeze()
        try:
            took, answer = timed(lambda: connection.request("GET", ACCOUNT, headers=alice))
            assert_database_unavailable(*answer)
            print(f"\nfrozen database: 503 after {took * 1000:.0f} ms "
                  f"(DATABASE_DEADLINE_S={DEADLINE_S:g})")
            status, _, quote = connection.request("GET", QUOTE, headers=alice)
            assert (status, quote["code"]) == (200, CODE)

            # Many at once: the threads stuck on the frozen server do not starve the rest.
            def account_request(_: int) -> tuple[int, dict[str, str], Any]:
                other = api.connection()
                try:
                    return other.request("GET", ACCOUNT, headers=alice)
                finally:
                    other.close()

            for answer in concurrently(20, account_request):
                assert_database_unavailable(*answer)
        finally:
            mariadb.thaw()
        print(f"frozen database: 200 again {until_ok(connection, alice) * 1000:.0f} ms after "
              "it was thawed")
        assert_all_ok_afterwards(connection, alice)
        connection.close()
    assert "Traceback" not in api.log.read_text()


def test_api_starts_while_the_database_is_down_and_finishes_its_startup_when_it_returns(
        tmp_path: Path, redis_server: RedisServer, mariadb: MariaDbServer) -> None:
    url = mariadb.new_database()
    mariadb.kill()
    with gunicorn(tmp_path, redis_server, url) as api:
        api.wait_started()
        put(redis_server.client(), make_quote(CODE))
        connection = api.connection()
        status, _, quote = connection.request("GET", QUOTE, headers=token(1))
        assert (status, quote["code"]) == (200, CODE)
        assert quote["name"] is None  # the instruments master is in the database: not yet read
        admin_login = {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        assert_database_unavailable(*connection.request("POST", "/api/v1/auth/login",
                                                        admin_login))

        mariadb.start()
        # The admin account is a startup hook's work: it is done once the database answers.
        # (Polled in SQL: failed logins would count towards the login rate limit.)
        started = time.monotonic()
        engine = make_engine(url)
        try:
            while not admin_exists(engine):
                assert time.monotonic() - started < RECOVERY_GUARD_S, "startup never finished"
                time.sleep(0.1)
        finally:
            engine.dispose()
        print(f"\ndown at start: admin account ensured {(time.monotonic() - started) * 1000:.0f}"
              " ms after the database answers")
        status, _, body = connection.request("POST", "/api/v1/auth/login", admin_login)
        assert status == 200, body
        # The master too: quotes name their instrument again.
        while connection.request("GET", QUOTE, headers=token(1))[2]["name"] != "삼성전자":
            assert time.monotonic() - started < RECOVERY_GUARD_S, "the master was never read"
            time.sleep(0.1)
        connection.close()
        assert api.process.poll() is None


def test_fills_worker_waits_out_a_database_outage_and_fills_afterwards(
        redis_server: RedisServer, mariadb: MariaDbServer) -> None:
    settings = ApiSettings(redis_url=redis_server.url, database_url=mariadb.new_database(),
                           jwt_secret_key=SecretStr(JWT_KEY), database_deadline_s=DEADLINE_S)
    store = redis_server.client()
    put(store, make_quote(CODE, price=70_500))
    with TestClient(create_app(settings)) as client:
        response = client.post("/api/v1/auth/register", json={
            "email": "alice@example.com", "password": "test-password-0001"})
        alice = token(response.json()["id"])
        response = client.post("/api/v1/orders", headers=alice, json={
            "code": CODE, "side": "BUY", "type": "LIMIT", "quantity": 10, "price": 70_000,
            "time_in_force": "GTC"})
        assert response.status_code == 201, response.text
        order_id = response.json()["id"]
        db = database(client)

    worker_db = Database(make_engine(settings.database_url, pool_size=2,
                                     connect_timeout_s=1, read_timeout_s=2))
    worker = FillsWorker(worker_db, redis.Redis.from_url(redis_server.url), BusNames(),
                         Costs(Decimal("0.00015")), group="fills",
                         batch_size=100, block_ms=50, idempotency_ttl_s=86_400)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        mariadb.kill()
        publish_ticks(store, make_quote(CODE, price=69_900, volume=50, seq=1))
        time.sleep(1)  # the worker meets the outage
        assert thread.is_alive(), failure
        mariadb.start()
        started = time.monotonic()

        def filled() -> int:
            try:
                return db.call(lambda s: s.scalar(select(Order.filled_quantity)
                                                  .where(Order.id == order_id))) or 0
            except DBAPIError:
                return 0

        while filled() != 10:
            assert thread.is_alive(), failure
            assert time.monotonic() - started < RECOVERY_GUARD_S, "the order never filled"
            time.sleep(0.1)
        print(f"\nfills worker: filled {(time.monotonic() - started) * 1000:.0f} ms after the "
              "database answers")
    finally:
        worker.stopping.set()
        thread.join(timeout=scaled(10))
        worker_db.dispose()
        db.dispose()


async def test_work_past_its_deadline_is_answered_at_the_deadline_and_never_committed(
        database_url: str) -> None:
    """The request stops waiting at its deadline, but its thread cannot be stopped: whatever
    that thread does afterwards must not commit, or a client told 503 would have changed
    something."""
    db = Database(make_engine(database_url), deadline_s=0.5)
    outcomes: queue.Queue[str] = queue.Queue()
    event.listen(db.engine, "commit", lambda _connection: outcomes.put("commit"))
    event.listen(db.engine, "rollback", lambda _connection: outcomes.put("rollback"))

    def slow_registration(session: Session) -> None:
        session.add(User(email="late@example.com", password_hash="x"))
        session.flush()
        time.sleep(1.5)  # the database is slow: the deadline passes meanwhile

    try:
        with pytest.raises(DatabaseDeadlineExceeded):
            await db.run(slow_registration)
        assert outcomes.get(timeout=scaled(10)) == "rollback"  # once the thread is done
        assert db.call(lambda s: s.scalar(select(User.id).where(
            User.email == "late@example.com"))) is None
    finally:
        db.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "mariadb"])
def test_sql_errors_do_not_carry_the_statement_parameters(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'x.db'}"
    else:
        url = request.getfixturevalue("mariadb").new_database()
    engine = make_engine(url)
    secret = "correct horse battery staple"
    try:
        with pytest.raises(DBAPIError) as raised, engine.connect() as connection:
            connection.execute(text("SELECT * FROM no_such_table WHERE secret = :secret"),
                               {"secret": secret})
        assert secret not in str(raised.value)
        assert re.search(r"parameters hidden", str(raised.value))
    finally:
        engine.dispose()


def test_a_read_timeout_that_would_cut_a_lock_wait_is_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="DATABASE_READ_TIMEOUT_S"):
        ApiSettings(database_deadline_s=9.5, database_read_timeout_s=10)
