"""The `kis` adapter end to end: the real relayer against a local server speaking KIS's format.

Korea Investment is unreachable from here; this server answers the way docs/UPSTREAM.md
("Korea Investment") describes (JSON acks per registration, PINGPONG to be echoed,
caret-separated data lines).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis
from websockets.asyncio.server import Server, ServerConnection, serve

from relayer.bus import CommandType
from tests.conftest import RedisServer
from tests.support.bus_client import (
    eventually,
    latest_quote,
    mark_restored_from_sql,
    send_command,
    wait_connected,
)
from tests.support.kis_samples import SAMSUNG_0930_15, SAMSUNG_0930_16_BUY, SAMSUNG_0930_16_SELL
from tests.support.relayer_process import RelayerProcess

APPROVAL_KEY = "approval-0123456789abcdef"
PINGPONG = '{"header":{"tr_id":"PINGPONG","datetime":"20251120093017"}}'
TOPIC = "/topic/v1/kr/stock/trade/{code}"

pytestmark = pytest.mark.slow


class FakeKis:
    """Acks registrations (refusing tr_key 999999), then streams the recorded Samsung prints."""

    def __init__(self) -> None:
        self.requests: list[dict[str, object]] = []
        self.echoes: list[str] = []
        self.connections = 0
        self.server: Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}"

    async def handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        async for raw in ws:
            text = raw if isinstance(raw, str) else raw.decode()
            if text == PINGPONG:
                self.echoes.append(text)
                continue
            request = orjson.loads(text)
            self.requests.append(request)
            tr_key = request["body"]["input"]["tr_key"]
            refused = tr_key == "999999"
            await ws.send(orjson.dumps({
                "header": {"tr_id": "H0STCNT0", "tr_key": tr_key, "encrypt": "N"},
                "body": {"rt_cd": "1" if refused else "0",
                         "msg_cd": "OPSP0011" if refused else "OPSP0000",
                         "msg1": "invalid tr_key" if refused else "SUBSCRIBE SUCCESS"},
            }).decode())
            if tr_key == "005930" and request["header"]["tr_type"] == "1":
                await ws.send(PINGPONG)
                await ws.send(f"0|H0STCNT0|001|{SAMSUNG_0930_15}")
                await ws.send(f"0|H0STCNT0|002|{SAMSUNG_0930_16_BUY}^{SAMSUNG_0930_16_SELL}")


@pytest.fixture
async def kis() -> AsyncIterator[FakeKis]:
    fake = FakeKis()
    async with serve(fake.handle, "127.0.0.1", 0) as server:
        fake.server = server
        yield fake


async def test_kis_feed_is_relayed_and_a_refused_code_fails_alone(
    kis: FakeKis, redis_server: RedisServer, tmp_path: Path
) -> None:
    redis = Redis.from_url(redis_server.url)
    await mark_restored_from_sql(redis)  # as the API does at start: unsubscribing is allowed
    relayer = RelayerProcess(tmp_path / "relayer.log", {
        "REDIS_URL": redis_server.url,
        "RELAYER_UPSTREAM": "kis",
        "RELAYER_UPSTREAM_URL": kis.url,
        "KIS_APPROVAL_KEY": APPROVAL_KEY,
        "RELAYER_TOPIC_TEMPLATE": TOPIC,
        "RELAYER_SUBSCRIBE": "A005930",
    }).start()
    try:
        await wait_connected(redis, subscriptions=1)

        async def last_print_relayed() -> bool:
            quote = await latest_quote(redis, "A005930")
            return quote is not None and quote.ts == "2025-11-20T00:30:16Z" and quote.volume == 7

        await eventually(last_print_relayed, what="the KIS prints in Redis")
        quote = await latest_quote(redis, "A005930")
        assert quote is not None
        assert (quote.price, quote.base, quote.change) == (71200, 71500, -300)
        assert (quote.open, quote.high, quote.low) == (71600, 71800, 71000)
        assert (quote.trade_type, quote.change_type) == ("SELL", "DOWN")
        assert await redis.xlen("stocking:ticks") == 3
        assert kis.echoes == [PINGPONG]
        header = kis.requests[0]["header"]
        assert isinstance(header, dict)
        assert header["approval_key"] == APPROVAL_KEY and header["tr_type"] == "1"

        result = await send_command(redis, CommandType.SUBSCRIBE, TOPIC.format(code="A999999"))
        assert not result.ok and "invalid tr_key" in result.message
        result = await send_command(redis, CommandType.UNSUBSCRIBE, TOPIC.format(code="A005930"))
        assert result.ok and result.active == 0
        assert kis.requests[-1]["header"]["tr_type"] == "2"  # type: ignore[index]
        assert kis.connections == 1  # a refused registration does not cost the connection
        await asyncio.sleep(0)
        assert APPROVAL_KEY not in relayer.log()
    finally:
        relayer.kill()
        await redis.aclose()
