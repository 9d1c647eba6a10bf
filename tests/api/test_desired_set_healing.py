"""A Redis that comes back empty (FLUSHALL, or a restart without persistence) heals by itself.

The real relayer process and the simulator, a private redis-server, and the app with its
lifespan (the background restore of api.subscriptions.restore) in this event loop: seeded codes
(RELAYER_SUBSCRIBE) and an admin code (SQL) flow again without anyone calling resync, and the
relayer never unsubscribes anything meanwhile. Before the fix the relayer reconciled against the
empty set and unsubscribed everything; the admin code came back only with `POST .../resync`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from redis.asyncio import Redis

from api.app import create_app
from api.models import Role
from api.settings import ApiSettings
from relayer.bus import BusNames, DesiredSource
from relayer.sim import SimServer
from tests.conftest import RedisServer
from tests.support.api import running_app
from tests.support.bus_client import eventually, wait_connected
from tests.support.env import scaled
from tests.support.relayer_process import RelayerProcess
from tests.support.tokens import bearer

NAMES = BusNames()
ADMIN_ID = 7
BASE = "/api/v1/admin/websocket/subscriptions"
TOPIC = "/topic/v1/kr/stock/trade/{}"
SEEDED = ["A005930", "A005380"]
ADMIN_CODE = "A000660"
CODES = [*SEEDED, ADMIN_CODE]


@pytest.fixture
def relayer(tmp_path: Path, api_settings: ApiSettings,
            sim: SimServer) -> Iterator[RelayerProcess]:
    process = RelayerProcess(tmp_path / "relayer.log", {
        "REDIS_URL": api_settings.redis_url, "RELAYER_UPSTREAM_URL": sim.url,
        "RELAYER_HEARTBEAT_MS": "1000", "RELAYER_SUBSCRIBE": ",".join(SEEDED),
        # Before the fix, the reconcile right after the loss emptied the upstream.
        "RELAYER_RECONCILE_INTERVAL_S": "0.3",
    }).start()
    yield process
    process.kill()


async def every_code_flows(bus: Redis, sim: SimServer) -> None:
    """Every code desired, subscribed upstream and written to Redis again (a quote key that
    Redis lost exists again only once a new tick has been written)."""
    topics = {TOPIC.format(code) for code in CODES}

    async def flowing() -> bool:
        desired = {member.decode() for member in await bus.smembers(NAMES.desired_subscriptions)}
        quotes = await bus.mget([NAMES.quote(code) for code in CODES])
        return (desired == topics and set(sim.subscriptions()) == topics
                and all(quote is not None for quote in quotes))

    await eventually(flowing, timeout=15, what="every code desired, subscribed and flowing")


# A key only this test writes: gone with everything else when Redis loses its data.
LOST_MARK = "test:lost-with-everything"


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["flushall", "restart-empty"])
async def test_every_code_flows_again_after_redis_loses_everything(
    relayer: RelayerProcess, api_settings: ApiSettings, real_redis_server: RedisServer,
    bus: Redis, sim: SimServer, fault: str,
) -> None:
    await wait_connected(bus, subscriptions=len(SEEDED))
    async with running_app(api_settings, bearer(api_settings, Role.ADMIN, ADMIN_ID)) as api:
        answer = await api.post(f"{BASE}/subscribe", params={"topic": ADMIN_CODE})
        assert answer.status_code == 200 and answer.json()["success"] is True, answer.text
        await every_code_flows(bus, sim)
        await bus.set(LOST_MARK, 1)

        if fault == "flushall":
            await bus.flushall()
        else:
            real_redis_server.restart()  # no persistence: everything is gone
            await bus.connection_pool.disconnect()  # this test's own connection died with it
        # Redis lost everything. (Asked of a key of this test's: the desired set itself may
        # already be restored by the time this runs, which a loaded machine showed.)
        assert await bus.exists(LOST_MARK) == 0

        await every_code_flows(bus, sim)  # nobody called resync
        marks = await bus.hgetall(NAMES.desired_initialised)
        assert set(marks) == {source.value.encode() for source in DesiredSource}
        assert not [f for f in sim.received if f.command == "UNSUBSCRIBE"]
        assert (await api.get("/ready")).status_code == 200
    relayer.assert_running()


def test_not_ready_while_the_desired_set_lacks_the_sql_subscriptions(
    api_settings: ApiSettings, store: redis.Redis
) -> None:
    # A restore check that never comes round in this test: only resync restores.
    settings = api_settings.model_copy(update={"subscriptions_restore_interval_s": 3600})
    admin = bearer(settings, Role.ADMIN, ADMIN_ID)
    with TestClient(create_app(settings)) as client:
        client.post(f"{BASE}/subscribe", params={"topic": ADMIN_CODE}, headers=admin)
        assert client.get("/ready").status_code == 200

        store.flushall()
        answer = client.get("/ready", headers=admin)
        assert answer.status_code == 503, answer.text
        body = answer.json()
        assert body["code"] == "not_ready" and body["desired_set"]["ok"] is False
        assert "not restored from SQL" in body["detail"]
        assert client.get("/ready").status_code == 503

        assert client.post(f"{BASE}/resync", headers=admin).json()["restored"] == 1
        assert client.get("/ready").status_code == 200


def test_the_background_check_restores_the_sql_part_within_its_interval(
    api_settings: ApiSettings, store: redis.Redis
) -> None:
    settings = api_settings.model_copy(update={"subscriptions_restore_interval_s": 0.1})
    admin = bearer(settings, Role.ADMIN, ADMIN_ID)
    with TestClient(create_app(settings)) as client:
        client.post(f"{BASE}/subscribe", params={"topic": ADMIN_CODE}, headers=admin)
        store.flushall()
        listener = store.pubsub()
        listener.subscribe(NAMES.commands)
        assert listener.get_message(timeout=scaled(2))["type"] == "subscribe"
        try:
            nudge = listener.get_message(timeout=scaled(5))  # the restore's resync
            assert nudge is not None and b'"resync"' in nudge["data"]
        finally:
            listener.close()
        assert store.smembers(NAMES.desired_subscriptions) == {
            TOPIC.format(ADMIN_CODE).encode()}
        assert store.hexists(NAMES.desired_initialised, DesiredSource.SQL.value)
        assert client.get("/ready").status_code == 200
