"""What must hold when one user's requests race (docs/TRADING.md), through the platform as
operators run it: real Gunicorn with two Uvicorn workers, so the races cross processes and the
database, not a lock inside one Python process, is what serialises them.

Every test runs on both databases the project supports: SQLite (the default, a file here) and
MariaDB (a fresh database; skipped loudly when no server is reachable). Each database gets one
Gunicorn for the module; each test its own user.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from api.db import Database, make_engine
from tests.conftest import REDIS_SERVER, RedisServer
from tests.support.concurrency import concurrently
from tests.support.databases import (
    fresh_mysql_database,
    fresh_sqlite_database,
    mysql_unreachable_reason,
)
from tests.support.env import free_port
from tests.support.invariants import assert_invariants
from tests.support.quotes import make_quote, put
from tests.test_platform import environment, http, start_gunicorn, wait_for

pytestmark = pytest.mark.slow

INITIAL = 10_000_000
CODE = "A005930"
_users = itertools.count()


@dataclass
class Platform:
    base: str
    database_url: str
    redis: RedisServer

    def user(self) -> dict[str, str]:
        """A new user (with its 10,000,000 KRW account), as a bearer header."""
        account = {"email": f"racer{next(_users)}@example.com",
                   "password": "racer-password-0001"}
        status, body = http("POST", f"{self.base}/api/v1/auth/register", account)
        assert status == 201, body
        status, body = http("POST", f"{self.base}/api/v1/auth/login", account)
        assert status == 200, body
        return {"authorization": f"Bearer {json.loads(body)['access_token']}"}

    def post(self, path: str, body: dict[str, Any], headers: dict[str, str]
             ) -> tuple[int, Any]:
        status, answer = http("POST", f"{self.base}{path}", body, headers)
        return status, json.loads(answer)

    def get(self, path: str, headers: dict[str, str]) -> Any:
        status, answer = http("GET", f"{self.base}{path}", headers=headers)
        assert status == 200, answer
        return json.loads(answer)

    def quote(self, price: int) -> None:
        client = self.redis.client()
        try:
            put(client, make_quote(CODE, price=price, base=price))
        finally:
            client.close()

    def assert_invariants(self) -> None:
        db = Database(make_engine(self.database_url))
        try:
            assert_invariants(db)
        finally:
            db.dispose()


@contextlib.contextmanager
def database(kind: str, folder: Path) -> Iterator[str]:
    if kind == "sqlite":
        with fresh_sqlite_database(folder) as url:
            yield url
        return
    reason = mysql_unreachable_reason()
    if reason is not None:
        pytest.skip(f"SKIPPED MariaDB run of the concurrency suite: {reason}")
    with fresh_mysql_database() as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", "mariadb"])
def platform(request: pytest.FixtureRequest) -> Iterator[Platform]:
    """Gunicorn (2 workers) on a private Redis and a fresh database of each kind."""
    with tempfile.TemporaryDirectory(prefix="stocking-concurrency-") as name:
        folder = Path(name)
        redis_server = RedisServer(port=free_port(), folder=folder,
                                   real=REDIS_SERVER is not None)
        redis_server.start()
        try:
            with database(request.param, folder) as url:
                port, log = free_port(), folder / "gunicorn.log"
                gunicorn = start_gunicorn(environment(
                    REDIS_URL=redis_server.url, DATABASE_URL=url, PORT=str(port),
                    WEB_CONCURRENCY="2"), log)
                try:
                    wait_for(lambda: len(re.findall(r"Application startup complete",
                                                    log.read_text())) == 2,
                             "two workers started", 60, gunicorn, log)
                    yield Platform(f"http://127.0.0.1:{port}", url, redis_server)
                    platform_log = log.read_text()
                    assert "Traceback" not in platform_log, platform_log
                finally:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(gunicorn.pid, signal.SIGKILL)
                    gunicorn.wait()
        finally:
            redis_server.stop()


def codes(answers: list[tuple[int, Any]]) -> list[tuple[int, str | None]]:
    """(status, problem code or None), sorted: the outcome of a burst at a glance."""
    return sorted((status, body.get("code") if status >= 400 else None)
                  for status, body in answers)


def test_eight_withdrawals_of_thirty_percent_exactly_three_succeed(platform: Platform) -> None:
    user = platform.user()

    answers = concurrently(8, lambda _: platform.post(
        "/api/v1/account/withdraw", {"amount": 3_000_000}, user))

    assert codes(answers) == [(200, None)] * 3 + [(422, "insufficient_funds")] * 5, answers
    assert platform.get("/api/v1/account", user)["cash"] == INITIAL - 9_000_000
    withdrawals = platform.get("/api/v1/transactions?type=WITHDRAW", user)["items"]
    assert [row["amount"] for row in withdrawals] == [-3_000_000] * 3
    platform.assert_invariants()


def test_concurrent_buys_never_hold_more_cash_than_there_is(platform: Platform) -> None:
    user = platform.user()
    platform.quote(70_000)
    # Each resting buy holds 14 * 70,000 + 147 commission = 980,147: the cash covers 10.
    answers = concurrently(20, lambda _: platform.post("/api/v1/orders", {
        "code": CODE, "side": "BUY", "type": "LIMIT", "quantity": 14, "price": 70_000,
        "time_in_force": "GTC"}, user))

    assert codes(answers) == [(201, None)] * 10 + [(422, "insufficient_funds")] * 10, answers
    account = platform.get("/api/v1/account", user)
    assert (account["cash"], account["held_cash"]) == (INITIAL, 10 * 980_147)
    platform.assert_invariants()


def test_concurrent_market_buys_never_overspend(platform: Platform) -> None:
    user = platform.user()
    platform.quote(70_000)
    # Each reserves 10 * 91,000 (the upper limit) + 136 and then costs 700,105: after k fills,
    # 10,000,000 - 700,105 k must still cover the reservation, so k <= 13.
    answers = concurrently(20, lambda _: platform.post("/api/v1/orders", {
        "code": CODE, "side": "BUY", "type": "MARKET", "quantity": 10}, user))

    assert codes(answers) == [(201, None)] * 13 + [(422, "insufficient_funds")] * 7, answers
    account = platform.get("/api/v1/account", user)
    assert (account["cash"], account["held_cash"]) == (INITIAL - 13 * 700_105, 0)
    platform.assert_invariants()


def test_concurrent_sells_of_one_position_never_sell_more_than_held(
        platform: Platform) -> None:
    user = platform.user()
    platform.quote(70_000)
    status, body = platform.post("/api/v1/orders", {
        "code": CODE, "side": "BUY", "type": "MARKET", "quantity": 10}, user)
    assert status == 201, body

    # Half sell at once, half rest above the market (holding their share).
    answers = concurrently(20, lambda i: platform.post("/api/v1/orders", {
        "code": CODE, "side": "SELL", "quantity": 1,
        **({"type": "MARKET"} if i % 2 else {"type": "LIMIT", "price": 80_000,
                                             "time_in_force": "GTC"})}, user))

    assert codes(answers) == [(201, None)] * 10 + [(422, "insufficient_shares")] * 10, answers
    sold = sum(1 for status, body in answers if status == 201 and body["type"] == "MARKET")
    positions = platform.get("/api/v1/portfolio", user)["positions"]
    assert [(p["quantity"], p["held_quantity"]) for p in positions] == (
        [] if sold == 10 else [(10 - sold, 10 - sold)])
    platform.assert_invariants()


@pytest.mark.parametrize("path, body, created", [
    ("/api/v1/account/deposit", {"amount": 7}, 200),
    ("/api/v1/account/withdraw", {"amount": 7}, 200),
    ("/api/v1/orders", {"code": CODE, "side": "BUY", "type": "MARKET", "quantity": 1}, 201),
])
def test_one_idempotency_key_repeated_twenty_times_at_once_has_one_effect(
        platform: Platform, path: str, body: dict[str, Any], created: int) -> None:
    user = platform.user()
    platform.quote(70_000)
    headers = {**user, "Idempotency-Key": "twenty-at-once"}

    answers = concurrently(20, lambda _: platform.post(path, body, headers))

    assert [status for status, _ in answers] == [created] * 20, answers
    assert all(answer == answers[0][1] for _, answer in answers), answers
    if path == "/api/v1/orders":
        assert len(platform.get("/api/v1/orders", user)["items"]) == 1
    else:
        # The opening deposit and the one movement.
        assert len(platform.get("/api/v1/transactions", user)["items"]) == 2
    platform.assert_invariants()
