"""GET /api/v1/stats against the real app, Redis and database (MariaDB when reachable): every
figure of docs/api/STATS.md worked out by hand for an account that bought at two prices, sold in
three parts (two wins and a loss) and holds a second instrument; periods that cut trades out at
their first instant; an account without trades; another user's fills never counted; a bad
period refused. The figures' rules that trading through the API cannot reach (a trade of
exactly 0, ties) are checked on the pure functions of api.stats.figures.

The fills are made through the API at quotes written as the relayer writes them; the moment a
fill is made is the wall clock's, so each is then dated where the story needs it (its order
too), and "today" is fixed with the app's injected clock."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session

from api.market.rules import KST
from api.models import Account, Fill, Order
from api.settings import ApiSettings
from api.stats.figures import Trade, TradeFigures
from tests.support.api import assert_problem, database, new_user
from tests.support.quotes import make_quote, put

STATS = "/api/v1/stats"
SAMSUNG, HYNIX = "A005930", "A000660"  # KOSPI stocks: 2026 sale taxes 0.05% + 0.15% rural


def kst(month: int, day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, second, tzinfo=KST)


# "Now" for every request of these tests: Friday 2026-11-20, 15:00 in Korea.
NOW = kst(11, 20, 15)
OPENED = kst(10, 1, 9)  # when the accounts were opened


def with_clock(client: TestClient, now: datetime) -> None:
    app = client.app
    assert isinstance(app, FastAPI)
    app.state.resources.clock = lambda: now


def trade(client: TestClient, store: redis.Redis, headers: dict[str, str], code: str,
          side: str, quantity: int, price: int, at: datetime) -> int:
    """A market order filled at `price`, its fill and order dated `at`: the fill's id."""
    put(store, make_quote(code, price=price, base=price))
    response = client.post("/api/v1/orders", headers=headers, json={
        "code": code, "side": side, "type": "MARKET", "quantity": quantity})
    assert response.status_code == 201, response.text
    [fill] = response.json()["fills"]
    order_id = response.json()["id"]

    def date_it(session: Session) -> None:
        session.execute(update(Fill).where(Fill.id == fill["id"]).values(created_at=at))
        session.execute(update(Order).where(Order.id == order_id).values(created_at=at))

    database(client).call(date_it)
    fill_id: int = fill["id"]
    return fill_id


def open_accounts_at(client: TestClient, at: datetime) -> None:
    database(client).call(lambda s: s.execute(update(Account).values(created_at=at)))


def stats(client: TestClient, headers: dict[str, str], period: str | None = None
          ) -> dict[str, Any]:
    response = client.get(STATS, headers=headers,
                          params={} if period is None else {"period": period})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def alices_trades(client: TestClient, store: redis.Redis,
                  alice: dict[str, str]) -> list[int]:
    """Alice's six fills, ids in order (commission 0.015%, each cost rounded down to the won):

    F1 10-05 10:00  BUY  10 A005930 at 70,000 = 700,000, commission 105
    F2 10-20 10:00  BUY  10 A005930 at 72,000 = 720,000, commission 108
       book cost 700,105 + 720,108 = 1,420,213 for 20 shares
    F3 11-13 23:59:59  SELL 5 at 75,000 = 375,000, commission 56 (56.25), 증권거래세 187
       (0.05%: 187.5), 농어촌특별세 562 (0.15%: 562.5); carries 1,420,213 x 5 // 20 = 355,053:
       P&L 375,000 - 56 - 749 - 355,053 = 19,142 (a win); book cost left 1,065,160 for 15
    F4 11-14 00:00  SELL 10 at 68,000 = 680,000, commission 102, taxes 340 + 1,020; carries
       1,065,160 x 10 // 15 = 710,106: P&L 680,000 - 102 - 1,360 - 710,106 = -31,568 (a loss)
    F5 11-18 10:00  SELL 5 at 72,000 = 360,000, commission 54, taxes 180 + 540; carries the
       rest, 355,054: P&L 360,000 - 54 - 720 - 355,054 = 4,172 (a win); the position is closed
    F6 11-19 09:30  BUY  3 A000660 at 200,000 = 600,000, commission 90 (still held)

    (times KST, 2026)."""
    open_accounts_at(client, OPENED)
    with_clock(client, NOW)
    return [trade(client, store, alice, SAMSUNG, "BUY", 10, 70_000, kst(10, 5, 10)),
            trade(client, store, alice, SAMSUNG, "BUY", 10, 72_000, kst(10, 20, 10)),
            trade(client, store, alice, SAMSUNG, "SELL", 5, 75_000, kst(11, 13, 23, 59, 59)),
            trade(client, store, alice, SAMSUNG, "SELL", 10, 68_000, kst(11, 14, 0)),
            trade(client, store, alice, SAMSUNG, "SELL", 5, 72_000, kst(11, 18, 10)),
            trade(client, store, alice, HYNIX, "BUY", 3, 200_000, kst(11, 19, 9, 30))]


def test_all_counts_every_trade_since_the_account_was_opened(
        client: TestClient, alice: dict[str, str], alices_trades: list[int]) -> None:
    f1, f2, f3, f4, _, f6 = alices_trades

    body = stats(client, alice)  # `all` by default

    assert (body["period"], body["first_day"], body["last_day"]) == (
        "all", "2026-10-01", "2026-11-20")
    assert body["as_of"] == "2026-11-20T06:00:00Z"
    # 19,142 - 31,568 + 4,172 = -8,254: what the account says its positions realized.
    assert body["realized_pnl"] == {
        "total": -8_254,
        "by_day": [{"day": "2026-11-13", "realized_pnl": 19_142, "trades": 1},
                   {"day": "2026-11-14", "realized_pnl": -31_568, "trades": 1},
                   {"day": "2026-11-18", "realized_pnl": 4_172, "trades": 1}],
        "by_instrument": [{"code": SAMSUNG, "name": "삼성전자", "realized_pnl": -8_254,
                           "trades": 3}]}
    account = client.get("/api/v1/account", headers=alice).json()
    assert (account["realized_pnl"], account["fees_paid"], account["taxes_paid"]) == (
        -8_254, 515, 2_829)
    assert body["trades"] == {
        "count": 3, "wins": 2, "losses": 1, "breakeven": 0,
        "win_rate": "66.67",  # 2 / 3 = 66.666...%
        "gross_wins": 23_314, "gross_losses": -31_568,  # 19,142 + 4,172
        "average_win": "11657.00", "average_loss": "-31568.00",
        "profit_factor": "0.74",  # 23,314 / 31,568 = 0.7385...
        "best": {"fill_id": f3, "code": SAMSUNG, "name": "삼성전자", "day": "2026-11-13",
                 "realized_pnl": 19_142},
        "worst": {"fill_id": f4, "code": SAMSUNG, "name": "삼성전자", "day": "2026-11-14",
                  "realized_pnl": -31_568}}
    assert body["activity"] == {
        # 700,000 + 720,000 + 600,000 bought; 375,000 + 680,000 + 360,000 sold.
        "turnover": 3_435_000, "buy_value": 2_020_000, "sell_value": 1_415_000,
        "fills": 6, "orders_filled": 6, "orders_placed": 6}
    assert body["costs"] == {
        "fees_paid": 515,  # 105 + 108 + 56 + 102 + 54 + 90
        "securities_transaction_tax": 707,  # 187 + 340 + 180
        "rural_special_tax": 2_122,  # 562 + 1,020 + 540
        "taxes_paid": 2_829}
    # A005930 held from F1 (10-05 10:00) to F5 (11-18 10:00): 44 days; A000660 opened by F6
    # (11-19 09:30) is 29.5 hours old at 11-20 15:00: 1.229... days.
    assert body["holding_periods"] == {
        "round_trips": 1, "average_days": "44.00", "max_days": "44.00",
        "open_positions": [{"code": HYNIX, "name": "SK하이닉스",
                            "opened_at": "2026-11-19T00:30:00Z", "age_days": "1.23"}]}
    assert {f1, f2, f6}.isdisjoint({body["trades"]["best"]["fill_id"],
                                    body["trades"]["worst"]["fill_id"]})
    assert body["currency"] == "KRW"


def test_a_week_starts_at_the_first_instant_of_its_first_day(
        client: TestClient, alice: dict[str, str], alices_trades: list[int]) -> None:
    """1W on 11-20 is 11-14 to 11-20: F3 (11-13 23:59:59) is out, F4 (11-14 00:00) is in."""
    _, _, _, f4, f5, _ = alices_trades

    body = stats(client, alice, "1W")

    assert (body["period"], body["first_day"], body["last_day"]) == (
        "1W", "2026-11-14", "2026-11-20")
    assert body["realized_pnl"]["total"] == -27_396  # -31,568 + 4,172
    assert [d["day"] for d in body["realized_pnl"]["by_day"]] == ["2026-11-14", "2026-11-18"]
    trades = body["trades"]
    assert (trades["count"], trades["wins"], trades["losses"], trades["win_rate"]) == (
        2, 1, 1, "50.00")
    assert (trades["average_win"], trades["average_loss"]) == ("4172.00", "-31568.00")
    assert trades["profit_factor"] == "0.13"  # 4,172 / 31,568 = 0.1321...
    assert (trades["best"]["fill_id"], trades["worst"]["fill_id"]) == (f5, f4)
    assert body["activity"] == {
        "turnover": 1_640_000,  # 680,000 + 360,000 + 600,000
        "buy_value": 600_000, "sell_value": 1_040_000,
        "fills": 3, "orders_filled": 3, "orders_placed": 3}
    assert body["costs"] == {"fees_paid": 246,  # 102 + 54 + 90
                             "securities_transaction_tax": 520,  # 340 + 180
                             "rural_special_tax": 1_560,  # 1,020 + 540
                             "taxes_paid": 2_080}
    # The round trip closed in the week counts whole, from its opening in October.
    assert (body["holding_periods"]["round_trips"], body["holding_periods"]["average_days"]) == (
        1, "44.00")


def test_longer_periods_cut_the_earlier_buys_out_and_start_no_earlier_than_the_account(
        client: TestClient, alice: dict[str, str], alices_trades: list[int]) -> None:
    month = stats(client, alice, "1M")
    # 30 days to 11-20: from 10-22, so F1 (10-05) and F2 (10-20) are out, the three sales in.
    assert (month["first_day"], month["realized_pnl"]["total"]) == ("2026-10-22", -8_254)
    assert month["activity"]["turnover"] == 2_015_000  # 375,000 + 680,000 + 360,000 + 600,000
    assert month["activity"]["buy_value"] == 600_000
    assert month["costs"]["fees_paid"] == 302  # 56 + 102 + 54 + 90
    # 90 days back is 08-23, before the account was opened (10-01): from 10-01, as `all`.
    quarter, year, everything = (stats(client, alice, period) for period in ("3M", "1Y", "all"))
    assert quarter["first_day"] == year["first_day"] == "2026-10-01"
    for body in (quarter, year):
        assert {k: v for k, v in body.items() if k != "period"} == {
            k: v for k, v in everything.items() if k != "period"}


def test_another_users_fills_are_never_counted(
        client: TestClient, store: redis.Redis, api_settings: ApiSettings,
        alice: dict[str, str], alices_trades: list[int]) -> None:
    bob = new_user(client, api_settings, "bob@example.com")
    open_accounts_at(client, OPENED)
    # Bob: 2 bought at 70,000 = 140,000, commission 21: book cost 140,021. 1 sold at 80,000:
    # commission 12, taxes 40 + 120, carries 140,021 // 2 = 70,010: P&L 80,000 - 12 - 160
    # - 70,010 = 9,818.
    trade(client, store, bob, SAMSUNG, "BUY", 2, 70_000, kst(11, 17, 12))
    sale = trade(client, store, bob, SAMSUNG, "SELL", 1, 80_000, kst(11, 17, 13))
    # And a buy below the market that rests unfilled: placed, but not filled.
    resting = client.post("/api/v1/orders", headers=bob, json={
        "code": SAMSUNG, "side": "BUY", "type": "LIMIT", "quantity": 1, "price": 60_000,
        "time_in_force": "GTC"})
    assert resting.status_code == 201 and resting.json()["status"] == "OPEN", resting.text
    database(client).call(lambda s: s.execute(update(Order).where(
        Order.id == resting.json()["id"]).values(created_at=kst(11, 17, 14))))

    mine = stats(client, bob)
    assert mine["realized_pnl"]["total"] == 9_818
    assert (mine["trades"]["count"], mine["trades"]["win_rate"]) == (1, "100.00")
    assert mine["trades"]["profit_factor"] is None  # no loss to divide by
    assert mine["trades"]["best"]["fill_id"] == mine["trades"]["worst"]["fill_id"] == sale
    assert mine["activity"] == {"turnover": 220_000, "buy_value": 140_000, "sell_value": 80_000,
                                "fills": 2, "orders_filled": 2, "orders_placed": 3}
    assert mine["costs"]["fees_paid"] == 33  # 21 + 12
    # Opened 11-17 12:00, still held (1 share) at 11-20 15:00: 3 days 3 hours = 3.125 days.
    assert mine["holding_periods"]["open_positions"] == [
        {"code": SAMSUNG, "name": "삼성전자", "opened_at": "2026-11-17T03:00:00Z",
         "age_days": "3.12"}]  # 3.125 rounds half to even
    # Alice's figures are as they were without Bob (the first test's).
    hers = stats(client, alice, "1W")
    assert hers["realized_pnl"]["total"] == -27_396 and hers["activity"]["fills"] == 3


def test_an_account_without_trades_has_zeros_and_nulls(
        client: TestClient, alice: dict[str, str]) -> None:
    with_clock(client, NOW)
    open_accounts_at(client, kst(11, 20, 9))  # opened this morning

    body = stats(client, alice, "1Y")

    assert (body["first_day"], body["last_day"]) == ("2026-11-20", "2026-11-20")
    assert body["realized_pnl"] == {"total": 0, "by_day": [], "by_instrument": []}
    assert body["trades"] == {
        "count": 0, "wins": 0, "losses": 0, "breakeven": 0, "win_rate": None,
        "gross_wins": 0, "gross_losses": 0, "average_win": None, "average_loss": None,
        "profit_factor": None, "best": None, "worst": None}
    assert body["activity"] == {"turnover": 0, "buy_value": 0, "sell_value": 0, "fills": 0,
                                "orders_filled": 0, "orders_placed": 0}
    assert body["costs"] == {"fees_paid": 0, "securities_transaction_tax": 0,
                             "rural_special_tax": 0, "taxes_paid": 0}
    assert body["holding_periods"] == {"round_trips": 0, "average_days": None,
                                       "max_days": None, "open_positions": []}


@pytest.mark.parametrize("period", ["2W", "1w", "ALL", "", "7"])
def test_a_period_it_does_not_know_is_refused(client: TestClient, alice: dict[str, str],
                                              period: str) -> None:
    body = assert_problem(client.get(STATS, headers=alice, params={"period": period}), 422,
                          "validation_error")
    assert body["errors"][0]["loc"] == ["query", "period"]


def test_a_parameter_it_does_not_know_is_refused(client: TestClient,
                                                alice: dict[str, str]) -> None:
    """A misspelt `period` is not silently the default period."""
    body = assert_problem(client.get(STATS, headers=alice, params={"periode": "1W"}), 422,
                          "validation_error")
    assert body["errors"][0]["loc"] == ["query", "periode"]


def test_stats_need_a_token(client: TestClient) -> None:
    assert client.get(STATS).status_code == 401


# --------------------------------------------------------------------------------------------
# The rules trading through the API does not reach


def trades_of(*pnls: int) -> TradeFigures:
    return TradeFigures([Trade(number, SAMSUNG, date(2026, 11, 2), pnl)
                         for number, pnl in enumerate(pnls, start=1)])


def test_a_trade_of_zero_is_neither_a_win_nor_a_loss_but_counts_in_the_win_rate() -> None:
    figures = trades_of(300, 0, -100, 0)
    assert (figures.count, len(figures.wins), len(figures.losses), figures.breakeven) == (
        4, 1, 1, 2)
    assert figures.win_rate == Decimal("25.00")  # 1 win of 4 trades
    assert figures.profit_factor == Decimal("3.00")  # 300 / 100


def test_the_earliest_of_equal_trades_is_the_best_and_the_worst() -> None:
    figures = trades_of(-5, 7, 7, -5)
    assert figures.best is not None and figures.best.fill_id == 2
    assert figures.worst is not None and figures.worst.fill_id == 1
    # Averages keep their cents: (7 + 7) / 2 and (-5 - 5) / 2; of 2 and 1: 1.5 -> 1.50.
    assert (figures.average_win, figures.average_loss) == (Decimal("7.00"), Decimal("-5.00"))
    assert trades_of(2, 1, -1).average_win == Decimal("1.50")


def test_only_losses_give_a_profit_factor_of_zero() -> None:
    figures = trades_of(-10, -30)
    assert figures.profit_factor == Decimal("0.00") and figures.average_win is None
    assert figures.win_rate == Decimal("0.00") and figures.average_loss == Decimal("-20.00")
