"""The API against a Redis that restarts, kills its clients, or holds garbage at a quote key:
a healthy Redis never yields a 503, and a bad quote is no quote (never a 500)."""

from __future__ import annotations

import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.fills.worker import parse_tick
from api.models import Fill
from api.settings import ApiSettings
from relayer.bus import STREAM_QUOTE_FIELD, ActiveSubscription, TopicTemplate
from tests.api.test_fills_worker import start_worker, wait_for
from tests.api.test_orders import placed
from tests.conftest import RedisServer
from tests.support.api import database
from tests.support.quotes import NAMES, make_quote, publish_ticks, put

BASE = "/api/v1/trading/realtime"
CODE = "A005930"
TOPICS = TopicTemplate("/topic/v1/kr/stock/trade/{code}")


def many(client: TestClient, path: str, headers: dict[str, str], n: int = 20,
         concurrent: bool = True) -> list[httpx.Response]:
    """`n` requests: at once (so the pool holds several connections) or one after another."""
    if not concurrent:
        return [client.get(path, headers=headers) for _ in range(n)]
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(lambda _: client.get(path, headers=headers), range(n)))


def statuses(responses: list[httpx.Response]) -> list[int]:
    return [response.status_code for response in responses]


@pytest.mark.parametrize("concurrent", [True, False], ids=["at-once", "one-by-one"])
def test_after_client_kill_every_request_succeeds(
    client: TestClient, store: redis.Redis, alice: dict[str, str], concurrent: bool
) -> None:
    put(store, make_quote(CODE))
    path = f"{BASE}/stocks/multiple?stock_codes={CODE}"  # no per-worker memo: always Redis
    assert statuses(many(client, path, alice)) == [200] * 20  # the pool now holds connections
    killed = store.client_kill_filter(_type="normal", skipme=True)
    assert killed >= 2
    assert statuses(many(client, path, alice, concurrent=concurrent)) == [200] * 20


def test_after_a_redis_restart_every_request_succeeds(
    client: TestClient, real_redis_server: RedisServer, alice: dict[str, str]
) -> None:
    path = f"{BASE}/stocks/multiple?stock_codes={CODE}"
    assert statuses(many(client, path, alice)) == [200] * 20
    real_redis_server.restart()  # every pooled connection is now dead
    store = real_redis_server.client()
    put(store, make_quote(CODE))
    store.close()
    assert statuses(many(client, path, alice)) == [200] * 20
    assert statuses(many(client, path, alice, concurrent=False)) == [200] * 20


def test_redis_down_is_still_a_503(client: TestClient, real_redis_server: RedisServer,
                                   alice: dict[str, str]) -> None:
    real_redis_server.stop()
    answer = client.get(f"{BASE}/stock/{CODE}", headers=alice)
    assert answer.status_code == 503 and answer.json()["code"] == "redis_unavailable"


GARBAGE: list[bytes] = [
    b"[]",
    b'{"code":"A005930","price":71',  # truncated JSON
    make_quote(CODE).to_json().replace(b'"price":71200', b'"price":"71200"'),  # string price
    make_quote(CODE).to_json().replace(b'"price":71200', b'"price":-71200'),  # negative
    make_quote(CODE).to_json().replace(b'"volume":10,', b""),  # a field missing
    b"\xff\xfe not even text",
]
# Stable names: some values hold today's time, and every test worker must collect the same ids.
GARBAGE_IDS = [f"garbage{i}" for i in range(len(GARBAGE))]


@pytest.mark.parametrize("garbage", GARBAGE, ids=GARBAGE_IDS)
def test_a_garbage_quote_is_no_quote_on_every_reader(
    client: TestClient, store: redis.Redis, alice: dict[str, str], garbage: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A position first (bought at a good quote), a watchlist, and the code subscribed.
    put(store, make_quote(CODE, price=70_000))
    order = client.post("/api/v1/orders", headers=alice, json={
        "code": CODE, "side": "BUY", "type": "MARKET", "quantity": 1})
    assert order.status_code == 201, order.text
    watchlist = client.post("/api/v1/watchlists", headers=alice,
                            json={"name": "mine", "codes": [CODE]})
    assert watchlist.status_code == 201, watchlist.text
    store.hset(NAMES.active_subscriptions, TOPICS.topic(CODE),
               ActiveSubscription("1", "2026-11-20T00:00:00Z").to_json())

    store.set(NAMES.quote(CODE), garbage)
    with caplog.at_level(logging.WARNING):
        single = client.get(f"{BASE}/stock/{CODE}", headers=alice)
        multiple = client.get(f"{BASE}/stocks/multiple?stock_codes={CODE}", headers=alice)
        everything = client.get(f"{BASE}/stocks/all", headers=alice)
        listed = client.get(f"/api/v1/watchlists/{watchlist.json()['id']}", headers=alice)
        portfolio = client.get("/api/v1/portfolio", headers=alice)
        market = client.post("/api/v1/orders", headers=alice, json={
            "code": CODE, "side": "BUY", "type": "MARKET", "quantity": 1})
        limit = client.post("/api/v1/orders", headers=alice, json={
            "code": CODE, "side": "BUY", "type": "LIMIT", "price": 70_000, "quantity": 1,
            "time_in_force": "GTC"})

    assert single.status_code == 404 and single.json()["code"] == "quote_not_found"
    assert multiple.status_code == 200 and multiple.json() == {
        "quotes": {CODE: None}, "missing": [CODE]}
    assert everything.status_code == 200 and everything.json()["missing"] == [CODE]
    assert listed.status_code == 200, listed.text
    assert [item["quote"] for item in listed.json()["items"]] == [None]
    assert portfolio.status_code == 200, portfolio.text
    assert portfolio.json()["positions"][0]["last_price"] is None
    for answer in (market, limit):
        assert answer.status_code == 422 and answer.json()["code"] == "no_quote", answer.text
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING
                and NAMES.quote(CODE) in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # once, not per read

    put(store, make_quote(CODE, price=71_000))  # the relayer's next tick: quotes again
    assert client.get(f"{BASE}/stock/{CODE}", headers=alice).json()["price"] == 71_000


@pytest.mark.parametrize("garbage", GARBAGE, ids=GARBAGE_IDS)
def test_the_fills_worker_skips_a_garbage_tick(garbage: bytes) -> None:
    assert parse_tick(b"1-1", {STREAM_QUOTE_FIELD.encode(): garbage}) is None
    good = parse_tick(b"1-2", {STREAM_QUOTE_FIELD.encode(): make_quote(CODE).to_json()})
    assert good is not None and good.code == CODE and good.price == 71200


@pytest.mark.parametrize("fault", ["client-kill", "restart"])
def test_the_fills_worker_rides_out_a_killed_connection_and_a_redis_restart(
    client: TestClient, real_redis_server: RedisServer, api_settings: ApiSettings,
    alice: dict[str, str], fault: str,
) -> None:
    store = real_redis_server.client()
    put(store, make_quote(CODE))
    db = database(client)

    def fills() -> int:
        return len(db.call(lambda s: s.scalars(select(Fill.id)).all()))

    placed(client, alice, side="BUY", type="LIMIT", quantity=2, price=70_200)
    process = start_worker(api_settings)
    try:
        publish_ticks(store, make_quote(CODE, price=69_900, volume=1, seq=1))
        wait_for(lambda: fills() == 1)
        if fault == "client-kill":  # the worker's connection, blocked in XREADGROUP
            assert store.client_kill_filter(_type="normal", skipme=True) >= 1
        else:
            store.close()
            real_redis_server.restart()  # empty: no stream, no consumer group
            store = real_redis_server.client()
        time.sleep(0.3)
        publish_ticks(store, make_quote(CODE, price=69_900, volume=1, seq=2))
        wait_for(lambda: fills() == 2 or process.poll() is not None)
        assert process.poll() is None, (
            "the fills worker exited: "
            + (process.stderr.read().decode(errors="replace")[-3000:] if process.stderr else ""))
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
        store.close()
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert fills() == 2
