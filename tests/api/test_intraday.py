"""Intraday samples (api.performance.intraday) and today's series in GET
/api/v1/portfolio/history?period=1D, against the real app, a real Redis (quotes written where the
relayer writes them) and a real database, on SQLite and on MariaDB. The job runs at moments set
by an injected clock on a calendar where every weekday trades (08:30 opening auction, 09:00
open, 15:20 closing auction, 15:30 close, KST); orders and deposits go through the API. Every
expected figure is worked out by hand in the comments.

The week: Monday 2026-12-07 to Friday 2026-12-11 (tests/api/test_performance.py's).
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import func, select

from api.models import IntradaySnapshot, Portfolio
from api.performance.intraday import IntradayJob, purge_samples, slot_of
from api.performance.snapshots import SnapshotJob
from api.settings import ApiSettings
from relayer.market_calendar import AlwaysOpen
from tests.api.test_orders import placed
from tests.api.test_performance import (
    CALENDAR,
    Clock,
    after_close,
    at,
    buy_20_at_50000,
    deposit,
    history,
    price,
    weekday_worker_on,
)
from tests.conftest import RedisServer
from tests.support.api import assert_problem, database, new_user
from tests.support.databases import database_url_on_both_backends  # noqa: F401
from tests.support.quotes import NAMES
from tests.support.weekday_calendar import kst

PORTFOLIOS = "/api/v1/portfolios"


def intraday_job(client: TestClient, store: redis.Redis, *, batch_size: int = 2,
                 pass_budget_s: float | None = None) -> IntradayJob:
    """An intraday job on the app's database and Redis (what the fills worker runs)."""
    return IntradayJob(database(client), store, NAMES, interval_s=300, retention_days=7,
                       batch_size=batch_size, pass_budget_s=pass_budget_s)


@pytest.fixture
def job(client: TestClient, store: redis.Redis) -> IntradayJob:
    return intraday_job(client, store)


def sample_times(client: TestClient, user_id: int | None = None) -> list[datetime]:
    """The distinct sample times stored (of one account, or of any), oldest first."""
    query = select(IntradaySnapshot.at).distinct().order_by(IntradaySnapshot.at)
    if user_id is not None:
        query = query.where(IntradaySnapshot.user_id == user_id)
    times: list[datetime] = database(client).call(lambda s: list(s.scalars(query)))
    return times


def sample_count(client: TestClient) -> int:
    count = database(client).call(
        lambda s: s.scalar(select(func.count()).select_from(IntradaySnapshot)))
    return int(count or 0)


def user_id_of(client: TestClient, headers: dict[str, str]) -> int:
    answer: int = client.get("/api/v1/users/me", headers=headers).json()["id"]
    return answer


def intraday(client: TestClient, headers: dict[str, str], now: datetime,
             **params: str) -> Any:
    """The 200 answer of GET /portfolio/history?period=1D at `now` on the weekday calendar."""
    response = history(client, headers, now, **{"period": "1D", **params})
    assert response.status_code == 200, response.text
    return response.json()


def utc(moment: datetime) -> str:
    """A time as the API writes it (UTC, ISO 8601)."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------------------------
# The job: when, whom, once


def test_samples_are_taken_at_the_slots_of_a_session_only(
        client: TestClient, store: redis.Redis, job: IntradayJob,
        alice: dict[str, str]) -> None:
    # 2 accounts: alice's and the admin's (opened by the app at start).
    assert job.take_due(CALENDAR, at(0, 8, 29)) == 0  # before the opening auction
    assert job.take_due(CALENDAR, at(0, 8, 30)) == 2  # the opening auction is a session
    assert job.take_due(CALENDAR, at(0, 8, 34) + timedelta(seconds=59)) == 0  # same slot
    assert job.take_due(CALENDAR, at(0, 8, 35) + timedelta(seconds=1)) == 2
    assert job.take_due(CALENDAR, at(0, 12, 7)) == 2  # 12:05, valued at 12:07
    assert job.take_due(CALENDAR, at(0, 15, 29)) == 2  # 15:25, the closing auction
    assert job.take_due(CALENDAR, at(0, 15, 30)) == 0  # the close: no session
    assert job.take_due(CALENDAR, at(0, 20)) == 0  # the evening
    assert job.take_due(CALENDAR, at(5, 11)) == 0  # Saturday
    assert sample_times(client) == [at(0, 8, 30), at(0, 8, 35), at(0, 12, 5), at(0, 15, 25)]
    assert sample_count(client) == 8
    # `always_open`: every slot is in a session, Saturday night too; 4:07 KST is slot 4:05.
    saturday_night = kst(at(5, 4).date(), time(4, 7))
    assert job.take_due(AlwaysOpen(), saturday_night) == 2
    assert sample_times(client)[-1] == kst(saturday_night.date(), time(4, 5))
    # The slots are the interval's multiples of UTC epoch seconds: 9:00 KST is 00:00 UTC.
    assert slot_of(at(0, 9, 4), 300) == at(0, 9) == datetime(2026, 12, 7, 0, 0, tzinfo=UTC)


def test_a_rerun_or_a_second_worker_writes_nothing_twice_and_a_pass_keeps_its_budget(
        client: TestClient, store: redis.Redis, api_settings: ApiSettings,
        alice: dict[str, str]) -> None:
    new_user(client, api_settings, "bob@example.com")
    # 3 accounts, one a batch, no time to spare: one batch a pass, the next pass goes on.
    job = intraday_job(client, store, batch_size=1, pass_budget_s=0)
    assert [job.take_due(CALENDAR, at(0, 10, minute)) for minute in (0, 1, 2, 3)] == [
        1, 1, 1, 0]
    assert job.done_slot == at(0, 10)
    # A restarted job, and a second one: the slot is asked again and nothing is written.
    assert intraday_job(client, store).take_due(CALENDAR, at(0, 10, 4)) == 0
    assert intraday_job(client, store, batch_size=5).take_due(CALENDAR, at(0, 10)) == 0
    assert sample_count(client) == 3


def test_a_deleted_portfolio_and_an_account_opened_after_the_slot_are_not_sampled(
        client: TestClient, store: redis.Redis, job: IntradayJob,
        alice: dict[str, str]) -> None:
    kept = client.post(PORTFOLIOS, headers=alice, json={"name": "kept"}).json()
    gone = client.post(PORTFOLIOS, headers=alice, json={"name": "gone"}).json()
    assert client.delete(f"{PORTFOLIOS}/{gone['id']}", headers=alice).status_code == 204
    accounts: dict[int, int] = database(client).call(lambda s: {
        portfolio_id: account_id for portfolio_id, account_id in s.execute(
            select(Portfolio.id, Portfolio.account_id))})
    # The accounts opened today (the wall clock) did not exist at a slot of January.
    assert job.take_due(AlwaysOpen(), datetime(2026, 1, 5, 1, tzinfo=UTC)) == 0
    # alice's default, her "kept" one and the admin's: not "gone".
    assert job.take_due(CALENDAR, at(0, 10)) == 3
    sampled = set(database(client).call(lambda s: list(s.scalars(
        select(IntradaySnapshot.user_id)))))
    assert accounts[kept["id"]] in sampled and accounts[gone["id"]] not in sampled


def test_samples_older_than_the_retention_are_purged(
        client: TestClient, store: redis.Redis, job: IntradayJob,
        alice: dict[str, str]) -> None:
    for n in (0, 1, 4):  # Monday, Tuesday, Friday at 10:00
        job.take_due(CALENDAR, at(n, 10))
    # The next Monday at 10:00: 7 days back is Monday 10:00 itself, kept (older only).
    job.take_due(CALENDAR, at(7, 10))
    assert sample_times(client) == [at(0, 10), at(1, 10), at(4, 10), at(7, 10)]
    # At 10:05 its slot is complete, then what is older than Monday 12-07 10:05 goes.
    job.take_due(CALENDAR, at(7, 10, 5))
    assert sample_times(client) == [at(1, 10), at(4, 10), at(7, 10), at(7, 10, 5)]
    # One batch per transaction, the oldest first.
    assert database(client).call(purge_samples, at(7, 10), batch=1) == 1
    assert sample_count(client) == 7


def test_a_redis_outage_loses_the_slots_it_covers_and_nothing_else(
        client: TestClient, real_redis_server: RedisServer, alice: dict[str, str]) -> None:
    store = real_redis_server.client()
    buy_20_at_50000(client, store, alice)
    job = intraday_job(client, store)
    assert job.take_due(CALENDAR, at(0, 10)) == 2
    real_redis_server.stop()
    with pytest.raises(RedisConnectionError):  # the worker's loop waits such an error out
        job.take_due(CALENDAR, at(0, 10, 5))
    with pytest.raises(RedisConnectionError):
        job.take_due(CALENDAR, at(0, 10, 10))
    real_redis_server.start()
    store = real_redis_server.client()
    try:
        price(store, 51_000)
        # Back within 10:10's slot: taken up again; 10:05 is missing for good.
        assert job.take_due(CALENDAR, at(0, 10, 14)) == 2
        assert job.take_due(CALENDAR, at(0, 10, 15)) == 2
        assert sample_times(client) == [at(0, 10), at(0, 10, 10), at(0, 10, 15)]
        # 8,999,850 + 20 x 51,000 = 10,019,850 at 10:10 and 10:15 (the quote written after
        # the restart); 10:00 was at 50,000: 8,999,850 + 1,000,000 = 9,999,850.
        got = intraday(client, alice, at(0, 10, 16))
        assert [(p["time"], p["equity"]) for p in got["points"]] == [
            (utc(at(0, 10)), 9_999_850), (utc(at(0, 10, 10)), 10_019_850),
            (utc(at(0, 10, 15)), 10_019_850), (utc(at(0, 10, 16)), 10_019_850)]
    finally:
        store.close()


def test_the_fills_worker_samples_in_its_housekeeping(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    clock = Clock(at(0, 8))
    worker = weekday_worker_on(client, store, clock)
    worker.housekeeping()
    assert sample_count(client) == 0  # before the session
    clock.now = at(0, 9, 1)
    weekday_worker_on(client, store, clock).housekeeping()
    assert sample_times(client) == [at(0, 9)]


# --------------------------------------------------------------------------------------------
# The series


def test_the_series_measures_against_the_previous_close_and_a_deposit_is_no_gain(
        client: TestClient, store: redis.Redis, job: IntradayJob,
        alice: dict[str, str]) -> None:
    buy_20_at_50000(client, store, alice)  # cash 8,999,850, 20 held
    price(store, 55_000)
    SnapshotJob(database(client), store, NAMES, batch_size=5,
                pass_budget_s=None).take_due(CALENDAR, after_close(0))
    # Monday's close: B = 8,999,850 + 20 x 55,000 = 10,099,850.

    price(store, 56_000)
    job.take_due(CALENDAR, at(1, 9))
    # Tuesday 09:00: E1 = 8,999,850 + 1,120,000 = 10,119,850, F1 = 0, pnl 20,000;
    # pnl_pct = r1 = 20,000 / 10,099,850 = 0.19802% -> 0.1980.
    deposit(client, alice, 1_000_000)
    price(store, 55_000)
    job.take_due(CALENDAR, at(1, 9, 7))
    # 09:05 (valued at 09:07): cash 9,999,850, E2 = 9,999,850 + 1,100,000 = 11,099,850,
    # F2 = 1,000,000: pnl = 11,099,850 - 10,099,850 - 1,000,000 = 0, pnl_pct 0.
    # The step counts the deposit from its start: r2 = 11,099,850 / (10,119,850 + 1,000,000)
    # - 1 = -20,000 / 11,119,850 = -0.17986%; cumulative (1.0019802 x 0.9982014) - 1 =
    # 0.01781% -> 0.0178 (the 20,000 gained on 10.1 M, then lost on 11.1 M).
    price(store, 60_000)
    job.take_due(CALENDAR, at(1, 9, 10))
    # 09:10: E3 = 9,999,850 + 1,200,000 = 11,199,850, pnl 100,000, pnl_pct = 100,000 /
    # 11,099,850 = 0.90091% -> 0.9009; r3 = 11,199,850 / 11,099,850 - 1 = 0.90091%;
    # cumulative 1.0001781 x 1.0090091 - 1 = 0.91888% -> 0.9189.

    body = intraday(client, alice, at(1, 10), timeframe="5Min")
    # The live point at 10:00, at 60,000: as 09:10, a step of 0.
    assert [(p["time"], p["equity"], p["net_flows"], p["pnl"], p["pnl_pct"],
             p["cumulative_return_pct"], p["live"]) for p in body["points"]] == [
        (utc(at(1, 9)), 10_119_850, 0, 20_000, "0.1980", "0.1980", False),
        (utc(at(1, 9, 5)), 11_099_850, 1_000_000, 0, "0.0000", "0.0178", False),
        (utc(at(1, 9, 10)), 11_199_850, 1_000_000, 100_000, "0.9009", "0.9189", False),
        (utc(at(1, 10)), 11_199_850, 1_000_000, 100_000, "0.9009", "0.9189", True)]
    assert body["points"][1]["cash"] == 9_999_850
    assert body["points"][1]["market_value"] == 1_100_000
    # The largest fall: from the 09:00 index 1.0019802 to 1.0001781: r2, 0.1799% of the peak.
    assert {k: body[k] for k in ("period", "timeframe", "day", "base_day", "base_equity",
                                 "pnl", "net_flows", "pnl_pct", "return_pct",
                                 "max_drawdown_pct")} == {
        "period": "1D", "timeframe": "5Min", "day": "2026-12-08", "base_day": "2026-12-07",
        "base_equity": 10_099_850, "pnl": 100_000, "net_flows": 1_000_000,
        "pnl_pct": "0.9009", "return_pct": "0.9189", "max_drawdown_pct": "0.1799"}

    # 15Min and 1H list the samples at their multiples (09:00 only) and the live point; the
    # figures are the same, computed over every sample.
    for timeframe in ("15Min", "1H"):
        body = intraday(client, alice, at(1, 10), timeframe=timeframe)
        assert [(p["time"], p["cumulative_return_pct"]) for p in body["points"]] == [
            (utc(at(1, 9)), "0.1980"), (utc(at(1, 10)), "0.9189")]
        assert (body["timeframe"], body["return_pct"], body["max_drawdown_pct"]) == (
            timeframe, "0.9189", "0.1799")
    # Without a timeframe, period=1D is the 5-minute series.
    assert intraday(client, alice, at(1, 10))["timeframe"] == "5Min"

    # In the evening the series is still Tuesday's, against Monday's close; the live point
    # is now.
    body = intraday(client, alice, at(1, 20))
    assert (body["day"], body["base_day"], len(body["points"]), body["pnl"]) == (
        "2026-12-08", "2026-12-07", 4, 100_000)
    assert body["points"][-1]["time"] == utc(at(1, 20))
    # Wednesday's session: no sample yet, the live point against the latest close before it
    # (Monday's: Tuesday's snapshot is not taken in this test), the deposit a flow.
    body = intraday(client, alice, at(2, 9))
    assert (body["day"], body["base_day"], [p["live"] for p in body["points"]],
            body["pnl"], body["net_flows"]) == ("2026-12-09", "2026-12-07", [True], 100_000,
                                                1_000_000)
    # On Saturday: Friday's session, which has no sample.
    assert intraday(client, alice, at(5, 12))["day"] == "2026-12-11"


def test_the_first_day_of_an_account_is_measured_against_its_opening(
        client: TestClient, store: redis.Redis, job: IntradayJob,
        alice: dict[str, str]) -> None:
    buy_20_at_50000(client, store, alice)
    price(store, 51_000)
    job.take_due(CALENDAR, at(0, 11))
    # No snapshot yet: B = 0, F = the opening credit 10,000,000; E = 8,999,850 + 1,020,000 =
    # 10,019,850, pnl 19,850, pnl_pct = r = 19,850 / 10,000,000 = 0.1985%.
    body = intraday(client, alice, at(0, 11, 1), timeframe="5Min")
    assert (body["base_day"], body["base_equity"], body["net_flows"], body["pnl"],
            body["pnl_pct"], body["return_pct"]) == (None, 0, 10_000_000, 19_850, "0.1985",
                                                     "0.1985")


def test_x_portfolio_id_picks_the_portfolios_series(
        client: TestClient, store: redis.Redis, job: IntradayJob, api_settings: ApiSettings,
        alice: dict[str, str]) -> None:
    portfolio = client.post(PORTFOLIOS, headers=alice, json={"name": "B"}).json()
    b = {**alice, "X-Portfolio-Id": str(portfolio["id"])}
    price(store, 50_000)
    placed(client, b, side="BUY", type="MARKET", quantity=20)  # in B: cash 8,999,850
    price(store, 52_000)
    job.take_due(CALENDAR, at(0, 10))
    # B: 8,999,850 + 20 x 52,000 = 10,039,850; the default portfolio did nothing.
    assert [p["equity"] for p in intraday(client, b, at(0, 10, 1))["points"]] == [
        10_039_850, 10_039_850]
    assert [p["equity"] for p in intraday(client, alice, at(0, 10, 1))["points"]] == [
        10_000_000, 10_000_000]
    bob = new_user(client, api_settings, "bob@example.com")
    response = history(client, {**bob, "X-Portfolio-Id": str(portfolio["id"])}, at(0, 10, 1),
                       period="1D")
    assert_problem(response, 404, "portfolio_not_found")


@pytest.mark.parametrize("params", [
    {"period": "1D", "timeframe": "1D"},  # a day's close is not an intraday series
    {"period": "1W", "timeframe": "5Min"},  # intraday is today's only
    {"period": "all", "timeframe": "1H"},
    {"timeframe": "15Min"},  # the default period is 1M
    {"period": "1D", "timeframe": "2Min"},
    {"period": "1d"},
])
def test_pairs_that_make_no_sense_are_422(client: TestClient, alice: dict[str, str],
                                          params: dict[str, str]) -> None:
    body = assert_problem(history(client, alice, at(0, 10), **params), 422,
                          "validation_error")
    if "timeframe" in params and params["timeframe"] != "2Min":
        assert "period=1D" in body["detail"], body


def test_the_daily_history_is_unchanged(client: TestClient, alice: dict[str, str]) -> None:
    body = history(client, alice, at(0, 10), period="1W").json()
    assert (body["timeframe"], [p["date"] for p in body["points"]]) == ("1D", ["2026-12-07"])
    assert history(client, alice, at(0, 10), period="1W", timeframe="1D").status_code == 200
