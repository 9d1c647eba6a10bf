"""The `stomp` adapter against a standard broker: RabbitMQ's Web-STOMP endpoint.

The relayer is configured by environment only (URL, login, passcode, virtual host, topic
template); an independent STOMP client (stomp.py, over plain STOMP) publishes Toss-format ticks.
The broker is a private RabbitMQ node started for this module (tests/support/rabbitmq_node.py):
its own node name, ports, data folder and Web-STOMP plugin; the machine's RabbitMQ is untouched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import stomp
from redis.asyncio import Redis

from tests.conftest import RedisServer
from tests.support.bus_client import eventually, health, latest_quote, wait_connected
from tests.support.rabbitmq_node import RabbitMqNode, private_rabbitmq, rabbitmq_unavailable_reason
from tests.support.relayer_process import RelayerProcess

TEMPLATE = "/topic/stocking.trade.{code}"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def broker() -> Iterator[RabbitMqNode]:
    """A private RabbitMQ node with Web-STOMP, its own virtual host and a user of its own
    with a distinctive passcode (so we can grep logs for it)."""
    reason = rabbitmq_unavailable_reason()
    if reason is not None:
        pytest.skip(f"SKIPPED: {reason}; the Web-STOMP relay test needs a standard STOMP broker")
    with private_rabbitmq() as node:
        yield node


def toss_tick(code: str, price: int, **extra: object) -> bytes:
    tick = {"code": code, "dt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "session": "REGULAR", "exchange": "KRX", "currency": "KRW", "base": 70500,
            "close": price, "volume": 3, "tradeType": "SELL", "changeType": "UP",
            "tradingStrength": 98.5, "cumulativeVolume": 1000, "cumulativeAmount": 71000000}
    return orjson.dumps({**tick, **extra})


async def test_relays_from_a_broker_web_stomp_endpoint(
    broker: RabbitMqNode, redis_server: RedisServer, bus: Redis, tmp_path: Path
) -> None:
    user, passcode = broker.user, broker.passcode
    relayer = RelayerProcess(tmp_path / "relayer.log", {
        "REDIS_URL": redis_server.url,
        "RELAYER_UPSTREAM": "stomp",
        "RELAYER_UPSTREAM_URL": broker.web_stomp_url,
        "RELAYER_STOMP_LOGIN": user,
        "RELAYER_STOMP_PASSCODE": passcode,
        "RELAYER_STOMP_HOST": broker.vhost,
        "RELAYER_TOPIC_TEMPLATE": TEMPLATE,
        "RELAYER_SUBSCRIBE": "A005930",
    }).start()
    try:
        await wait_connected(bus, subscriptions=1, timeout=20)
        publisher = stomp.Connection([("127.0.0.1", broker.stomp_port)], vhost=broker.vhost)
        publisher.connect(user, passcode, wait=True)
        destination = TEMPLATE.format(code="A005930")
        try:
            publisher.send(destination, b"{not json", content_type="application/json")
            publisher.send(destination, toss_tick("A005930", 71300),
                           content_type="application/json")
        finally:
            publisher.disconnect()

        async def relayed() -> bool:
            quote = await latest_quote(bus, "A005930")
            return quote is not None and quote.price == 71300

        await eventually(relayed, timeout=10, what="the broker's tick in Redis")
        quote = await latest_quote(bus, "A005930")
        assert quote is not None
        assert (quote.base, quote.change, quote.change_rate) == (70500, 800, "1.13")
        assert (quote.trade_type, quote.trading_strength) == ("SELL", "98.50")

        async def malformed_counted() -> bool:
            return (await health(bus))["malformed_total"] == 1

        await eventually(malformed_counted, what="the malformed body counted")
        state = await health(bus)
        assert state["upstream"] == f"stomp {broker.web_stomp_url}"
        await asyncio.sleep(0)
        assert passcode not in relayer.log()
        assert passcode not in str(await bus.hgetall("stocking:relayer:health"))
        assert "skipped a malformed tick" in relayer.log()
    finally:
        relayer.kill()
