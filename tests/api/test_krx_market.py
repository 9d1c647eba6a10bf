"""The KRX as a user meets it through the API (issue 12's walkthrough): find 삼성전자 by its
initial consonants and see its name, limits and live price; buy an ETF at a 5-won price; sell
a KONEX stock and pay its 0.10% tax; buy at 상한가 and pay the market price; and the codes the
master does not know, or does not let trade, refused everywhere a code is named. Instruments
are read from the master files shipped in relayer/master_files/, as the migration loaded them."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from api.models import Role
from api.settings import ApiSettings
from relayer.krx import Market, SecurityKind, price_rules
from relayer.master import ListingStatus, MasterRecord, by_code, read_master, shipped_paths
from tests.support.api import assert_problem
from tests.support.quotes import make_quote, put
from tests.support.tokens import bearer

ORDERS = "/api/v1/orders"
MASTER = by_code([read_master(path) for path in shipped_paths()])
KODEX_200 = "A069500"  # an ETF: 5-won steps from 2,000 up


def first(market: Market, kind: SecurityKind, status: ListingStatus) -> MasterRecord:
    return next(record for code, record in sorted(MASTER.items())
                if (record.market, record.kind, record.status) == (market, kind, status))


KONEX_STOCK = first(Market.KONEX, SecurityKind.STOCK, ListingStatus.LISTED)
HALTED_STOCK = first(Market.KOSDAQ, SecurityKind.STOCK, ListingStatus.HALTED)


def placed(client: TestClient, headers: dict[str, str], code: str,
           **body: Any) -> dict[str, Any]:
    response = client.post(ORDERS, headers=headers, json={"code": code, **body})
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_find_samsung_by_its_initials_and_see_its_name_limits_and_price(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    found = client.get("/api/v1/instruments", params={"query": "ㅅㅅㅈㅈ"}, headers=alice)
    assert found.status_code == 200, found.text
    best = found.json()["items"][0]
    assert (best["code"], best["name"], best["market"]) == ("A005930", "삼성전자", "KOSPI")

    put(store, make_quote("A005930", price=71_200, base=70_500))
    quote = client.get("/api/v1/trading/realtime/stock/A005930", headers=alice).json()
    assert (quote["name"], quote["market"], quote["price"]) == ("삼성전자", "KOSPI", 71_200)
    assert (quote["lower_limit"], quote["upper_limit"]) == (49_400, 91_600)
    detail = client.get("/api/v1/instruments/A005930", headers=alice).json()
    assert (detail["lower_limit"], detail["upper_limit"], detail["price"]) == (
        49_400, 91_600, 71_200)


def test_an_etf_trades_on_its_5_won_grid(client: TestClient, store: redis.Redis,
                                         alice: dict[str, str]) -> None:
    put(store, make_quote(KODEX_200, price=34_615, base=34_610, volume=100))
    # 34,615 is off a stock's grid at this level (steps of 50), on an ETF's (steps of 5).
    assert not price_rules(Market.KOSPI, SecurityKind.STOCK).is_on_grid(34_615)
    body = placed(client, alice, KODEX_200, side="BUY", type="LIMIT", price=34_615,
                  quantity=10, time_in_force="IOC")
    [fill] = body["fills"]
    assert (body["status"], fill["price"], fill["quantity"]) == ("FILLED", 34_615, 10)
    problem = assert_problem(
        client.post(ORDERS, headers=alice, json={"code": KODEX_200, "side": "BUY",
                                                 "type": "LIMIT", "price": 34_612,
                                                 "quantity": 1, "time_in_force": "IOC"}),
        422, "invalid_tick_size")
    assert problem["tick_size"] == 5
    # Sold without tax: ETFs are exempt.
    [sale] = placed(client, alice, KODEX_200, side="SELL", type="MARKET", quantity=10)["fills"]
    assert (sale["tax"], sale["securities_transaction_tax"], sale["rural_special_tax"]) == (
        0, 0, 0)


def test_a_konex_sale_pays_its_0_10_percent_and_its_limits_are_15_percent(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    code = KONEX_STOCK.code
    rules = price_rules(Market.KONEX, SecurityKind.STOCK)
    price = rules.snap_down(10_000)
    put(store, make_quote(code, price=price, base=price, volume=1_000))
    quote = client.get(f"/api/v1/trading/realtime/stock/{code}", headers=alice).json()
    assert (quote["lower_limit"], quote["upper_limit"]) == (8_500, 11_500)  # +/-15%

    placed(client, alice, code, side="BUY", type="MARKET", quantity=100)
    [sale] = placed(client, alice, code, side="SELL", type="MARKET", quantity=100)["fills"]
    # 1,000,000 x 0.10% = 1,000, all of it securities transaction tax: KONEX pays no rural tax.
    assert (sale["value"], sale["securities_transaction_tax"], sale["rural_special_tax"],
            sale["tax"]) == (1_000_000, 1_000, 0, 1_000)


def test_a_buy_at_the_upper_limit_pays_the_market_price(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    put(store, make_quote("A005930", price=71_200, base=70_500, volume=50))
    body = placed(client, alice, "A005930", side="BUY", type="LIMIT", price=91_600,
                  quantity=10, time_in_force="IOC")
    [fill] = body["fills"]
    assert (fill["price"], fill["rule"]) == (71_200, "aggressor_last_trade")


@pytest.mark.parametrize(("code", "problem"), [
    ("A999999", "unknown_instrument"),
    (HALTED_STOCK.code, "instrument_not_tradable"),
])
def test_orders_for_an_unknown_or_halted_instrument_are_refused(
        client: TestClient, store: redis.Redis, alice: dict[str, str], code: str,
        problem: str) -> None:
    put(store, make_quote(code, price=10_000, base=10_000))
    answer = client.post(ORDERS, headers=alice, json={"code": code, "side": "BUY",
                                                      "type": "MARKET", "quantity": 1})
    body = assert_problem(answer, 422, problem)
    assert body["instrument"] == code
    assert client.get(ORDERS, headers=alice).json()["items"] == []  # nothing was written


def test_watchlists_and_subscriptions_refuse_an_unknown_instrument(
        client: TestClient, alice: dict[str, str], api_settings: ApiSettings) -> None:
    assert_problem(client.post("/api/v1/watchlists", headers=alice,
                               json={"name": "typo", "codes": ["A005930", "A999999"]}),
                   422, "unknown_instrument")
    assert client.get("/api/v1/watchlists", headers=alice).json()["watchlists"] == []
    created = client.post("/api/v1/watchlists", headers=alice,
                          json={"name": "ok", "codes": ["A005930", HALTED_STOCK.code]})
    assert created.status_code == 201, created.text  # a halted stock is worth watching
    assert_problem(client.post(f"/api/v1/watchlists/{created.json()['id']}/items",
                               headers=alice, json={"code": "A999999"}),
                   422, "unknown_instrument")

    admin = bearer(api_settings, Role.ADMIN, 7)
    assert_problem(client.post("/api/v1/admin/websocket/subscriptions/subscribe",
                               params={"topic": "A999999"}, headers=admin),
                   422, "unknown_instrument")


def test_a_quote_from_an_earlier_day_shows_the_new_days_limits(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    # Two days old: its trade is the last before a close, so its price is the new day's base
    # (80,000: limits 56,000-104,000), not the base it carries (70,500).
    put(store, make_quote("A005930", age_s=2 * 86_400, price=80_000, base=70_500))
    quote = client.get("/api/v1/trading/realtime/stock/A005930", headers=alice).json()
    assert (quote["lower_limit"], quote["upper_limit"]) == (56_000, 104_000)
    assert quote["stale"] is True
