"""The fills history (GET /api/v1/fills, 체결 내역) through HTTP against the real app, a real
Redis (quotes written as the relayer writes them) and a real database (SQLite and MariaDB):
every fill of the user's orders newest first, as the order's detail shows it plus its order,
instrument and side; filters by code, side and KST day; cursor pages; someone else's fills never
shown; bad queries refused with a problem. The money invariants hold after every test."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session

from api.models import Fill
from api.settings import ApiSettings
from tests.api.test_orders import placed
from tests.support.api import assert_problem, database, new_user
from tests.support.databases import database_url_on_both_backends  # noqa: F401
from tests.support.quotes import make_quote, put

FILLS = "/api/v1/fills"
SAMSUNG, HYNIX = "A005930", "A000660"


def fills(client: TestClient, headers: dict[str, str], **params: Any) -> httpx.Response:
    return client.get(FILLS, headers=headers, params=params)


def page(client: TestClient, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    response = fills(client, headers, **params)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def ids(client: TestClient, headers: dict[str, str], **params: Any) -> list[int]:
    return [item["id"] for item in page(client, headers, **params)["items"]]


def trade(client: TestClient, store: redis.Redis, headers: dict[str, str], code: str,
          side: str, quantity: int, at: int, **body: Any) -> dict[str, Any]:
    """An order that fills in its request at `at` (the last trade), as a market order
    unless `body` says otherwise."""
    put(store, make_quote(code, price=at))
    return placed(client, headers, code=code, side=side, quantity=quantity,
                  **{"type": "MARKET", **body})


def test_every_fill_newest_first_as_the_order_shows_it_with_its_order_and_instrument(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    bought = trade(client, store, alice, SAMSUNG, "BUY", 10, 70_000)
    # An IOC buy of 15 against a print of 10 shares: a partial fill of 10, the rest cancelled.
    partial = trade(client, store, alice, HYNIX, "BUY", 15, 71_000, type="LIMIT",
                    price=71_000, time_in_force="IOC")
    sold = trade(client, store, alice, SAMSUNG, "SELL", 4, 72_000)

    items = page(client, alice)["items"]

    assert [(i["order_id"], i["code"], i["side"], i["name"], i["quantity"], i["price"])
            for i in items] == [
        (sold["id"], SAMSUNG, "SELL", "삼성전자", 4, 72_000),
        (partial["id"], HYNIX, "BUY", "SK하이닉스", 10, 71_000),
        (bought["id"], SAMSUNG, "BUY", "삼성전자", 10, 70_000),
    ]
    assert partial["status"] == "CANCELLED" and partial["filled_quantity"] == 10
    # Costs, by hand: 700,000 x 0.015% = 105; 710,000 x 0.015% = 106.5 -> 106;
    # 288,000 x 0.015% = 43.2 -> 43, KOSPI sale taxes 0.05% + 0.15% of 288,000 = 144 + 432.
    assert [(i["value"], i["commission"], i["tax"], i["securities_transaction_tax"],
             i["rural_special_tax"]) for i in items] == [
        (288_000, 43, 576, 144, 432), (710_000, 106, 0, 0, 0), (700_000, 105, 0, 0, 0)]
    # The sale's realized P&L: the 10 shares' book cost is 700,105, the 4 sold carry
    # floor(700,105 x 4 / 10) = 280,042 of it; 288,000 - 43 - 576 - 280,042 = 7,339.
    assert [i["realized_pnl"] for i in items] == [7_339, None, None]
    # Each item is the fill exactly as its order's detail lists it, plus the five fields.
    for item, order in zip(items, (sold, partial, bought), strict=True):
        [as_listed] = client.get(f"/api/v1/orders/{order['id']}", headers=alice).json()["fills"]
        assert {k: v for k, v in item.items()
                if k not in ("order_id", "code", "side", "name", "realized_pnl")} == as_listed
    assert items[1]["rule"] == "aggressor_last_trade"
    assert items[0]["rule"] == "market_order_last_trade"


def test_filters_by_code_side_and_both(client: TestClient, store: redis.Redis,
                                       alice: dict[str, str]) -> None:
    trade(client, store, alice, SAMSUNG, "BUY", 10, 70_000)
    trade(client, store, alice, HYNIX, "BUY", 2, 71_000)
    trade(client, store, alice, SAMSUNG, "SELL", 3, 72_000)
    samsung_sell, hynix_buy, samsung_buy = ids(client, alice)

    assert ids(client, alice, code=SAMSUNG) == [samsung_sell, samsung_buy]
    assert ids(client, alice, code="005930") == [samsung_sell, samsung_buy]  # the bare form
    assert ids(client, alice, code="a000660") == [hynix_buy]
    assert ids(client, alice, side="BUY") == [hynix_buy, samsung_buy]
    assert ids(client, alice, side="SELL") == [samsung_sell]
    assert ids(client, alice, code=SAMSUNG, side="BUY") == [samsung_buy]
    assert ids(client, alice, code=HYNIX, side="SELL") == []
    assert ids(client, alice, code="A035420") == []  # a code never traded


def _stamp(db_session: Session, fill_id: int, at: datetime) -> None:
    db_session.execute(update(Fill).where(Fill.id == fill_id).values(created_at=at))


def test_from_and_to_are_inclusive_korean_calendar_days(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    for price in (70_000, 70_100, 70_200):
        trade(client, store, alice, SAMSUNG, "BUY", 1, price)
    late, midnight, early = ids(client, alice)
    db = database(client)
    # KST is UTC+9: 2026-11-20 14:59:59 UTC is 23:59:59 on the 20th in Korea, 15:00:00 UTC is
    # midnight starting the 21st, and 2026-11-21 14:59:59 UTC is the 21st's last second.
    db.call(_stamp, early, datetime(2026, 11, 20, 14, 59, 59, tzinfo=UTC))
    db.call(_stamp, midnight, datetime(2026, 11, 20, 15, 0, 0, tzinfo=UTC))
    db.call(_stamp, late, datetime(2026, 11, 21, 14, 59, 59, tzinfo=UTC))

    def between(**days: str) -> list[int]:
        return ids(client, alice, **days)

    assert between(**{"from": "2026-11-20", "to": "2026-11-20"}) == [early]
    assert between(**{"from": "2026-11-21", "to": "2026-11-21"}) == [late, midnight]
    assert between(**{"from": "2026-11-21"}) == [late, midnight]
    assert between(to="2026-11-20") == [early]
    assert between(**{"from": "2026-11-22"}) == []
    assert between(to="2026-11-19") == []
    # The widest days a date can name filter nothing out (and are no error).
    assert between(**{"from": "0001-01-01", "to": "9999-12-31"}) == [late, midnight, early]
    assert between(**{"from": "2026-11-20"}, side="SELL") == []


def test_cursor_pages_walk_every_fill_once(client: TestClient, store: redis.Redis,
                                           alice: dict[str, str]) -> None:
    for price in (70_000, 70_100, 70_200, 70_300, 70_400):
        trade(client, store, alice, SAMSUNG, "BUY", 1, price)
    every = ids(client, alice)
    assert len(every) == 5 and every == sorted(every, reverse=True)

    first = page(client, alice, limit=2)
    second = page(client, alice, limit=2, cursor=first["next_cursor"])
    third = page(client, alice, limit=2, cursor=second["next_cursor"])

    assert [[i["id"] for i in p["items"]] for p in (first, second, third)] == [
        every[:2], every[2:4], every[4:]]
    assert third["next_cursor"] is None
    # Filters hold across pages: the prices bought at, newest first, two by two.
    priced = page(client, alice, limit=2, code="005930", side="BUY")
    assert [i["price"] for i in priced["items"]] == [70_400, 70_300]
    exact = page(client, alice, limit=5)
    assert len(exact["items"]) == 5 and exact["next_cursor"] is None


def test_a_user_never_sees_another_users_fills(client: TestClient, store: redis.Redis,
                                               api_settings: ApiSettings,
                                               alice: dict[str, str]) -> None:
    bob = new_user(client, api_settings, "bob@example.com")
    trade(client, store, alice, SAMSUNG, "BUY", 1, 70_000)
    trade(client, store, alice, SAMSUNG, "BUY", 2, 70_000)
    bobs = trade(client, store, bob, SAMSUNG, "BUY", 3, 70_000)

    assert [i["quantity"] for i in page(client, alice)["items"]] == [2, 1]
    assert [(i["order_id"], i["quantity"]) for i in page(client, bob)["items"]] == [
        (bobs["id"], 3)]
    # Alice's cursor only continues below an id: Bob still sees only his own fills.
    alice_cursor = page(client, alice, limit=1)["next_cursor"]
    assert alice_cursor is not None
    assert ids(client, bob, cursor=alice_cursor) == []


@pytest.mark.parametrize(("params", "code"), [
    ({"code": "A00066"}, "invalid_code"),
    ({"code": "SAMSUNG"}, "invalid_code"),
    ({"code": "A0059300000000000"}, "validation_error"),  # over 16 characters
    ({"side": "HOLD"}, "validation_error"),
    ({"side": "buy"}, "validation_error"),
    ({"from": "yesterday"}, "validation_error"),
    ({"from": "20261121"}, "validation_error"),
    ({"to": "2026-11-21T00:00:00"}, "validation_error"),
    ({"from": "2026-11-22", "to": "2026-11-21"}, "invalid_date_range"),
    ({"limit": 0}, "validation_error"),
    ({"limit": 201}, "validation_error"),
    ({"cursor": "not-a-cursor"}, "invalid_cursor"),
    ({"cursor": "b3JkOjU"}, "invalid_cursor"),  # "ord:5", an orders cursor
    ({"cursor": "ZmlsbDo5MjIzMzcyMDM2ODU0Nzc1ODA4"}, "invalid_cursor"),  # "fill:2^63"
])
def test_bad_queries_are_refused(client: TestClient, store: redis.Redis, alice: dict[str, str],
                                 params: dict[str, Any], code: str) -> None:
    trade(client, store, alice, SAMSUNG, "BUY", 1, 70_000)
    assert_problem(fills(client, alice, **params), 422, code)
    assert len(ids(client, alice)) == 1


def test_the_fills_history_needs_a_token(client: TestClient) -> None:
    assert_problem(client.get(FILLS), 401, "not_authenticated")
