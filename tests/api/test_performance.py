"""Daily snapshots and GET /api/v1/portfolio/history, against the real app, a real Redis
(quotes written where the relayer writes them) and a real database (SQLite, and MariaDB when
reachable). The snapshot job (api.performance.snapshots) runs at moments set by an injected
clock on a calendar where every weekday trades (08:30-15:30 KST); orders and deposits are made
through the API. Every expected figure is worked out by hand in the comments.

The week: Monday 2026-12-07 to Friday 2026-12-11. Days are due at 15:31 (the close, 15:30,
plus the closing print's grace of 60 s); 15:32 is after that.
"""

from __future__ import annotations

import threading
import time as wall
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import event, func, select

from api.fills.worker import FillsWorker
from api.market.rules import Costs
from api.models import AccountSnapshot
from api.performance.service import (
    DailyPoint,
    daily_points,
    max_drawdown_pct,
    total_return_pct,
)
from api.performance.snapshots import SnapshotJob
from api.settings import ApiSettings
from tests.api.test_orders import CODE, account, placed
from tests.conftest import RedisServer
from tests.support.api import assert_problem, database, new_user
from tests.support.quotes import NAMES, make_quote, put
from tests.support.weekday_calendar import WeekdayCalendar, kst

HISTORY = "/api/v1/portfolio/history"
CALENDAR = WeekdayCalendar()
MONDAY = date(2026, 12, 7)
AFTER_CLOSE = (15, 32)


def day(n: int) -> date:
    """The n-th day from Monday 2026-12-07 (0: Monday)."""
    return MONDAY + timedelta(days=n)


def at(n: int, hour: int, minute: int = 0) -> datetime:
    return kst(day(n), time(hour, minute))


def after_close(n: int) -> datetime:
    return at(n, *AFTER_CLOSE)


@pytest.fixture
def job(client: TestClient, store: redis.Redis) -> SnapshotJob:
    """A snapshot job on the app's database and Redis (what the fills worker runs)."""
    return SnapshotJob(database(client), store, NAMES, batch_size=2, pass_budget_s=None)


def price(store: redis.Redis, krw: int) -> None:
    """The latest trade of CODE, as the relayer stores it."""
    put(store, make_quote(CODE, price=krw))


def deposit(client: TestClient, headers: dict[str, str], amount: int) -> None:
    response = client.post("/api/v1/account/deposit", json={"amount": amount}, headers=headers)
    assert response.status_code == 200, response.text


def history(client: TestClient, headers: dict[str, str], now: datetime, path: str = HISTORY,
            **params: str) -> Any:
    """The answer of GET /portfolio/history (or `path`) with the app's clock at `now` on the
    weekday calendar (restored after: orders are placed on the app's own, always-open
    calendar)."""
    app = client.app
    assert isinstance(app, FastAPI)
    resources = app.state.resources
    saved = resources.clock, resources.calendar
    resources.clock, resources.calendar = (lambda: now), CALENDAR
    try:
        response = client.get(path, params=params, headers=headers)
    finally:
        resources.clock, resources.calendar = saved
    return response


def points(answer: Any) -> list[dict[str, Any]]:
    assert answer.status_code == 200, answer.text
    body: list[dict[str, Any]] = answer.json()["points"]
    return body


def snapshot_count(client: TestClient) -> int:
    count: int = database(client).call(
        lambda s: s.scalar(select(func.count()).select_from(AccountSnapshot)))
    return count


def snapshot_days(client: TestClient) -> list[date]:
    """The days snapshotted (each once per account: one list entry per day)."""
    days: list[date] = database(client).call(lambda s: list(s.scalars(
        select(AccountSnapshot.day).distinct().order_by(AccountSnapshot.day))))
    return days


def buy_20_at_50000(client: TestClient, store: redis.Redis, headers: dict[str, str]) -> None:
    # 20 x 50,000 = 1,000,000, commission floor(1,000,000 x 0.015%) = 150:
    # cash 10,000,000 - 1,000,150 = 8,999,850; book cost 1,000,150.
    price(store, 50_000)
    placed(client, headers, side="BUY", type="MARKET", quantity=20)


# --------------------------------------------------------------------------------------------


def test_a_deposit_is_capital_not_a_gain_and_a_sale_shows_its_costs(
        client: TestClient, store: redis.Redis, job: SnapshotJob,
        alice: dict[str, str]) -> None:
    buy_20_at_50000(client, store, alice)
    price(store, 55_000)
    job.take_due(CALENDAR, after_close(0))
    # Monday: E = 8,999,850 + 20 x 55,000 = 10,099,850; the first snapshot counts every flow
    # since the opening: F = 10,000,000 (the opening credit), base 0.
    # pnl = 10,099,850 - 0 - 10,000,000 = 99,850; r = 10,099,850 / 10,000,000 - 1 = 0.9985%.

    deposit(client, alice, 1_000_000)
    price(store, 60_500)
    job.take_due(CALENDAR, after_close(1))
    # Tuesday: cash 9,999,850, E = 9,999,850 + 20 x 60,500 = 11,209,850, F = 1,000,000.
    # pnl = 11,209,850 - 10,099,850 - 1,000,000 = 110,000 (20 x 5,500: the deposit is no gain)
    # r = 11,209,850 / (10,099,850 + 1,000,000) - 1 = 110,000 / 11,099,850 = 0.99100438%
    # cumulative = 1.009985 x 1.0099100438 - 1 = 1.99939...% -> 1.9994%

    price(store, 60_000)
    placed(client, alice, side="SELL", type="MARKET", quantity=10)
    job.take_due(CALENDAR, after_close(2))
    # Wednesday, a sale of 10 x 60,000 = 600,000: commission floor(600,000 x 0.015%) = 90,
    # taxes (KOSPI, 2026) floor(600,000 x 0.05%) = 300 + floor(600,000 x 0.15%) = 900 = 1,200;
    # the book cost sold: 1,000,150 / 2 = 500,075 -> realized 600,000 - 90 - 1,200 - 500,075
    # = 98,635. Cash 9,999,850 + 600,000 - 90 - 1,200 = 10,598,560.
    # E = 10,598,560 + 10 x 60,000 = 11,198,560; pnl = 11,198,560 - 11,209,850 = -11,290
    # (the 20 shares fell 500 each: -10,000, and the costs: -1,290).
    # r = -11,290 / 11,209,850 = -0.100715% -> -0.1007%
    # cumulative = 1.0199939 x 0.99899285 - 1 = 1.8967%

    answer = history(client, alice, at(3, 10), period="1W")  # Thursday 10:00
    body = answer.json()
    got = points(answer)
    assert [p["date"] for p in got] == ["2026-12-07", "2026-12-08", "2026-12-09",
                                        "2026-12-10"]
    monday, tuesday, wednesday, live = got
    assert {k: monday[k] for k in ("equity", "cash", "market_value", "net_flows", "pnl",
                                   "return_pct", "cumulative_return_pct", "realized_pnl",
                                   "fees", "taxes", "late", "live")} == {
        "equity": 10_099_850, "cash": 8_999_850, "market_value": 1_100_000,
        "net_flows": 10_000_000, "pnl": 99_850, "return_pct": "0.9985",
        "cumulative_return_pct": "0.9985", "realized_pnl": 0, "fees": 150, "taxes": 0,
        "late": False, "live": False}
    assert (tuesday["equity"], tuesday["net_flows"], tuesday["pnl"], tuesday["return_pct"],
            tuesday["cumulative_return_pct"], tuesday["fees"]) == (
        11_209_850, 1_000_000, 110_000, "0.9910", "1.9994", 0)
    assert (wednesday["equity"], wednesday["cash"], wednesday["net_flows"], wednesday["pnl"],
            wednesday["realized_pnl"], wednesday["fees"], wednesday["taxes"],
            wednesday["return_pct"], wednesday["cumulative_return_pct"]) == (
        11_198_560, 10_598_560, 0, -11_290, 98_635, 90, 1_200, "-0.1007", "1.8967")
    # Thursday's live point: nothing happened since Wednesday's close, at the same quote.
    assert (live["live"], live["equity"], live["pnl"], live["return_pct"],
            live["cumulative_return_pct"]) == (True, 11_198_560, 0, "0.0000", "1.8967")
    # The simple view counts the deposit: equity went from 0 to 11,198,560 on flows of
    # 11,000,000; the P&L is what is left: 99,850 + 110,000 - 11,290 = 198,560.
    assert (body["base_equity"], body["net_flows"], body["pnl"], body["return_pct"]) == (
        0, 11_000_000, 198_560, "1.8967")
    # The largest fall of the index: from 1.0199939 to 1.0189667, -0.1007% of the peak.
    assert body["max_drawdown_pct"] == "0.1007"
    # GET /stats reports the same period's return and drawdown.
    stats = history(client, alice, at(3, 10), path="/api/v1/stats", period="1W").json()
    assert (stats["total_return_pct"], stats["max_drawdown_pct"]) == ("1.8967", "0.1007")


def test_history_of_a_period_starts_from_the_snapshot_before_it(
        client: TestClient, store: redis.Redis, job: SnapshotJob,
        alice: dict[str, str]) -> None:
    price(store, 50_000)
    for n in range(5):  # Monday to Friday, nothing held: flat at 10,000,000
        job.take_due(CALENDAR, after_close(n))
    deposit(client, alice, 2_000_000)
    job.take_due(CALENDAR, after_close(7))  # the next Monday, 2026-12-14
    # 1W from Tuesday 2026-12-15: the points after 2026-12-08; the first one's base is
    # Tuesday 12-08's equity (10,000,000), not 0.
    body = history(client, alice, at(8, 10), period="1W").json()
    assert [p["date"] for p in body["points"]] == [
        "2026-12-09", "2026-12-10", "2026-12-11", "2026-12-14", "2026-12-15"]
    assert body["base_equity"] == 10_000_000
    assert [p["net_flows"] for p in body["points"]] == [0, 0, 0, 2_000_000, 0]
    assert (body["pnl"], body["return_pct"], body["max_drawdown_pct"]) == (0, "0.0000",
                                                                          "0.0000")
    # all: from the opening (base 0, the opening credit as the first flow).
    body = history(client, alice, at(8, 10), period="all").json()
    assert len(body["points"]) == 7 and body["base_equity"] == 0
    assert body["net_flows"] == 12_000_000


def test_missed_days_are_caught_up_late_and_a_rerun_writes_nothing(
        client: TestClient, store: redis.Redis, job: SnapshotJob, api_settings: ApiSettings,
        alice: dict[str, str]) -> None:
    bob = new_user(client, api_settings, "bob@example.com")
    new_user(client, api_settings, "carol@example.com")
    price(store, 50_000)
    # Monday: 4 accounts (the admin's, which the app opens at start, and 3 users'), in
    # batches of 2.
    assert job.take_due(CALENDAR, after_close(0)) == 4
    # The worker is down from Tuesday to the next Monday morning; meanwhile alice deposits.
    deposit(client, alice, 500_000)
    price(store, 52_000)
    buy_20_at_50000(client, store, bob)
    price(store, 52_000)
    restarted = SnapshotJob(database(client), store, NAMES, batch_size=2, pass_budget_s=None)
    assert restarted.take_due(CALENDAR, at(7, 9)) == 16  # Tue-Fri, 4 accounts each
    # Again, by the same job and by a second one: nothing more.
    assert restarted.take_due(CALENDAR, at(7, 9)) == 0
    assert SnapshotJob(database(client), store, NAMES, batch_size=1,
                       pass_budget_s=None).take_due(CALENDAR, at(7, 9)) == 0
    assert snapshot_count(client) == 20

    got = points(history(client, alice, at(7, 10), period="1W"))
    # 1W from Monday 2026-12-14: the points after 2026-12-07, Tue-Fri (late), and the live
    # point of Monday 2026-12-14.
    assert [(p["date"], p["late"]) for p in got] == [
        ("2026-12-08", True), ("2026-12-09", True), ("2026-12-10", True),
        ("2026-12-11", True), ("2026-12-14", False)]
    # The first missed day takes what happened since Monday's snapshot: the deposit is a flow
    # (500,000), so no gain; the later ones repeat its equity.
    assert [(p["equity"], p["net_flows"], p["pnl"]) for p in got] == [
        (10_500_000, 500_000, 0), (10_500_000, 0, 0), (10_500_000, 0, 0),
        (10_500_000, 0, 0), (10_500_000, 0, 0)]
    # bob bought 20 at 50,000 (cash 8,999,850) valued at 52,000: 8,999,850 + 1,040,000 =
    # 10,039,850; pnl on Tuesday 10,039,850 - 10,000,000 = 39,850.
    got = points(history(client, bob, at(7, 10), period="1W"))
    assert [(p["equity"], p["pnl"], p["fees"]) for p in got[:2]] == [
        (10_039_850, 39_850, 150), (10_039_850, 0, 0)]


def test_a_pass_stops_at_its_budget_and_the_next_goes_on(
        client: TestClient, store: redis.Redis, api_settings: ApiSettings,
        alice: dict[str, str]) -> None:
    new_user(client, api_settings, "bob@example.com")
    new_user(client, api_settings, "carol@example.com")
    # 4 accounts (the admin's too) in batches of 3, with no time to spare: one batch a pass.
    job = SnapshotJob(database(client), store, NAMES, batch_size=3, pass_budget_s=0)
    assert job.take_due(CALENDAR, after_close(0)) == 3
    assert job.done_through is None  # Monday is not done yet
    assert job.take_due(CALENDAR, after_close(0)) == 1
    assert job.take_due(CALENDAR, after_close(0)) == 0
    assert job.done_through == day(0) and snapshot_count(client) == 4


def test_another_users_snapshots_are_never_shown(
        client: TestClient, store: redis.Redis, job: SnapshotJob, api_settings: ApiSettings,
        alice: dict[str, str]) -> None:
    bob = new_user(client, api_settings, "bob@example.com")
    buy_20_at_50000(client, store, bob)
    price(store, 40_000)
    job.take_due(CALENDAR, after_close(0))
    deposit(client, bob, 3_000_000)
    job.take_due(CALENDAR, after_close(1))
    # alice did nothing: 10,000,000 each day, her opening credit as her only flow.
    got = points(history(client, alice, at(2, 10), period="all"))
    assert [(p["equity"], p["net_flows"], p["pnl"]) for p in got] == [
        (10_000_000, 10_000_000, 0), (10_000_000, 0, 0), (10_000_000, 0, 0)]
    # bob: 8,999,850 + 20 x 40,000 = 9,799,850 on Monday (pnl -200,150), and Tuesday his
    # deposit: 12,799,850, flow 3,000,000, pnl 0.
    got = points(history(client, bob, at(2, 10), period="all"))
    assert [(p["equity"], p["net_flows"], p["pnl"]) for p in got] == [
        (9_799_850, 10_000_000, -200_150), (12_799_850, 3_000_000, 0), (12_799_850, 0, 0)]


def test_all_time_pnl_is_the_accounts_realized_plus_unrealized(
        client: TestClient, store: redis.Redis, job: SnapshotJob,
        alice: dict[str, str]) -> None:
    buy_20_at_50000(client, store, alice)
    price(store, 51_000)
    job.take_due(CALENDAR, after_close(0))
    price(store, 53_000)
    placed(client, alice, side="SELL", type="MARKET", quantity=5)
    deposit(client, alice, 100_000)
    job.take_due(CALENDAR, after_close(1))
    price(store, 49_000)
    body = history(client, alice, at(2, 11), period="all").json()
    summary = account(client, alice)  # at the same quote, 49,000
    # equity - every flow = realized + unrealized (api.portfolio): the sum of the days' P&L.
    assert body["pnl"] == summary["realized_pnl"] + summary["unrealized_pnl"]
    assert body["points"][-1]["equity"] == summary["equity"]
    assert body["net_flows"] == 10_100_000
    # By hand: 15 held at 49,000 = 735,000, book cost 1,000,150 - floor(1,000,150 x 5/20) =
    # 1,000,150 - 250,037 = 750,113 -> unrealized -15,113; the sale of 5 x 53,000 = 265,000:
    # commission 39, taxes 132 + 397 = 529, realized 265,000 - 39 - 529 - 250,037 = 14,395.
    assert (summary["unrealized_pnl"], summary["realized_pnl"]) == (-15_113, 14_395)
    assert body["pnl"] == -718


@pytest.mark.parametrize("params", [{"period": "2W"}, {"period": ""}, {"timeframe": "5Min"},
                                    {"period": "1D", "timeframe": "1D"}])
def test_a_bad_period_or_timeframe_is_422_and_changes_nothing(
        client: TestClient, store: redis.Redis, job: SnapshotJob, alice: dict[str, str],
        params: dict[str, str]) -> None:
    job.take_due(CALENDAR, after_close(0))
    before = snapshot_count(client)
    assert_problem(history(client, alice, at(1, 10), **params), 422, "validation_error")
    assert snapshot_count(client) == before == 2  # alice's and the admin's accounts


def test_the_history_needs_a_token(client: TestClient) -> None:
    assert_problem(client.get(HISTORY), 401, "not_authenticated")


def point(equity: int, base: int, flows: int = 0) -> DailyPoint:
    return DailyPoint(day=MONDAY, equity=equity, cash=equity, market_value=0, base_equity=base,
                      net_flows=flows, realized_pnl=0, realized_pnl_day=0, fees=0, taxes=0,
                      unpriced_positions=0)


def test_total_return_and_max_drawdown_by_hand() -> None:
    # +10%, then a deposit of 1,000 with -20% (base 1,100 + 1,000 = 2,100 -> 1,680), then +25%
    # (1,680 -> 2,100). Index: 1.1, 0.88, 1.1. Total: 1.1 x 0.8 x 1.25 - 1 = 10%.
    # Drawdown: from the peak 1.1 to 0.88: 0.22 / 1.1 = 20%.
    days = [point(1_100, 1_000), point(1_680, 1_100, 1_000), point(2_100, 1_680)]
    assert total_return_pct(days) == Decimal("10.0000")
    assert max_drawdown_pct(days) == Decimal("20.0000")
    # A first day's loss counts against the starting index of 1: -5%, then +1%:
    # 0.95, 0.9595 -> drawdown 5%; total 0.95 x 1.01 - 1 = -4.05%.
    days = [point(950, 1_000), point(9_595, 9_500)]
    assert (total_return_pct(days), max_drawdown_pct(days)) == (Decimal("-4.0500"),
                                                                Decimal("5.0000"))
    # Nothing at work (everything withdrawn): a return of 0, not a division by zero.
    assert total_return_pct([point(0, 1_000, -1_000)]) == Decimal("0.0000")
    assert total_return_pct([]) is None and max_drawdown_pct([]) is None


# --------------------------------------------------------------------------------------------
# The fills worker runs the job


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def weekday_worker_on(client: TestClient, store: redis.Redis, clock: Clock) -> FillsWorker:
    """A fills worker on the weekday calendar at `clock`, on the app's database."""
    return FillsWorker(database(client), store, NAMES, Costs(Decimal("0.00015")),
                       group="fills", batch_size=100, block_ms=10, idempotency_ttl_s=86_400,
                       calendar=CALENDAR, clock=clock, snapshot_batch_size=50)


def weekday_worker(client: TestClient, store: redis.Redis, clock: Clock) -> FillsWorker:
    worker = weekday_worker_on(client, store, clock)
    worker.ensure_group()
    return worker


def wait_until(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = wall.monotonic() + timeout_s
    while not condition():
        assert wall.monotonic() < deadline, "timed out"
        wall.sleep(0.05)


def test_the_worker_snapshots_each_account_after_the_close(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    clock = Clock(after_close(0))
    weekday_worker(client, store, clock).housekeeping()
    assert snapshot_days(client) == [day(0)]
    # Tuesday at the close: the closing auction's print may still come (60 s of grace).
    clock.now = at(1, 15, 30)
    weekday_worker(client, store, clock).housekeeping()
    assert snapshot_days(client) == [day(0)]
    clock.now = after_close(1)
    weekday_worker(client, store, clock).housekeeping()
    assert snapshot_days(client) == [day(0), day(1)]


def test_the_job_rides_out_a_redis_outage(client: TestClient, real_redis_server: RedisServer,
                                          alice: dict[str, str]) -> None:
    store = real_redis_server.client()
    buy_20_at_50000(client, store, alice)
    job = SnapshotJob(database(client), store, NAMES, batch_size=2, pass_budget_s=None)
    real_redis_server.stop()
    with pytest.raises(RedisConnectionError):  # the worker's loop waits such an error out
        job.take_due(CALENDAR, after_close(0))
    assert snapshot_count(client) == 0

    # The worker itself, running through the outage: it does not exit. Once Redis is back
    # (empty, as after a restart), it goes on, and snapshots the day when it is due.
    clock = Clock(at(0, 15))
    worker = weekday_worker_on(client, real_redis_server.client(), clock)
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()
    try:
        wall.sleep(0.5)
        assert runner.is_alive() and snapshot_count(client) == 0
        real_redis_server.start()
        store = real_redis_server.client()
        price(store, 51_000)
        clock.now = after_close(0)
        # Monday's, whose quote was written before it was due. (A worker back between the
        # restart and that write may first take Friday's close, due at 15:00 on a first run,
        # without the quote: seen under CI's load. That is right, and not what this checks.)
        wait_until(lambda: day(0) in snapshot_days(client))
    finally:
        worker.stopping.set()
        runner.join(timeout=15)
        worker.redis.close()
        store.close()
    assert not runner.is_alive()
    # 8,999,850 + 20 x 51,000 = 10,019,850: priced at the quote written after the restart.
    equity, unpriced, late = database(client).call(lambda s: s.execute(
        select(AccountSnapshot.equity, AccountSnapshot.unpriced_positions, AccountSnapshot.late)
        .where(AccountSnapshot.day == day(0), AccountSnapshot.equity != 10_000_000)).one())
    assert (equity, unpriced, late) == (10_019_850, 0, False)


# --------------------------------------------------------------------------------------------
# A year of points through the (user_id, day) index


def years_of_snapshots(user_id: int, days: int) -> list[AccountSnapshot]:
    return [AccountSnapshot(user_id=user_id, day=MONDAY - timedelta(days=n), cash=1, market_value=0,
                            equity=1, base_equity=1, net_flows=0, realized_pnl=0, fees=0, taxes=0,
                            ledger_upto=0, unpriced_positions=0, priced_at=after_close(0),
                            late=False)
            for n in range(days)]


def test_a_years_history_reads_the_user_day_index(client: TestClient, api_settings: ApiSettings,
                                                   alice: dict[str, str]) -> None:
    bob = new_user(client, api_settings, "bob@example.com")
    ids = [client.get("/api/v1/users/me", headers=h).json()["id"] for h in (alice, bob)]
    db = database(client)
    db.call(lambda s: s.add_all([row for user_id in ids for row in years_of_snapshots(user_id,
                                                                                      800)]))
    statements: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "account_snapshots" in statement:
            statements.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        year = db.call_read(daily_points, ids[0], MONDAY - timedelta(days=365), MONDAY)
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert len(year) == 365 and {p.equity for p in year} == {1}
    sqlite = db.engine.dialect.name == "sqlite"
    assert len(statements) == 2  # the row before the period, and the period
    with db.engine.connect() as conn:
        for statement, parameters in statements:
            plan = conn.exec_driver_sql(("EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN ")
                                        + statement, parameters).all()
            # SQLite names the UNIQUE constraint's index sqlite_autoindex_account_snapshots_N.
            assert ("USING INDEX" in str(plan) and "(user_id=? AND day" in str(plan) if sqlite
                    else "uq_account_snapshots_user_id_day" in str(plan)), plan
