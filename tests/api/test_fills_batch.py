"""The fills worker's batches (api.fills.batch), on SQLite and MariaDB: one tick crossing many
resting orders of many users fills them in one transaction, in price then time priority, once,
with each fill's ledger rows and user events as one transaction per fill wrote them; a crash in
the middle of the batch leaves nothing and the entry is redone without a double fill; when the
batch fails, each order is filled in its own transaction, so one order's failure costs the
others nothing."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select, update
from sqlalchemy.exc import DBAPIError

from api.db import Database
from api.fills.worker import FillsWorker
from api.models import Account, Fill, LedgerEntry, Order, TradePrint, UserEvent
from api.settings import ApiSettings
from tests.api.test_orders import CODE, INITIAL, placed
from tests.support.api import database, new_user
from tests.support.databases import database_url_on_both_backends  # noqa: F401
from tests.support.quotes import make_quote, publish_ticks, put


def user_id(client: TestClient, headers: dict[str, str]) -> int:
    me: dict[str, Any] = client.get("/api/v1/users/me", headers=headers).json()
    return int(me["id"])


def detail(client: TestClient, headers: dict[str, str], order_id: int) -> dict[str, Any]:
    response = client.get(f"/api/v1/orders/{order_id}", headers=headers)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def fills_of(db: Database) -> list[tuple[int, str, int]]:
    return db.call(lambda s: [(f.order_id, f.tick_id, f.quantity) for f in s.scalars(
        select(Fill).order_by(Fill.id))])


def consumed(db: Database, print_id: str) -> int | None:
    return db.call(lambda s: s.scalar(select(TradePrint.consumed).where(
        TradePrint.print_id == print_id, TradePrint.side == "BUY")))


@pytest.fixture
def traders(client: TestClient, store: redis.Redis, api_settings: ApiSettings,
            alice: dict[str, str]) -> list[dict[str, str]]:
    """Alice and three more users, with a quote above every limit below."""
    put(store, make_quote(CODE, price=70_500))
    return [alice, *(new_user(client, api_settings, f"trader{i}@example.com")
                     for i in range(3))]


@pytest.fixture
def commits(client: TestClient) -> Iterator[list[int]]:
    """Counts the transactions committed on the app's database."""
    counted: list[int] = []
    engine = database(client).engine
    listener = lambda _connection: counted.append(1)  # noqa: E731
    event.listen(engine, "commit", listener)
    yield counted
    event.remove(engine, "commit", listener)


def test_one_tick_fills_many_orders_of_many_users_in_one_transaction(
        client: TestClient, store: redis.Redis, worker: FillsWorker,
        traders: list[dict[str, str]], commits: list[int]) -> None:
    alice, bob, carol, dave = traders
    # Priority: dave's 70,100; then at 70,000 alice before bob; then alice's 69,900; carol's
    # 69,800 gets nothing of a 12-share print.
    orders = [(dave, placed(client, dave, side="BUY", type="LIMIT", quantity=5, price=70_100,
                            time_in_force="GTC")),
              (alice, placed(client, alice, side="BUY", type="LIMIT", quantity=2,
                             price=70_000, time_in_force="GTC")),
              (bob, placed(client, bob, side="BUY", type="LIMIT", quantity=3, price=70_000,
                           time_in_force="GTC")),
              (alice, placed(client, alice, side="BUY", type="LIMIT", quantity=4,
                             price=69_900, time_in_force="GTC")),
              (carol, placed(client, carol, side="BUY", type="LIMIT", quantity=6,
                             price=69_800, time_in_force="GTC"))]
    [tick_id] = publish_ticks(store, make_quote(CODE, price=69_700, volume=12, seq=1))
    db = database(client)
    entries: Any = store.xrange(worker.stream)
    commits.clear()

    worker.process(entries)

    # One read (the resting orders and the print's volume left), one transaction for the four
    # fills (one each before), and the new orders marked as checked.
    assert len(commits) == 3
    got = [detail(client, who, placed_["id"]) for who, placed_ in orders]
    assert [(o["status"], o["filled_quantity"]) for o in got] == [
        ("FILLED", 5), ("FILLED", 2), ("FILLED", 3), ("PARTIALLY_FILLED", 2), ("OPEN", 0)]
    assert [f[1:] for f in fills_of(db)] == [(tick_id, 5), (tick_id, 2), (tick_id, 3),
                                             (tick_id, 2)]
    assert consumed(db, tick_id) == 12

    # Alice's cash: her two fills' values and commissions, one ledger row each, in order.
    alice_id = user_id(client, alice)
    rows = db.call(lambda s: [(r.type, r.amount, r.balance_before, r.balance_after)
                              for r in s.scalars(select(LedgerEntry)
                                                 .where(LedgerEntry.user_id == alice_id)
                                                 .order_by(LedgerEntry.id))])
    assert rows[1:] == [("BUY", -140_000, INITIAL, INITIAL - 140_000),
                        ("FEE", -21, INITIAL - 140_000, INITIAL - 140_021),
                        ("BUY", -139_800, INITIAL - 140_021, INITIAL - 279_821),
                        ("FEE", -20, INITIAL - 279_821, INITIAL - 279_841)]

    # Each fill's events, as one transaction per fill records them: the fill, then its order
    # as GET /orders/{id} answers it, with increasing offsets per user.
    logged = db.call(lambda s: [(e.id, e.type, e.event, json.loads(e.data)) for e in s.scalars(
        select(UserEvent).where(UserEvent.user_id == alice_id, UserEvent.type != "cash")
        .order_by(UserEvent.id))])
    assert [(kind, name) for _, kind, name, _ in logged] == [
        ("order", "created"), ("order", "created"), ("fill", "executed"), ("order", "filled"),
        ("fill", "executed"), ("order", "partially_filled")]
    first, second = got[1], got[3]
    assert logged[3][3] == first and logged[5][3] == second
    assert logged[2][3] == {**first["fills"][0], "order_id": first["id"]}
    assert logged[4][3] == {**second["fills"][0], "order_id": second["id"]}

    worker.process(entries)  # again, as after a crash before the acknowledgement
    assert len(fills_of(db)) == 4


def test_a_batch_of_sales_and_a_second_fill_of_an_order(
        client: TestClient, store: redis.Redis, worker: FillsWorker,
        traders: list[dict[str, str]]) -> None:
    """Sales (taxes, the book cost sold) and an order filled for the second time (its event
    lists both fills) in one batch."""
    alice, bob, _, _ = traders
    for who in (alice, bob):
        placed(client, who, side="BUY", type="MARKET", quantity=10)
    sells = [(who, placed(client, who, side="SELL", type="LIMIT", quantity=6, price=71_000,
                          time_in_force="GTC")) for who in (alice, bob)]
    publish_ticks(store, make_quote(CODE, price=71_000, volume=3, seq=1))
    worker.step()
    publish_ticks(store, make_quote(CODE, price=71_100, volume=100, seq=2))
    worker.step()

    db = database(client)
    for who, sell in sells:
        body = detail(client, who, sell["id"])
        assert (body["status"], [f["quantity"] for f in body["fills"]]) == (
            "FILLED", [3, 3] if who is alice else [6])
        assert all(f["tax"] > 0 for f in body["fills"])
        assert last_order_event(db, sell["id"]) == body


def last_order_event(db: Database, order_id: int) -> dict[str, Any]:
    """The data of the order's latest event."""
    datas = db.call(lambda s: list(s.scalars(select(UserEvent.data)
                                             .where(UserEvent.type == "order")
                                             .order_by(UserEvent.id.desc()))))
    return next(data for data in map(json.loads, datas) if data["id"] == order_id)


class Crash(BaseException):
    """The worker process dying: not an error the worker handles."""


def test_a_crash_in_the_middle_of_a_batch_leaves_nothing_and_is_redone_once(
        client: TestClient, store: redis.Redis, worker: FillsWorker,
        traders: list[dict[str, str]]) -> None:
    orders = [(who, placed(client, who, side="BUY", type="LIMIT", quantity=2, price=70_000,
                           time_in_force="GTC")) for who in traders]
    [tick_id] = publish_ticks(store, make_quote(CODE, price=70_000, volume=100, seq=1))
    db = database(client)

    def crash(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("INSERT INTO user_events"):  # after the fills and the ledger
            raise Crash

    event.listen(db.engine, "before_cursor_execute", crash)
    try:
        with pytest.raises(Crash):
            worker.step()
    finally:
        event.remove(db.engine, "before_cursor_execute", crash)

    assert fills_of(db) == []
    assert db.call(lambda s: s.scalar(select(func.count()).select_from(LedgerEntry)
                                      .where(LedgerEntry.type == "BUY"))) == 0
    assert consumed(db, tick_id) is None
    assert all(detail(client, who, o["id"])["status"] == "OPEN" for who, o in orders)

    worker.drain_pending()  # as the restarted worker does first
    worker.drain_pending()

    assert sorted(fills_of(db)) == sorted((o["id"], tick_id, 2) for _, o in orders)
    assert all(detail(client, who, o["id"])["status"] == "FILLED" for who, o in orders)


def test_when_the_batch_fails_each_order_is_filled_on_its_own(
        client: TestClient, store: redis.Redis, worker: FillsWorker,
        traders: list[dict[str, str]], caplog: pytest.LogCaptureFixture) -> None:
    """Bob's fill cannot be written (his account's held cash was lost: releasing his hold
    would take it below zero, which a CHECK refuses). The batch fails, and each order is then
    filled in its own transaction: the others' fills are made, Bob's fails and stops the
    worker as any failed fill did; once his account is right again, the pending entry fills
    him, and no one twice."""
    orders = [(who, placed(client, who, side="BUY", type="LIMIT", quantity=1, price=70_000,
                           time_in_force="GTC")) for who in traders]
    bob = traders[1]
    bob_id = user_id(client, bob)
    db = database(client)
    held = db.call(lambda s: s.scalar(select(Account.held_cash)
                                      .where(Account.user_id == bob_id)))
    db.call(lambda s: s.execute(update(Account).where(Account.user_id == bob_id)
                                .values(held_cash=0)))
    [tick_id] = publish_ticks(store, make_quote(CODE, price=70_000, volume=100, seq=1))

    with caplog.at_level(logging.WARNING, logger="api.fills.worker"), \
            pytest.raises(DBAPIError):  # MariaDB: OperationalError 4025; SQLite: IntegrityError
        worker.step()

    assert "filling them one at a time" in caplog.text
    statuses = [detail(client, who, o["id"])["status"] for who, o in orders]
    assert statuses == ["FILLED", "OPEN", "FILLED", "FILLED"]

    db.call(lambda s: s.execute(update(Account).where(Account.user_id == bob_id)
                                .values(held_cash=held)))
    worker.drain_pending()

    assert sorted(fills_of(db)) == sorted((o["id"], tick_id, 1) for _, o in orders)
    assert [detail(client, who, o["id"])["status"] for who, o in orders] == ["FILLED"] * 4
    assert db.call(lambda s: s.scalar(select(func.count()).select_from(Order)
                                      .where(Order.status == "FILLED"))) == 4
