"""Admin subscriptions through HTTP: the command flow (docs/ARCHITECTURE.md) against a real Redis,
first with no relayer or a fake one that never answers, then end to end with the real relayer
process and the simulator."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest
import redis
from fastapi.testclient import TestClient
from redis.asyncio import Redis

from api.app import create_app
from api.models import Role
from api.settings import ApiSettings
from relayer.bus import BusNames, Command, CommandType, format_utc
from relayer.sim import SimServer
from tests.conftest import RedisServer
from tests.support.api import running_app
from tests.support.bus_client import eventually, latest_quote, wait_connected
from tests.support.env import scaled
from tests.support.relayer_process import RelayerProcess
from tests.support.tokens import bearer

NAMES = BusNames()
ADMIN_ID = 7
BASE = "/api/v1/admin/websocket/subscriptions"
QUOTES = "/api/v1/trading/realtime"
SAMSUNG = "/topic/v1/kr/stock/trade/A005930"
HYNIX = "/topic/v1/kr/stock/trade/A000660"


@pytest.fixture
def admin(api_settings: ApiSettings) -> dict[str, str]:
    return bearer(api_settings, Role.ADMIN, ADMIN_ID)


def write_fresh_health(store: redis.Redis) -> None:
    store.hset(NAMES.relayer_health, mapping={
        "state": "connected", "updated_at": format_utc(datetime.now(UTC), millis=True),
        "rejected_topics": "[]",
    })


def members(store: redis.Redis) -> set[str]:
    return {m.decode() for m in store.smembers(NAMES.desired_subscriptions)}


# ---------------------------------------------------------------------------------------------
# Without a relayer


def test_subscribe_without_a_relayer_answers_503_at_once_and_keeps_the_topic(
    client: TestClient, store: redis.Redis, admin: dict[str, str]
) -> None:
    started = time.monotonic()
    answer = client.post(f"{BASE}/subscribe", params={"topic": "A000660"}, headers=admin)
    elapsed = time.monotonic() - started
    assert answer.status_code == 503
    assert elapsed < scaled(1.0)  # no wait for an answer nobody will send
    body = answer.json()
    assert body["success"] is False and body["command_id"] is None
    assert body["topic"] == HYNIX and body["outcome"] == "relayer_unavailable"
    assert "no relayer is running" in body["message"]
    assert "stored" in body["message"]
    assert members(store) == {HYNIX}

    listed = client.get(BASE, headers=admin).json()
    assert listed["subscriptions"] == [{
        "topic": HYNIX, "code": "A000660", "stored": True, "desired": True, "active": False,
        "sub_id": None, "since": None, "created_at": listed["subscriptions"][0]["created_at"],
        "created_by": ADMIN_ID,
    }]
    assert listed["subscriptions"][0]["created_at"]
    assert listed["desired_count"] == 1 and listed["active_count"] == 0
    assert listed["relayer"] == {"alive": False, "state": None}

    # Idempotent: the same topic again (bare 6-digit form) is the same subscription.
    again = client.post(f"{BASE}/subscribe", params={"topic": "000660"}, headers=admin)
    assert again.status_code == 503
    assert len(client.get(BASE, headers=admin).json()["subscriptions"]) == 1


def test_fresh_health_but_nobody_listening_is_503(
    client: TestClient, store: redis.Redis, admin: dict[str, str]
) -> None:
    write_fresh_health(store)  # e.g. a relayer that lost its Redis pub/sub connection
    answer = client.post(f"{BASE}/subscribe", params={"topic": SAMSUNG}, headers=admin)
    assert answer.status_code == 503
    assert "not listening for commands" in answer.json()["message"]
    assert members(store) == {SAMSUNG}


def test_relayer_that_does_not_answer_in_time_gets_202_with_the_command_id(
    api_settings: ApiSettings, store: redis.Redis, redis_server: RedisServer
) -> None:
    settings = api_settings.model_copy(update={"command_timeout_s": 0.3})
    admin = bearer(settings, Role.ADMIN, ADMIN_ID)
    write_fresh_health(store)
    fake_relayer = redis_server.client().pubsub()
    fake_relayer.subscribe(NAMES.commands)  # listens, never answers
    assert fake_relayer.get_message(timeout=scaled(2))["type"] == "subscribe"
    try:
        with TestClient(create_app(settings)) as client:
            started = time.monotonic()
            answer = client.post(f"{BASE}/subscribe", params={"topic": HYNIX}, headers=admin)
            elapsed = time.monotonic() - started
        assert answer.status_code == 202
        assert 0.25 <= elapsed < scaled(3)
        body = answer.json()
        assert body["success"] is False and body["outcome"] == "pending"
        assert body["message"] == ("the relayer has not answered yet; the subscription is "
                                   "stored and will be applied")
        sent = fake_relayer.get_message(timeout=scaled(2))
        command = Command.from_json(sent["data"])
        assert command.id == body["command_id"]
        assert command.type is CommandType.SUBSCRIBE and command.topic == HYNIX
        assert members(store) == {HYNIX}
    finally:
        fake_relayer.close()


def test_unsubscribe_without_a_relayer_removes_everywhere_then_404(
    client: TestClient, store: redis.Redis, admin: dict[str, str]
) -> None:
    client.post(f"{BASE}/subscribe", params={"topic": HYNIX}, headers=admin)
    answer = client.delete(f"{BASE}/unsubscribe", params={"topic": "A000660"}, headers=admin)
    assert answer.status_code == 503
    assert answer.json()["success"] is False and "removal is stored" in answer.json()["message"]
    assert members(store) == set()
    assert client.get(BASE, headers=admin).json()["subscriptions"] == []

    answer = client.delete(f"{BASE}/unsubscribe", params={"topic": "A000660"}, headers=admin)
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["code"] == "subscription_not_found"


def test_topics_only_in_redis_are_listed_and_can_be_unsubscribed(
    client: TestClient, store: redis.Redis, admin: dict[str, str]
) -> None:
    # Seeded by RELAYER_SUBSCRIBE (no SQL row); a bare code added by hand.
    store.sadd(NAMES.desired_subscriptions, SAMSUNG, "A035420")
    listed = client.get(BASE, headers=admin).json()["subscriptions"]
    assert [(s["topic"], s["stored"], s["desired"]) for s in listed] == [
        (SAMSUNG, False, True), ("A035420", False, True)]
    assert client.delete(f"{BASE}/unsubscribe", params={"topic": SAMSUNG},
                         headers=admin).status_code == 503
    assert client.delete(f"{BASE}/unsubscribe", params={"topic": "A035420"},
                         headers=admin).status_code == 503
    assert members(store) == set()


@pytest.mark.parametrize("topic", ["nope", "A00066", "/topic/v1/kr/stock/trade/A00066",
                                   "/topic/v1/kr/stock/quote/A005930", ""])
def test_invalid_topic_is_422(client: TestClient, store: redis.Redis, admin: dict[str, str],
                              topic: str) -> None:
    for method, path in (("POST", "subscribe"), ("DELETE", "unsubscribe")):
        answer = client.request(method, f"{BASE}/{path}", params={"topic": topic},
                                headers=admin)
        assert answer.status_code == 422, (method, topic)
        assert answer.json()["code"] == "invalid_topic"
    assert members(store) == set()


def test_admin_routes_need_the_admin_role(client: TestClient, api_settings: ApiSettings) -> None:
    user = bearer(api_settings, Role.USER, 8)
    calls = [("GET", BASE), ("POST", f"{BASE}/subscribe?topic=A000660"),
             ("DELETE", f"{BASE}/unsubscribe?topic=A000660"), ("POST", f"{BASE}/resync")]
    for method, url in calls:
        answer = client.request(method, url, headers=user)
        assert answer.status_code == 403, url
        assert answer.json()["code"] == "admin_required"
        assert client.request(method, url).status_code == 401


def test_worker_start_restores_the_desired_set_from_sql(
    api_settings: ApiSettings, store: redis.Redis, redis_server: RedisServer
) -> None:
    admin = bearer(api_settings, Role.ADMIN, ADMIN_ID)
    with TestClient(create_app(api_settings)) as client:
        for topic in (SAMSUNG, HYNIX):
            client.post(f"{BASE}/subscribe", params={"topic": topic}, headers=admin)
    store.flushall()  # Redis restarted empty
    listener = redis_server.client().pubsub()
    listener.subscribe(NAMES.commands)
    assert listener.get_message(timeout=scaled(2))["type"] == "subscribe"
    try:
        with TestClient(create_app(api_settings)):
            assert members(store) == {SAMSUNG, HYNIX}
        nudge = Command.from_json(listener.get_message(timeout=scaled(2))["data"])
        assert nudge.type is CommandType.RESYNC
        # A start with nothing missing sends no nudge.
        with TestClient(create_app(api_settings)):
            pass
        assert listener.get_message(timeout=0.2) is None
    finally:
        listener.close()


def test_resync_without_a_relayer_restores_and_answers_503(
    client: TestClient, store: redis.Redis, admin: dict[str, str]
) -> None:
    client.post(f"{BASE}/subscribe", params={"topic": HYNIX}, headers=admin)
    store.flushall()
    answer = client.post(f"{BASE}/resync", headers=admin)
    assert answer.status_code == 503
    body = answer.json()
    assert body["restored"] == 1 and body["desired_count"] == 1 and body["topic"] is None
    assert members(store) == {HYNIX}


# ---------------------------------------------------------------------------------------------
# End to end: the real relayer process, the simulator, the app in this event loop


StartRelayer = Callable[..., RelayerProcess]


@pytest.fixture
def start_relayer(tmp_path: Path, api_settings: ApiSettings,
                  sim: SimServer) -> Iterator[StartRelayer]:
    started: list[RelayerProcess] = []

    def start(**env: str) -> RelayerProcess:
        base = {"REDIS_URL": api_settings.redis_url, "RELAYER_UPSTREAM": "sim",
                "RELAYER_UPSTREAM_URL": sim.url, "RELAYER_HEARTBEAT_MS": "1000"}
        process = RelayerProcess(tmp_path / "relayer.log", {**base, **env}).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


async def quote_seq(api: httpx.AsyncClient, code: str) -> int | None:
    answer = await api.get(f"{QUOTES}/stock/{code}")
    return int(answer.json()["seq"]) if answer.status_code == 200 else None


@pytest.mark.slow
async def test_subscribe_quote_unsubscribe_end_to_end(
    start_relayer: StartRelayer, api_settings: ApiSettings, bus: Redis, sim: SimServer
) -> None:
    start_relayer()
    await wait_connected(bus, subscriptions=0)
    async with running_app(api_settings, bearer(api_settings, Role.ADMIN, ADMIN_ID)) as api:
        answer = await api.post(f"{BASE}/subscribe", params={"topic": "A000660"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        # "already subscribed" when the relayer's own reading of the desired set (written
        # before the command is sent) applied it first: a race a loaded machine shows.
        assert body == {"success": True, "message": body["message"], "topic": HYNIX,
                        "command_id": body["command_id"], "active": 1, "outcome": "applied"}
        assert body["message"] in ("subscribed", "already subscribed")
        assert HYNIX in sim.subscriptions()

        async def quote_served() -> bool:
            return await quote_seq(api, "A000660") is not None

        await eventually(quote_served, what="a quote for A000660 through the API")
        quote = (await api.get(f"{QUOTES}/stock/A000660")).json()
        assert quote["code"] == "A000660" and quote["stale"] is False
        assert isinstance(quote["price"], int) and quote["low"] <= quote["price"] <= quote["high"]
        everything = (await api.get(f"{QUOTES}/stocks/all")).json()
        assert list(everything["quotes"]) == ["A000660"]
        await wait_connected(bus, subscriptions=1)  # the health hash lags by one refresh
        health = (await api.get(f"{QUOTES}/daemon/health")).json()
        assert health["alive"] is True and health["state"] == "connected"
        assert health["subscriptions"] == 1 and health["upstream"] == f"sim {sim.url}"

        listed = (await api.get(BASE)).json()
        [entry] = listed["subscriptions"]
        assert entry["topic"] == HYNIX and entry["stored"] and entry["desired"]
        assert entry["active"] and entry["sub_id"] and entry["since"]
        assert listed["relayer"] == {"alive": True, "state": "connected"}

        again = (await api.post(f"{BASE}/subscribe", params={"topic": HYNIX})).json()
        assert again["success"] is True and again["message"] == "already subscribed"

        answer = await api.delete(f"{BASE}/unsubscribe", params={"topic": HYNIX})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["success"] is True and body["message"] == "unsubscribed"
        assert body["active"] == 0
        assert sim.subscriptions() == {}
        # The quote stops moving: 200 ticks/s when subscribed, so a quarter second is telling
        # (and longer than the API's per-worker quote memo).
        length, last = await bus.xlen(NAMES.tick_stream), await latest_quote(bus, "A000660")
        await asyncio.sleep(0.25)
        assert await bus.xlen(NAMES.tick_stream) == length
        assert last is not None and await quote_seq(api, "A000660") == last.seq
        assert (await api.get(f"{QUOTES}/stocks/all")).json() == {"quotes": {}, "missing": []}
        assert (await api.get(BASE)).json()["subscriptions"] == []


@pytest.mark.slow
async def test_seeded_topics_show_as_desired_and_can_be_unsubscribed(
    start_relayer: StartRelayer, api_settings: ApiSettings, bus: Redis, sim: SimServer
) -> None:
    start_relayer(RELAYER_SUBSCRIBE="A005930")
    await wait_connected(bus, subscriptions=1)
    async with running_app(api_settings, bearer(api_settings, Role.ADMIN, ADMIN_ID)) as api:
        await api.post(f"{BASE}/subscribe", params={"topic": HYNIX})
        listed = (await api.get(BASE)).json()
        assert [(s["topic"], s["stored"], s["desired"], s["active"])
                for s in listed["subscriptions"]] == [
            (HYNIX, True, True, True), (SAMSUNG, False, True, True)]
        assert listed["desired_count"] == 2 and listed["active_count"] == 2

        answer = await api.delete(f"{BASE}/unsubscribe", params={"topic": "A005930"})
        assert answer.status_code == 200 and answer.json()["success"] is True
        assert set(sim.subscriptions()) == {HYNIX}


# A Redis that loses the desired set heals without a resync: tests/api/test_desired_set_healing.py


def test_relayer_answer_is_decoded_from_the_result_list(
    api_settings: ApiSettings, store: redis.Redis, redis_server: RedisServer
) -> None:
    """The 200 path with a scripted relayer: whatever it answers is what the admin reads."""
    write_fresh_health(store)
    listener = redis_server.client().pubsub()
    listener.subscribe(NAMES.commands)
    assert listener.get_message(timeout=scaled(2))["type"] == "subscribe"

    def answer_one() -> None:
        message = None
        while message is None:
            message = listener.get_message(timeout=scaled(5))
        command = Command.from_json(message["data"])
        result = {"id": command.id, "ok": False, "topic": command.topic,
                  "message": "subscription cap reached (100 per connection)", "active": 100}
        redis_server.client().lpush(NAMES.command_result(command.id), orjson.dumps(result))

    answering = threading.Thread(target=answer_one)
    answering.start()
    try:
        with TestClient(create_app(api_settings)) as client:
            answer = client.post(f"{BASE}/subscribe", params={"topic": HYNIX},
                                 headers=bearer(api_settings, Role.ADMIN, ADMIN_ID))
        assert answer.status_code == 200
        body = answer.json()
        assert body["success"] is False and body["outcome"] == "failed"
        assert body["message"] == "subscription cap reached (100 per connection)"
        assert body["active"] == 100
    finally:
        answering.join(timeout=scaled(5))
        listener.close()
