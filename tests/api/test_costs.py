"""What trading costs through the API, with a commission minimum set: each sale's two taxes on
the fill, the minimum paid once per order, and the portfolio's two average prices (매입평균가
without fees, the book cost with them). The invariants (tests/support/invariants.py) replay
the purchase values and check each fill's taxes after every test."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from api.settings import ApiSettings
from tests.conftest import RedisServer
from tests.support.api import app_settings
from tests.support.quotes import make_quote, put

ORDERS = "/api/v1/orders"
KOSPI_STOCK = "A005930"  # 삼성전자
MINIMUM = 500
INITIAL = 10_000_000


@pytest.fixture
def api_settings(redis_server: RedisServer, database_url: str) -> ApiSettings:
    return app_settings(redis_server.url, database_url, commission_min_krw=MINIMUM)


def placed(client: TestClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = client.post(ORDERS, headers=headers, json={"code": KOSPI_STOCK, **body})
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


def position(client: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    [held] = client.get("/api/v1/portfolio", headers=headers).json()["positions"]
    answer: dict[str, Any] = held
    return answer


def test_a_kospi_sale_shows_both_taxes_and_the_position_both_averages(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    put(store, make_quote(KOSPI_STOCK, price=71_200))
    [buy] = placed(client, alice, side="BUY", type="MARKET", quantity=10)["fills"]
    # 712,000 x 0.015% = 106.8 -> 106, under the minimum: the order's first fill pays 500.
    assert (buy["commission"], buy["tax"], buy["securities_transaction_tax"],
            buy["rural_special_tax"]) == (500, 0, 0, 0)
    held = position(client, alice)
    assert (held["purchase_value"], held["avg_purchase_price"]) == (712_000, "71200.00")
    assert (held["cost_basis"], held["avg_price"]) == (712_500, "71250.00")

    put(store, make_quote(KOSPI_STOCK, price=72_000))
    [sale] = placed(client, alice, side="SELL", type="MARKET", quantity=4)["fills"]
    # 288,000: 증권거래세 0.05% = 144, 농어촌특별세 0.15% = 432; commission 43 -> 500.
    assert (sale["value"], sale["commission"], sale["securities_transaction_tax"],
            sale["rural_special_tax"], sale["tax"]) == (288_000, 500, 144, 432, 576)
    held = position(client, alice)
    # The 6 shares left carry 6/10 of each: the averages do not move on a sale.
    assert (held["quantity"], held["purchase_value"], held["avg_purchase_price"]) == (
        6, 427_200, "71200.00")
    assert (held["cost_basis"], held["avg_price"]) == (427_500, "71250.00")
    summary = client.get("/api/v1/account", headers=alice).json()
    assert (summary["fees_paid"], summary["taxes_paid"]) == (1_000, 576)


def test_the_minimum_is_held_until_the_first_fill_and_paid_once(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    put(store, make_quote(KOSPI_STOCK, price=71_200))
    resting = placed(client, alice, side="BUY", type="LIMIT", price=70_000, quantity=10,
                     time_in_force="DAY")
    # 700,000 + 105 commission + the 500 minimum the first fill may cost.
    assert (resting["status"], resting["held_cash"]) == ("OPEN", 700_605)
    client.delete(f"{ORDERS}/{resting['id']}", headers=alice).raise_for_status()

    put(store, make_quote(KOSPI_STOCK, price=69_900, volume=4, seq=124))
    body = placed(client, alice, side="BUY", type="LIMIT", price=70_000, quantity=10,
                  time_in_force="DAY")
    [fill] = body["fills"]
    # The last trade fills 4 at its price; commission 41.94 -> 41, raised to the minimum.
    assert (fill["quantity"], fill["price"], fill["commission"]) == (4, 69_900, 500)
    # The 6 still resting hold no minimum: the order has paid it.
    assert (body["status"], body["held_cash"]) == ("PARTIALLY_FILLED", 420_000 + 63)
    summary = client.get("/api/v1/account", headers=alice).json()
    assert (summary["cash"], summary["held_cash"]) == (INITIAL - 279_600 - 500, 420_063)
