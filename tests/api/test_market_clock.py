"""GET /api/v1/market/clock and /api/v1/market/calendar: public, with their shapes, Korea
time offsets, caching headers and refusals, at moments set by an injected clock (never the
wall clock). The calendar's own rules are tested in tests/test_market_calendar.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import ApiSettings
from relayer.krx_calendar import KrxCalendar
from relayer.market_calendar import KST
from tests.conftest import RedisServer
from tests.support.api import app_settings, assert_problem

KRX = KrxCalendar(around=date(2026, 11, 28))  # one per module: about two seconds to build


def at(client: TestClient, now: datetime, *, krx: bool = True) -> None:
    app = client.app
    assert isinstance(app, FastAPI)
    app.state.resources.clock = lambda: now
    if krx:
        app.state.resources.calendar = KRX


def clock(client: TestClient) -> dict[str, Any]:
    response = client.get("/api/v1/market/clock")  # no token: public
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    return body


def test_the_clock_on_a_friday_evening_says_closed_until_monday(client: TestClient) -> None:
    at(client, datetime(2026, 11, 27, 9, 0, tzinfo=UTC))  # 18:00 KST, a Friday
    assert clock(client) == {
        "now": "2026-11-27T18:00:00+09:00", "timezone": "Asia/Seoul", "calendar": "krx",
        "is_open": False, "session": "CLOSED", "trading_day": "2026-11-30",
        "next_open": "2026-11-30T09:00:00+09:00", "next_close": "2026-11-30T15:30:00+09:00"}


@pytest.mark.parametrize(("hms", "session", "is_open"), [
    ((8, 29, 59), "CLOSED", False), ((8, 30, 0), "OPENING_AUCTION", True),
    ((9, 0, 0), "CONTINUOUS", True), ((15, 20, 0), "CLOSING_AUCTION", True),
    ((15, 30, 0), "CLOSED", False),
])
def test_the_clock_names_the_session(client: TestClient, hms: tuple[int, int, int],
                                     session: str, is_open: bool) -> None:
    at(client, datetime(2026, 11, 27, *hms, tzinfo=KST))
    body = clock(client)
    assert (body["session"], body["is_open"]) == (session, is_open)
    # Until the close an order is the day's; at the close it is Monday's.
    assert body["trading_day"] == ("2026-11-30" if hms == (15, 30, 0) else "2026-11-27")


def test_the_clock_on_the_csat_day(client: TestClient) -> None:
    at(client, datetime(2026, 11, 19, 9, 45, tzinfo=KST))
    body = clock(client)
    assert (body["session"], body["next_open"], body["next_close"]) == (
        "OPENING_AUCTION", "2026-11-19T10:00:00+09:00", "2026-11-19T16:30:00+09:00")


def test_the_clock_of_always_open_trades_at_night(client: TestClient) -> None:
    """The development default: a Sunday 03:00 is continuous trading, as before."""
    at(client, datetime(2026, 11, 29, 3, 0, tzinfo=KST), krx=False)
    body = clock(client)
    assert (body["calendar"], body["session"], body["is_open"]) == (
        "always_open", "CONTINUOUS", True)
    assert (body["trading_day"], body["next_close"]) == ("2026-11-29",
                                                         "2026-11-29T15:30:00+09:00")


def test_the_calendar_lists_trading_days_only(client: TestClient) -> None:
    at(client, datetime(2026, 11, 27, 9, 0, tzinfo=KST))
    response = client.get("/api/v1/market/calendar",
                          params={"start": "2026-09-21", "end": "2026-10-09"})
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "public, max-age=86400"
    days = response.json()["days"]
    # Chuseok (24-25), the weekends, 개천절's substitute (Oct 5) and 한글날 (Oct 9) are absent.
    assert [day["date"] for day in days] == [
        "2026-09-21", "2026-09-22", "2026-09-23", "2026-09-28", "2026-09-29", "2026-09-30",
        "2026-10-01", "2026-10-02", "2026-10-06", "2026-10-07", "2026-10-08"]
    assert days[0] == {"date": "2026-09-21", "open": "2026-09-21T09:00:00+09:00",
                       "close": "2026-09-21T15:30:00+09:00"}
    late = client.get("/api/v1/market/calendar",
                      params={"start": "2026-01-01", "end": "2026-01-02"}).json()["days"]
    assert late == [{"date": "2026-01-02", "open": "2026-01-02T10:00:00+09:00",
                     "close": "2026-01-02T15:30:00+09:00"}]
    # A whole (leap) year at once is allowed; a day more is not.
    whole = client.get("/api/v1/market/calendar", params={"start": "2028-01-01",
                                                          "end": "2028-12-31"})
    assert whole.status_code == 200 and len(whole.json()["days"]) > 240


@pytest.mark.parametrize(("params", "code"), [
    ({"start": "2026-11-30", "end": "2026-11-01"}, "invalid_date_range"),
    ({"start": "2026-01-01", "end": "2027-01-02"}, "date_range_too_long"),  # 367 days
    ({"start": "1999-12-01", "end": "1999-12-31"}, "date_out_of_calendar"),
    ({"start": "2026-02-30", "end": "2026-03-01"}, "validation_error"),
    ({"start": "tomorrow", "end": "2026-03-01"}, "validation_error"),
    ({"start": "2026-03-01"}, "validation_error"),
])
def test_bad_ranges_are_422_problems(client: TestClient, params: dict[str, str],
                                     code: str) -> None:
    at(client, datetime(2026, 11, 27, 9, 0, tzinfo=KST))
    assert_problem(client.get("/api/v1/market/calendar", params=params), 422, code)


@pytest.fixture
def krx_client(redis_server: RedisServer, database_url: str) -> Iterator[TestClient]:
    settings: ApiSettings = app_settings(redis_server.url, database_url, market_calendar="krx")
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_market_calendar_krx_builds_the_krx_calendar_at_start(krx_client: TestClient) -> None:
    app = krx_client.app
    assert isinstance(app, FastAPI)
    assert isinstance(app.state.resources.calendar, KrxCalendar)
    app.state.resources.clock = lambda: datetime(2026, 12, 25, 12, 0, tzinfo=KST)
    body = krx_client.get("/api/v1/market/clock").json()
    assert (body["calendar"], body["session"], body["trading_day"]) == (
        "krx", "CLOSED", "2026-12-28")
