"""The `stomp` adapter against a standard broker: RabbitMQ's Web-STOMP endpoint.

The relayer is configured by environment only (URL, login, passcode, virtual host, topic
template); an independent STOMP client (stomp.py, over plain STOMP) publishes Toss-format ticks.
Needs RabbitMQ on this machine; the Web-STOMP plugin is enabled here when it is not yet.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import stomp
from redis.asyncio import Redis

from tests.conftest import RedisServer
from tests.support.bus_client import eventually, health, latest_quote, wait_connected
from tests.support.env import scaled
from tests.support.relayer_process import RelayerProcess

WEB_STOMP_PORT = 15674
STOMP_PORT = 61613
TEMPLATE = "/topic/stocking.trade.{code}"

pytestmark = pytest.mark.slow


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def broker_user() -> Iterator[tuple[str, str]]:
    """A RabbitMQ user of our own with a distinctive passcode (so we can grep logs for it)."""
    if not shutil.which("rabbitmqctl"):
        pytest.skip("SKIPPED: RabbitMQ is not installed; the Web-STOMP relay test needs a "
                    "standard STOMP broker (apt-get install rabbitmq-server)")
    if not _listening(WEB_STOMP_PORT) or not _listening(STOMP_PORT):
        try:
            _run("rabbitmq-plugins", "enable", "rabbitmq_web_stomp")
        except (subprocess.CalledProcessError, OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"SKIPPED: cannot enable RabbitMQ's Web-STOMP plugin: {exc}")
        deadline = time.monotonic() + scaled(30)
        while not (_listening(WEB_STOMP_PORT) and _listening(STOMP_PORT)):
            if time.monotonic() > deadline:
                pytest.skip("SKIPPED: RabbitMQ Web-STOMP did not start listening")
            time.sleep(0.2)
    user, passcode = "stocking_test", f"pw-{secrets.token_hex(12)}"
    try:
        subprocess.run(["rabbitmqctl", "delete_user", user], capture_output=True, timeout=60)
        _run("rabbitmqctl", "add_user", user, passcode)
        _run("rabbitmqctl", "set_permissions", "-p", "/", user, ".*", ".*", ".*")
    except (subprocess.CalledProcessError, OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"SKIPPED: cannot create a RabbitMQ user: {exc}")
    yield user, passcode
    subprocess.run(["rabbitmqctl", "delete_user", user], capture_output=True, timeout=60)


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


def toss_tick(code: str, price: int, **extra: object) -> bytes:
    tick = {"code": code, "dt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "session": "REGULAR", "exchange": "KRX", "currency": "KRW", "base": 70500,
            "close": price, "volume": 3, "tradeType": "SELL", "changeType": "UP",
            "tradingStrength": 98.5, "cumulativeVolume": 1000, "cumulativeAmount": 71000000}
    return orjson.dumps({**tick, **extra})


async def test_relays_from_a_broker_web_stomp_endpoint(
    broker_user: tuple[str, str], redis_server: RedisServer, redis: Redis, tmp_path: Path
) -> None:
    user, passcode = broker_user
    relayer = RelayerProcess(tmp_path / "relayer.log", {
        "REDIS_URL": redis_server.url,
        "RELAYER_UPSTREAM": "stomp",
        "RELAYER_UPSTREAM_URL": f"ws://127.0.0.1:{WEB_STOMP_PORT}/ws",
        "RELAYER_STOMP_LOGIN": user,
        "RELAYER_STOMP_PASSCODE": passcode,
        "RELAYER_STOMP_HOST": "/",
        "RELAYER_TOPIC_TEMPLATE": TEMPLATE,
        "RELAYER_SUBSCRIBE": "A005930",
    }).start()
    try:
        await wait_connected(redis, subscriptions=1, timeout=20)
        publisher = stomp.Connection([("127.0.0.1", STOMP_PORT)])
        publisher.connect(user, passcode, wait=True)
        destination = TEMPLATE.format(code="A005930")
        try:
            publisher.send(destination, b"{not json", content_type="application/json")
            publisher.send(destination, toss_tick("A005930", 71300),
                           content_type="application/json")
        finally:
            publisher.disconnect()

        async def relayed() -> bool:
            quote = await latest_quote(redis, "A005930")
            return quote is not None and quote.price == 71300

        await eventually(relayed, timeout=10, what="the broker's tick in Redis")
        quote = await latest_quote(redis, "A005930")
        assert quote is not None
        assert (quote.base, quote.change, quote.change_rate) == (70500, 800, "1.13")
        assert (quote.trade_type, quote.trading_strength) == ("SELL", "98.50")

        async def malformed_counted() -> bool:
            return (await health(redis))["malformed_total"] == 1

        await eventually(malformed_counted, what="the malformed body counted")
        state = await health(redis)
        assert state["upstream"] == f"stomp ws://127.0.0.1:{WEB_STOMP_PORT}/ws"
        await asyncio.sleep(0)
        assert passcode not in relayer.log()
        assert passcode not in str(await redis.hgetall("stocking:relayer:health"))
        assert "skipped a malformed tick" in relayer.log()
    finally:
        relayer.kill()
