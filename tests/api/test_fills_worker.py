"""The fills worker against a real Redis stream (ticks written by the relayer's own script) and
a real database: resting limit orders fill at their limit price for at most the printed
volume, in price then time priority; ticks from before an order never fill it; orders placed
while the worker was busy are caught up; processing a tick again fills nothing twice; DAY
orders expire; and `python -m api.fills`, killed mid-stream and started again, neither misses
nor repeats a fill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from api.fills.worker import FillsWorker
from api.models import Fill, Order
from api.settings import ApiSettings
from tests.api.test_orders import CODE, INITIAL, account, ledger, placed
from tests.support.api import database, login_as_admin, new_user
from tests.support.invariants import assert_invariants
from tests.support.quotes import NAMES, make_quote, publish_ticks, put


def run_until_idle(worker: FillsWorker) -> None:
    while not worker.step():
        pass


def tick(price: int, volume: int, seq: int = 1) -> Any:
    return make_quote(CODE, price=price, volume=volume, seq=seq)


def order_of(client: TestClient, headers: dict[str, str], order_id: int) -> dict[str, Any]:
    answer: dict[str, Any] = client.get(f"/api/v1/orders/{order_id}", headers=headers).json()
    return answer


def test_a_resting_buy_fills_at_its_limit_when_a_trade_prints_through_it(
        client: TestClient, store: redis.Redis, worker: FillsWorker,
        alice: dict[str, str]) -> None:
    put(store, make_quote(CODE, price=70_500))
    resting = placed(client, alice, side="BUY", type="LIMIT", quantity=10, price=70_000,
                     time_in_force="GTC")
    publish_ticks(store, tick(70_100, 50, seq=1))  # above the limit: no fill
    [through] = publish_ticks(store, tick(69_900, 4, seq=2))

    run_until_idle(worker)

    body = order_of(client, alice, resting["id"])
    assert (body["status"], body["filled_quantity"]) == ("PARTIALLY_FILLED", 4)
    [fill] = body["fills"]
    assert (fill["price"], fill["quantity"], fill["tick_id"], fill["tick_seq"]) == (
        70_000, 4, through, 2)
    # The rest still holds its reservation; the filled part's was released and paid.
    assert body["held_cash"] == 6 * 70_000 + 63
    assert account(client, alice)["held_cash"] == 6 * 70_000 + 63
    assert ledger(client, alice)[1:] == [("BUY", -280_000), ("FEE", -42)]

    publish_ticks(store, tick(70_000, 100, seq=3))  # at the limit: fills the rest
    run_until_idle(worker)
    body = order_of(client, alice, resting["id"])
    assert (body["status"], body["held_cash"], body["avg_fill_price"]) == (
        "FILLED", 0, "70000.00")


def test_ticks_before_an_order_never_fill_it(client: TestClient, store: redis.Redis,
                                             worker: FillsWorker,
                                             alice: dict[str, str]) -> None:
    put(store, make_quote(CODE))
    # Printed before the order existed, a minute ago: the stored quote (71,200, newer) stays,
    # so the order is not marketable on arrival and rests; the worker must not use this print.
    publish_ticks(store, make_quote(CODE, price=60_000, volume=100, age_s=60))
    resting = placed(client, alice, side="BUY", type="LIMIT", quantity=1, price=70_000)

    run_until_idle(worker)

    assert order_of(client, alice, resting["id"])["status"] == "OPEN"


def test_a_marketable_day_order_trades_on_arrival_and_rests_the_rest(
        client: TestClient, store: redis.Redis, worker: FillsWorker,
        alice: dict[str, str]) -> None:
    # The last trade (70,000, 3 shares) already reaches a DAY buy at 70,100: the order is an
    # aggressor, as on the exchange, and takes those 3 at the market's price; 2 rest at 70,100.
    put(store, make_quote(CODE, price=70_000, volume=3))
    body = placed(client, alice, side="BUY", type="LIMIT", quantity=5, price=70_100)

    assert (body["status"], body["filled_quantity"]) == ("PARTIALLY_FILLED", 3)
    assert [(f["quantity"], f["price"]) for f in body["fills"]] == [(3, 70_000)]
    assert account(client, alice)["held_cash"] == 2 * 70_100 + 21  # the rest, at its limit

    publish_ticks(store, tick(70_100, 5, seq=124))  # the next trade reaches the resting rest
    run_until_idle(worker)

    order = order_of(client, alice, body["id"])
    assert order["status"] == "FILLED"
    assert [(f["quantity"], f["price"]) for f in order["fills"]] == [(3, 70_000), (2, 70_100)]
    assert account(client, alice)["held_cash"] == 0


def test_a_day_order_does_not_trade_on_a_stale_quote(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    # A quote older than QUOTE_MAX_AGE_S is no market to trade against: the order only rests.
    put(store, make_quote(CODE, price=70_000, volume=3, age_s=3600))
    body = placed(client, alice, side="BUY", type="LIMIT", quantity=5, price=70_100)

    assert (body["status"], body["filled_quantity"], body["fills"]) == ("OPEN", 0, [])


def test_printed_volume_is_shared_in_price_then_time_priority(
        client: TestClient, store: redis.Redis, worker: FillsWorker, api_settings: ApiSettings,
        alice: dict[str, str]) -> None:
    put(store, make_quote(CODE))
    bob = new_user(client, api_settings, "bob@example.com")
    early = placed(client, alice, side="BUY", type="LIMIT", quantity=5, price=70_000)
    late = placed(client, bob, side="BUY", type="LIMIT", quantity=5, price=70_000)
    better = placed(client, bob, side="BUY", type="LIMIT", quantity=3, price=70_100)

    publish_ticks(store, tick(69_900, 6))
    run_until_idle(worker)

    filled = {name: order_of(client, who, o["id"])["filled_quantity"]
              for name, who, o in (("early", alice, early), ("late", bob, late),
                                   ("better", bob, better))}
    assert filled == {"early": 3, "late": 0, "better": 3}


def test_a_new_price_loses_time_priority_and_a_smaller_quantity_keeps_it(
        client: TestClient, store: redis.Redis, worker: FillsWorker, api_settings: ApiSettings,
        alice: dict[str, str]) -> None:
    put(store, make_quote(CODE))
    bob = new_user(client, api_settings, "bob@example.com")
    first = placed(client, alice, side="BUY", type="LIMIT", quantity=5, price=70_000)
    second = placed(client, bob, side="BUY", type="LIMIT", quantity=5, price=70_000)
    publish_ticks(store, tick(71_000, 1))  # moves the stream on; fills nothing
    run_until_idle(worker)
    # A smaller quantity keeps the first order ahead.
    assert client.patch(f"/api/v1/orders/{first['id']}", headers=alice,
                        json={"quantity": 4}).status_code == 200
    publish_ticks(store, tick(70_000, 1))
    run_until_idle(worker)
    assert [order_of(client, who, o["id"])["filled_quantity"]
            for who, o in ((alice, first), (bob, second))] == [1, 0]
    # A new price (out and back) sends it behind the second.
    for price in (69_900, 70_000):
        assert client.patch(f"/api/v1/orders/{first['id']}", headers=alice,
                            json={"price": price}).status_code == 200
    publish_ticks(store, tick(70_000, 1))
    run_until_idle(worker)

    assert [order_of(client, who, o["id"])["filled_quantity"]
            for who, o in ((alice, first), (bob, second))] == [1, 1]


def test_a_resting_sell_fills_when_a_trade_prints_at_or_above_it(
        client: TestClient, store: redis.Redis, worker: FillsWorker,
        alice: dict[str, str]) -> None:
    put(store, make_quote(CODE, price=70_000))
    placed(client, alice, side="BUY", type="MARKET", quantity=10)
    resting = placed(client, alice, side="SELL", type="LIMIT", quantity=10, price=72_000)
    publish_ticks(store, tick(71_900, 100), tick(72_000, 7))

    run_until_idle(worker)

    body = order_of(client, alice, resting["id"])
    assert (body["filled_quantity"], body["fills"][0]["price"]) == (7, 72_000)
    # 504,000: commission 75, tax 1,008.
    assert (body["fills"][0]["commission"], body["fills"][0]["tax"]) == (75, 1_008)


@pytest.mark.parametrize("later_tick", [True, False], ids=["next-batch", "while-idle"])
def test_an_order_the_worker_had_not_seen_is_caught_up(
        client: TestClient, store: redis.Redis, worker: FillsWorker,
        alice: dict[str, str], later_tick: bool) -> None:
    """A tick the worker processed before it could see the order (the order's transaction had
    not committed yet) still fills it once the worker sees the order: with the next batch, or
    by the idle look-back when no tick comes."""
    put(store, make_quote(CODE))
    resting = placed(client, alice, side="BUY", type="LIMIT", quantity=2, price=70_000)
    db = database(client)
    # Make the order invisible to the worker's first batch, as an uncommitted one would be.
    db.call(lambda s: s.execute(update(Order).values(rests_after=None)))
    [missed] = publish_ticks(store, tick(69_000, 1))
    run_until_idle(worker)
    assert order_of(client, alice, resting["id"])["filled_quantity"] == 0
    db.call(lambda s: s.execute(update(Order).values(rests_after="0-0")))

    if later_tick:
        publish_ticks(store, tick(71_000, 1))  # fills nothing by itself
    run_until_idle(worker)

    body = order_of(client, alice, resting["id"])
    assert [f["tick_id"] for f in body["fills"]] == [missed]


def test_processing_the_same_ticks_again_fills_nothing_twice(
        client: TestClient, store: redis.Redis, worker: FillsWorker,
        alice: dict[str, str]) -> None:
    put(store, make_quote(CODE))
    resting = placed(client, alice, side="BUY", type="LIMIT", quantity=10, price=70_000)
    publish_ticks(store, tick(70_000, 3), tick(69_000, 2))
    entries = store.xrange(NAMES.tick_stream)

    worker.process(entries)
    worker.process(entries)  # as after a crash between the commits and the acknowledgement

    assert order_of(client, alice, resting["id"])["filled_quantity"] == 5
    assert len(database(client).call(lambda s: s.scalars(select(Fill)).all())) == 2


def test_day_orders_expire_at_the_close_and_release_their_holds(
        client: TestClient, store: redis.Redis, worker: FillsWorker,
        alice: dict[str, str]) -> None:
    put(store, make_quote(CODE))
    day = placed(client, alice, side="BUY", type="LIMIT", quantity=1, price=70_000)
    gtc = placed(client, alice, side="BUY", type="LIMIT", quantity=1, price=70_000,
                 time_in_force="GTC")
    close = datetime.fromisoformat(day["expires_at"])

    assert worker.expire_due(close - timedelta(seconds=1)) == 0
    assert worker.expire_due(close) == 1

    body = order_of(client, alice, day["id"])
    assert (body["status"], body["reason"], body["held_cash"]) == (
        "EXPIRED", "session_close", 0)
    assert order_of(client, alice, gtc["id"])["status"] == "OPEN"
    assert account(client, alice)["held_cash"] == 70_000 + 10


# --------------------------------------------------------------------------------------------
# The real process, killed and restarted


def start_worker(api_settings: ApiSettings) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_URL": api_settings.redis_url,
           "DATABASE_URL": api_settings.database_url, "FILLS_BLOCK_MS": "50",
           "FILLS_BATCH_SIZE": "7", "LOG_LEVEL": "INFO"}
    return subprocess.Popen([sys.executable, "-m", "api.fills"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for(condition: Any, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def test_the_worker_killed_mid_stream_misses_nothing_and_repeats_nothing(
        client: TestClient, store: redis.Redis, api_settings: ApiSettings,
        alice: dict[str, str]) -> None:
    put(store, make_quote(CODE))
    bob = new_user(client, api_settings, "bob@example.com")
    # Three orders take one share per tick, best price first: 40, 40, then 20 of 100 ticks.
    first = placed(client, alice, side="BUY", type="LIMIT", quantity=40, price=70_200)
    second = placed(client, bob, side="BUY", type="LIMIT", quantity=40, price=70_100)
    third = placed(client, alice, side="BUY", type="LIMIT", quantity=40, price=70_000)
    db = database(client)

    def fills() -> int:
        return len(db.call(lambda s: s.scalars(select(Fill.id)).all()))

    process = start_worker(api_settings)
    try:
        for seq in range(1, 51):
            publish_ticks(store, tick(69_900, 1, seq=seq))
        wait_for(lambda: fills() >= 20)
        process.send_signal(signal.SIGKILL)  # mid-stream: no chance to finish or acknowledge
        process.wait(10)
        killed_at = fills()
        for seq in range(51, 101):
            publish_ticks(store, tick(69_900, 1, seq=seq))  # printed while it is down
        process = start_worker(api_settings)
        wait_for(lambda: fills() == 100)
        time.sleep(0.5)  # nothing more may come
        # Its heartbeat, as /ready reports it (the details are for admins).
        admin = login_as_admin(client)
        wait_for(lambda: client.get("/ready", headers=admin).json()["fills"]["caught_up"] is True)
        ready = client.get("/ready", headers=admin).json()["fills"]
        assert ready["alive"] is True and ready["fills_total"] >= 1
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)

    assert process.returncode == 0, stderr.decode()[-2000:]
    assert not store.exists(NAMES.fills_health)  # a clean stop says so at once
    assert 20 <= killed_at < 100
    assert fills() == 100
    filled = [order_of(client, who, o["id"])["filled_quantity"]
              for who, o in ((alice, first), (bob, second), (alice, third))]
    assert filled == [40, 40, 20]
    assert account(client, alice)["cash"] == INITIAL - 40 * 70_200 - 20 * 70_000 - sum(
        f.commission for f in db.call(lambda s: s.scalars(select(Fill)).all())
        if f.user_id != bob_id(client, bob))
    assert_invariants(db)


def bob_id(client: TestClient, headers: dict[str, str]) -> int:
    me: dict[str, Any] = client.get("/api/v1/users/me", headers=headers).json()
    return int(me["id"])
