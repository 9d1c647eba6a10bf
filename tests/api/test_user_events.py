"""The `orders` channel's event log (api.streams.events) against real databases and a real
Redis: each action records exactly its events, with the data the REST API shows, in order; a
refused request records nothing; one user's offsets increase in commit order under concurrency;
the fills worker's fills and expiries are recorded; the Redis nudge comes after the commit and
never undoes it; the purge keeps a watermark that tells a client to reset; other users' events
are never read."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from api.db import Database
from api.fills.worker import FillsWorker
from api.ledger.service import deposit
from api.market.rules import Costs
from api.models import Order, Role, UserEvent, UserEventWatermark
from api.settings import ApiSettings
from api.streams import events
from api.streams.events import EventPublisher, InvalidOffset, UserEventOut
from relayer.bus import BusNames
from tests.api.test_orders import CODE, order, placed
from tests.conftest import RedisServer
from tests.support.api import database, metric
from tests.support.concurrency import concurrently
from tests.support.databases import mysql_unreachable_reason
from tests.support.env import scaled
from tests.support.quotes import make_quote, publish_ticks, put
from tests.support.tokens import bearer

NAMES = BusNames()


def register(client: TestClient, settings: ApiSettings, email: str) -> tuple[int, dict[str, str]]:
    response = client.post("/api/v1/auth/register",
                           json={"email": email, "password": "test-password-0001"})
    assert response.status_code == 201, response.text
    user_id: int = response.json()["id"]
    return user_id, bearer(settings, Role.USER, user_id)


@pytest.fixture
def bob(client: TestClient, api_settings: ApiSettings) -> tuple[int, dict[str, str]]:
    return register(client, api_settings, "bob@example.com")


def log(client: TestClient, user_id: int, after: int = 0) -> list[UserEventOut]:
    return database(client).call_read(events.events_after, user_id, after, 1000)


def kinds(entries: list[UserEventOut]) -> list[tuple[str, str]]:
    return [(entry.type.value, entry.event) for entry in entries]


def latest(client: TestClient, user_id: int) -> int:
    offset = database(client).call_read(events.latest_offset, user_id)
    assert offset is not None
    return offset


def detail(client: TestClient, headers: dict[str, str], order_id: int) -> dict[str, Any]:
    response = client.get(f"/api/v1/orders/{order_id}", headers=headers)
    assert response.status_code == 200
    answer: dict[str, Any] = response.json()
    return answer


# --- what each action records --------------------------------------------------------------------


def test_registration_records_the_opening_credit_as_the_ledger_lists_it(
        client: TestClient, bob: tuple[int, dict[str, str]]) -> None:
    user_id, headers = bob
    [opening] = log(client, user_id)
    [row] = client.get("/api/v1/transactions", headers=headers).json()["items"]
    assert (opening.type, opening.event, opening.data) == (events.EventType.CASH, "deposit", row)
    assert opening.offset == str(latest(client, user_id))


def test_a_market_buy_records_created_then_its_fill_then_filled(
        client: TestClient, store: redis.Redis, bob: tuple[int, dict[str, str]]) -> None:
    user_id, headers = bob
    put(store, make_quote(CODE, price=70_000))
    start = latest(client, user_id)

    body = placed(client, headers, side="BUY", type="MARKET", quantity=10)

    recorded = log(client, user_id, start)
    # The BUY and FEE ledger rows are the fill event's value and commission: no cash events.
    assert kinds(recorded) == [("order", "created"), ("fill", "executed"), ("order", "filled")]
    created, fill, filled = recorded
    assert (created.data["status"], created.data["fills"]) == ("OPEN", [])
    assert created.data["held_cash"] > 0  # the reservation at the upper limit
    answer = detail(client, headers, body["id"])
    assert filled.data == answer  # the order as GET answers it after the change
    assert fill.data == {**answer["fills"][0], "order_id": body["id"]}
    assert (fill.data["price"], fill.data["quantity"], fill.data["commission"],
            fill.data["rule"]) == (70_000, 10, 105, "market_order_last_trade")
    offsets = [int(entry.offset) for entry in recorded]
    assert offsets == sorted(offsets) and len(set(offsets)) == 3


def test_a_market_sell_records_its_taxes_in_the_fill(
        client: TestClient, store: redis.Redis, bob: tuple[int, dict[str, str]]) -> None:
    user_id, headers = bob
    put(store, make_quote(CODE, price=70_000))
    placed(client, headers, side="BUY", type="MARKET", quantity=10)
    start = latest(client, user_id)

    placed(client, headers, side="SELL", type="MARKET", quantity=10)

    created, fill, filled = log(client, user_id, start)
    assert (created.event, filled.event) == ("created", "filled")
    assert fill.data["tax"] == (fill.data["securities_transaction_tax"]
                                + fill.data["rural_special_tax"]) > 0


def test_an_ioc_records_its_partial_fill_and_the_cancelled_remainder(
        client: TestClient, store: redis.Redis, bob: tuple[int, dict[str, str]]) -> None:
    user_id, headers = bob
    put(store, make_quote(CODE, price=70_000, volume=3))
    start = latest(client, user_id)

    body = placed(client, headers, side="BUY", type="LIMIT", quantity=5, price=70_000,
                  time_in_force="IOC")

    recorded = log(client, user_id, start)
    assert kinds(recorded) == [("order", "created"), ("fill", "executed"),
                               ("order", "partially_filled"), ("order", "cancelled")]
    assert recorded[1].data["quantity"] == 3
    assert recorded[-1].data["reason"] == "ioc_remainder"
    assert recorded[-1].data == detail(client, headers, body["id"])


def test_a_resting_order_records_modified_and_cancelled(
        client: TestClient, store: redis.Redis, bob: tuple[int, dict[str, str]]) -> None:
    user_id, headers = bob
    put(store, make_quote(CODE, price=71_200))
    start = latest(client, user_id)
    body = placed(client, headers, side="BUY", type="LIMIT", quantity=2, price=70_000)

    assert client.patch(f"/api/v1/orders/{body['id']}", headers=headers,
                        json={"price": 70_100}).status_code == 200
    assert client.delete(f"/api/v1/orders/{body['id']}", headers=headers).status_code == 200

    recorded = log(client, user_id, start)
    assert kinds(recorded) == [("order", "created"), ("order", "modified"),
                               ("order", "cancelled")]
    assert [e.data["price"] for e in recorded] == [70_000, 70_100, 70_100]
    assert (recorded[-1].data["status"], recorded[-1].data["reason"]) == ("CANCELLED", "user")
    assert recorded[-1].data == detail(client, headers, body["id"])


def test_deposits_and_withdrawals_record_the_ledger_row(
        client: TestClient, bob: tuple[int, dict[str, str]]) -> None:
    user_id, headers = bob
    start = latest(client, user_id)

    assert client.post("/api/v1/account/deposit", headers=headers,
                       json={"amount": 1000}).status_code == 200
    assert client.post("/api/v1/account/withdraw", headers=headers,
                       json={"amount": 300}).status_code == 200

    recorded = log(client, user_id, start)
    assert kinds(recorded) == [("cash", "deposit"), ("cash", "withdraw")]
    rows = client.get("/api/v1/transactions", headers=headers).json()["items"]
    assert [e.data for e in recorded] == [rows[1], rows[0]]  # the ledger lists newest first


def test_a_refused_request_records_nothing(
        client: TestClient, store: redis.Redis, bob: tuple[int, dict[str, str]]) -> None:
    user_id, headers = bob
    put(store, make_quote(CODE, price=70_000))
    start = latest(client, user_id)

    assert order(client, headers, side="BUY", type="MARKET", quantity=1000).status_code == 422
    assert order(client, headers, side="SELL", type="MARKET", quantity=1).status_code == 422
    assert order(client, headers, side="BUY", type="LIMIT", quantity=1,
                 price=70_001).status_code == 422
    assert client.post("/api/v1/account/withdraw", headers=headers,
                       json={"amount": 10**12}).status_code == 422
    assert client.post("/api/v1/account/deposit", headers=headers,
                       json={"amount": 10**12}).status_code == 422

    assert log(client, user_id, start) == []
    assert latest(client, user_id) == start


def test_an_idempotent_repeat_records_nothing_more(
        client: TestClient, store: redis.Redis, bob: tuple[int, dict[str, str]]) -> None:
    user_id, headers = bob
    put(store, make_quote(CODE, price=70_000))
    start = latest(client, user_id)
    keyed = {**headers, "Idempotency-Key": "k-1"}
    for _ in range(2):
        assert client.post("/api/v1/orders", headers=keyed, json={
            "code": CODE, "side": "BUY", "type": "MARKET", "quantity": 1}).status_code == 201

    assert kinds(log(client, user_id, start)) == [
        ("order", "created"), ("fill", "executed"), ("order", "filled")]


def test_another_users_events_are_never_read(
        client: TestClient, store: redis.Redis, api_settings: ApiSettings,
        bob: tuple[int, dict[str, str]]) -> None:
    bob_id, bob_headers = bob
    carol_id, carol_headers = register(client, api_settings, "carol@example.com")
    put(store, make_quote(CODE, price=70_000))
    placed(client, bob_headers, side="BUY", type="MARKET", quantity=2)
    placed(client, carol_headers, side="BUY", type="MARKET", quantity=1)

    bobs = log(client, bob_id)
    carols = log(client, carol_id)
    assert {e.offset for e in bobs}.isdisjoint({e.offset for e in carols})
    assert [e.data["quantity"] for e in bobs if e.type == "fill"] == [2]
    assert [e.data["quantity"] for e in carols if e.type == "fill"] == [1]
    # Bob resuming from an offset of Carol's beyond his own is told to reset, not given hers.
    assert int(carols[-1].offset) > latest(client, bob_id)
    assert database(client).call_read(events.is_expired, bob_id, int(carols[-1].offset))


# --- the fills worker ----------------------------------------------------------------------------


@pytest.fixture
def worker(client: TestClient, store: redis.Redis) -> Iterator[FillsWorker]:
    fills = FillsWorker(database(client), store, NAMES, Costs(Decimal("0.00015")),
                        group="fills", batch_size=100, block_ms=10, idempotency_ttl_s=86_400)
    fills.ensure_group()
    yield fills


def test_the_fills_worker_records_its_fills_and_expiries(
        client: TestClient, store: redis.Redis, worker: FillsWorker,
        bob: tuple[int, dict[str, str]]) -> None:
    user_id, headers = bob
    put(store, make_quote(CODE, price=70_500))
    filled = placed(client, headers, side="BUY", type="LIMIT", quantity=10, price=70_000)
    expiring = placed(client, headers, side="BUY", type="LIMIT", quantity=1, price=60_000)
    start = latest(client, user_id)
    [tick_id] = publish_ticks(store, make_quote(CODE, price=69_900, volume=4, seq=2))

    while not worker.step():
        pass
    worker.expire_due(datetime.fromisoformat(expiring["expires_at"]) + timedelta(minutes=2))

    recorded = log(client, user_id, start)
    assert kinds(recorded) == [("fill", "executed"), ("order", "partially_filled"),
                               ("order", "expired"), ("order", "expired")]
    fill = recorded[0].data
    assert (fill["order_id"], fill["quantity"], fill["price"], fill["tick_id"], fill["rule"]) == (
        filled["id"], 4, 70_000, tick_id, "resting_limit")
    assert {e.data["id"] for e in recorded[2:]} == {filled["id"], expiring["id"]}
    assert all(e.data["reason"] == "session_close" for e in recorded[2:])


# --- ordering under concurrency (MariaDB) --------------------------------------------------------


def test_concurrent_orders_of_one_user_get_offsets_in_commit_order(
        client: TestClient, store: redis.Redis, bob: tuple[int, dict[str, str]]) -> None:
    if mysql_unreachable_reason() is not None:
        pytest.skip(f"SKIPPED MySQL-only check: {mysql_unreachable_reason()}")
    user_id, headers = bob
    put(store, make_quote(CODE, price=70_000))
    start = latest(client, user_id)

    responses = concurrently(20, lambda _: order(client, headers, side="BUY", type="MARKET",
                                                 quantity=1))

    assert all(r.status_code == 201 for r in responses), [r.text for r in responses]
    recorded = log(client, user_id, start)
    assert len(recorded) == 60
    offsets = [int(e.offset) for e in recorded]
    assert offsets == sorted(set(offsets))
    # Each order's three events are consecutive: one transaction at a time per user, and the
    # orders (whose ids are given under the same lock) come in the order they committed.
    order_ids = [e.data["id"] if e.type == "order" else e.data["order_id"] for e in recorded]
    assert order_ids == sorted(order_ids)
    assert kinds(recorded) == [("order", "created"), ("fill", "executed"),
                               ("order", "filled")] * 20


# --- the notification after commit --------------------------------------------------------------


def next_message(pubsub: redis.client.PubSub, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
        if message is not None:
            return message
    return None


def next_newer(pubsub: redis.client.PubSub, seen: dict[int, int], timeout_s: float) -> Any:
    """The next nudge that tells of an event after `seen` (user id -> the offset already
    recorded before the test's own change), or None within `timeout_s`. A nudge of an earlier
    commit (a registration's own, late on a busy machine: seen in CI) carries an offset not
    above it, and is skipped."""
    after = {NAMES.user_events(user).encode(): offset for user, offset in seen.items()}
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        message = next_message(pubsub, left)
        if message is None or int(message["data"]) > after[message["channel"]]:
            return message
    return None


def test_the_notification_is_published_after_the_commit_and_not_before(
        client: TestClient, store: redis.Redis, bob: tuple[int, dict[str, str]]) -> None:
    user_id, _ = bob
    pubsub = store.pubsub()
    pubsub.subscribe(NAMES.user_events(user_id))
    # (the subscription is confirmed)
    assert next_newer(pubsub, {user_id: latest(client, user_id)}, 0.2) is None
    seen_inside: list[Any] = []

    def deposit_and_look(session: Session) -> int:
        deposit(session, user_id, 1000, max_krw=10**9, daily_max_krw=10**9,
                           now=datetime.now(UTC))
        session.flush()
        newest: int = session.scalar(select(func.max(UserEvent.id))
                                     .where(UserEvent.user_id == user_id)) or 0
        seen_inside.append(next_message(pubsub, 0.3))
        return newest

    offset = database(client).call(deposit_and_look)

    # Nothing of this transaction's before its commit. (The registration's own notification
    # may arrive late on a busy machine: it carries an older offset.)
    [inside] = seen_inside
    assert inside is None or int(inside["data"]) < offset
    message = next_message(pubsub, scaled(5))
    while message is not None and int(message["data"]) < offset:
        message = next_message(pubsub, scaled(5))
    assert message is not None and message["data"] == str(offset).encode()
    pubsub.close()


def test_an_order_over_rest_nudges_its_users_channel_with_the_newest_offset(
        client: TestClient, store: redis.Redis, bob: tuple[int, dict[str, str]],
        api_settings: ApiSettings) -> None:
    user_id, headers = bob
    other_id, _ = register(client, api_settings, "dave@example.com")
    put(store, make_quote(CODE, price=70_000))
    pubsub = store.pubsub()
    pubsub.subscribe(NAMES.user_events(user_id), NAMES.user_events(other_id))
    seen = {user_id: latest(client, user_id), other_id: latest(client, other_id)}
    assert next_newer(pubsub, seen, 0.2) is None

    placed(client, headers, side="BUY", type="MARKET", quantity=1)

    # One message for the whole transaction (three events), on Bob's channel only.
    message = next_newer(pubsub, seen, scaled(5))
    assert message is not None
    assert (message["channel"], message["data"]) == (
        NAMES.user_events(user_id).encode(), str(latest(client, user_id)).encode())
    assert next_newer(pubsub, seen, 0.3) is None
    pubsub.close()


@pytest.mark.private_redis
def test_a_redis_outage_during_the_publish_keeps_the_change_and_its_event(
        client: TestClient, real_redis_server: RedisServer,
        bob: tuple[int, dict[str, str]]) -> None:
    user_id, headers = bob
    publisher = database(client).commit_listener
    assert isinstance(publisher, EventPublisher)
    start = latest(client, user_id)
    failed = 'stocking_user_event_notifications_total{outcome="failed"}'
    failed_before = metric(client.get("/metrics").text, failed)
    real_redis_server.stop()

    response = client.post("/api/v1/account/deposit", headers=headers, json={"amount": 1000})

    assert response.status_code == 200, response.text
    [event] = log(client, user_id, start)
    assert (event.event, event.data) == ("deposit", response.json()["entry"])
    deadline = time.monotonic() + scaled(5)
    while (metric(client.get("/metrics").text, failed) == failed_before
           and time.monotonic() < deadline):
        time.sleep(0.02)
    # Tried after the commit, failed, and nothing undone.
    assert metric(client.get("/metrics").text, failed) > failed_before
    real_redis_server.start()


def test_a_rolled_back_transaction_publishes_nothing(
        client: TestClient, store: redis.Redis, bob: tuple[int, dict[str, str]]) -> None:
    user_id, _ = bob
    pubsub = store.pubsub()
    pubsub.subscribe(NAMES.user_events(user_id))
    start = latest(client, user_id)
    assert next_newer(pubsub, {user_id: start}, 0.2) is None

    def deposit_then_fail(session: Session) -> None:
        deposit(session, user_id, 1000, max_krw=10**9, daily_max_krw=10**9,
                now=datetime.now(UTC))
        session.flush()
        raise RuntimeError("refused after the write")

    with pytest.raises(RuntimeError):
        database(client).call(deposit_then_fail)

    assert next_newer(pubsub, {user_id: start}, 0.5) is None
    assert log(client, user_id, start) == []
    pubsub.close()


# --- retention and reset ------------------------------------------------------------------------


def age_events(db: Database, user_id: int, hours: float) -> None:
    def age(session: Session) -> None:
        session.execute(update(UserEvent).where(UserEvent.user_id == user_id)
                        .values(created_at=datetime.now(UTC) - timedelta(hours=hours)))
    db.call(age)


def test_the_purge_keeps_a_watermark_that_tells_a_late_client_to_reset(
        client: TestClient, store: redis.Redis, worker: FillsWorker, api_settings: ApiSettings,
        bob: tuple[int, dict[str, str]]) -> None:
    user_id, headers = bob
    quiet_id, _ = register(client, api_settings, "quiet@example.com")
    db = database(client)
    for amount in (100, 200):
        client.post("/api/v1/account/deposit", headers=headers, json={"amount": amount})
    old = log(client, user_id)  # the opening credit and two deposits
    quiet_offset = latest(client, quiet_id)
    age_events(db, user_id, 25)
    age_events(db, quiet_id, 25)
    client.post("/api/v1/account/deposit", headers=headers, json={"amount": 300})
    [new] = log(client, user_id, int(old[-1].offset))

    assert worker.purge_user_events() == 4

    assert log(client, user_id) == [new]
    mark = db.call_read(lambda s: s.get(UserEventWatermark, user_id))
    assert mark is not None and mark.purged_upto == int(old[-1].offset)
    # Resuming from before the last purged event: it was missed, so reset.
    for since in (0, int(old[0].offset), int(old[-2].offset)):
        assert db.call_read(events.replay, user_id, since).reset
    # From the last purged event itself (the client had it): nothing missed.
    resumed = db.call_read(events.replay, user_id, int(old[-1].offset))
    assert (resumed.reset, resumed.events) == (False, [new])
    # A quiet user whose only event was purged resumes from it without a reset, and a client
    # that starts live starts from it.
    assert not db.call_read(events.is_expired, quiet_id, quiet_offset)
    assert db.call_read(events.latest_offset, quiet_id) == quiet_offset
    assert db.call_read(events.replay, quiet_id, quiet_offset).events == []
    # Recent events are kept, and so is the table's newest row whatever its age.
    age_events(db, user_id, 25)
    assert worker.purge_user_events() == 0
    assert [e.offset for e in log(client, user_id)] == [new.offset]


def test_retention_is_at_least_a_day(redis_server: RedisServer, database_url: str) -> None:
    from pydantic import ValidationError

    from tests.support.api import app_settings
    with pytest.raises(ValidationError):
        app_settings(redis_server.url, database_url, user_events_retention_s=3600)


# --- offsets and messages ----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "-1", "+1", "1.0", "abc", " 1", "１", "9" * 20,
                                  str(2**63)])
def test_a_malformed_offset_is_refused_with_a_stable_code(text: str) -> None:
    with pytest.raises(InvalidOffset) as refused:
        events.parse_offset(text)
    assert (refused.value.status, refused.value.code) == (422, "invalid_offset")


def test_offsets_are_decimal_text() -> None:
    assert events.parse_offset("0") == 0
    assert events.parse_offset(str(2**63 - 1)) == 2**63 - 1
    assert events.events_after is not None and events.format_offset(17) == "17"


def test_a_message_splices_the_stored_json_as_it_is() -> None:
    stored = UserEventOut("17", events.EventType.FILL, "executed", '{"id":3,"price":70000}',
                          datetime(2026, 11, 29, tzinfo=UTC))
    assert stored.message() == ('{"channel":"orders","type":"fill","event":"executed",'
                                '"offset":"17","data":{"id":3,"price":70000}}')
    assert stored.data == {"id": 3, "price": 70000}
    assert NAMES.user_events(42) == "stocking:events:42"


def test_events_after_none_is_nothing(client: TestClient,
                                      bob: tuple[int, dict[str, str]]) -> None:
    user_id, _ = bob
    assert database(client).call_read(events.events_after, user_id, None, 10) == []
    assert len(log(client, user_id)) == 1
    assert [o.id for o in database(client).call_read(
        lambda s: list(s.scalars(select(Order))))] == []
