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
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from api.db import Database, make_engine
from api.fills.worker import FillsWorker
from api.market.rules import Costs
from api.models import Fill
from relayer.bus import BusNames
from tests.conftest import REDIS_SERVER, RedisServer
from tests.support.concurrency import concurrently
from tests.support.databases import (
    fresh_mysql_database,
    fresh_sqlite_database,
    mysql_unreachable_reason,
)
from tests.support.env import API_REDIS_TIMEOUT_S, free_port
from tests.support.invariants import assert_invariants
from tests.support.platform import environment, http, start_gunicorn, wait_for
from tests.support.quotes import make_quote, publish_ticks, put

# Its module-scoped servers on one test worker (scripts/test.sh runs `--dist loadgroup`).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("concurrency")]

INITIAL = 10_000_000
CODE = "A005930"
HYNIX = "A000660"  # the one print's test, alone on it
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

    def quote(self, price: int, code: str = CODE) -> None:
        client = self.redis.client()
        try:
            put(client, make_quote(code, price=price, base=price))
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
                # Redis timeouts as the in-process tests have them (tests/support/api.py): on
                # two cores running four test workers beside it, a worker's loop can lag past
                # the production 0.5 s with 20 requests in flight, a 503 that says nothing
                # about the money rules tested here (seen in CI).
                gunicorn = start_gunicorn(environment(
                    REDIS_URL=redis_server.url, DATABASE_URL=url, PORT=str(port),
                    WEB_CONCURRENCY="2", API_REDIS_TIMEOUT_S=str(API_REDIS_TIMEOUT_S)), log)
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
    platform.quote(70_100)  # the buys below are under the last trade: they rest
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


def test_one_print_gives_its_volume_once_across_workers_users_and_the_fills_worker(
        platform: Platform) -> None:
    """Ten IOC buys from five users through both Gunicorn workers, and the fills worker with
    three resting buys, all reach for one 7-share print at once: 7 shares are given in all
    (docs/TRADING.md, "One print's volume"). An instrument of its own: the platform is shared
    by the module's tests, and a resting order another test left on theirs would take from the
    print too."""
    traders = [platform.user() for _ in range(5)]
    platform.quote(71_000, HYNIX)
    resting = [platform.post("/api/v1/orders", {
        "code": HYNIX, "side": "BUY", "type": "LIMIT", "quantity": 3, "price": 70_000,
        "time_in_force": "GTC"}, who)[1] for who in traders[:3]]
    store = platform.redis.client()
    db = Database(make_engine(platform.database_url))
    worker = FillsWorker(db, store, BusNames(), Costs(Decimal("0.00015")), group="fills",
                         batch_size=100, block_ms=10, idempotency_ttl_s=86_400)
    try:
        worker.ensure_group()
        [print_id] = publish_ticks(store, make_quote(HYNIX, price=70_000, base=71_000,
                                                     volume=7, seq=2))

        def race(index: int) -> Any:
            if index == 10:
                while not worker.step():
                    pass
                return None
            return platform.post("/api/v1/orders", {
                "code": HYNIX, "side": "BUY", "type": "LIMIT", "quantity": 3, "price": 70_000,
                "time_in_force": "IOC"}, traders[index % 5])

        answers = concurrently(11, race)

        assert [status for status, _ in answers[:10]] == [201] * 10, answers
        given = db.call(lambda s: s.scalar(select(func.sum(Fill.quantity))
                                           .where(Fill.tick_id == print_id)))
        assert given == 7
        assert (sum(body["filled_quantity"] for _, body in answers[:10])
                + sum(platform.get(f"/api/v1/orders/{o['id']}", who)["filled_quantity"]
                      for o, who in zip(resting, traders, strict=False))) == 7
    finally:
        store.close()
        db.dispose()
    platform.assert_invariants()
