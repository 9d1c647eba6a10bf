"""A topic the upstream refuses in the middle of a (re)connect batch: recorded, no reconnect loop.

The real relayer process against the simulator, which refuses one topic with an ERROR and then
closes the connection, either naming the refused SUBSCRIBE (`receipt-id`, as the Toss feed) or
not (as RabbitMQ). Before the fix, the ERROR cancelled the reconcile that had sent the batch
before it could read the answer: nothing was recorded, and every reconnect sent the same batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from relayer.sim import SimServer
from tests.conftest import RedisServer
from tests.support.bus_client import NAMES, eventually, health, wait_connected
from tests.support.relayer_process import RelayerProcess

pytestmark = pytest.mark.slow

CODES = ["A005930", "A000660", "A035420", "A005380", "A051910"]
TOPIC = "/topic/v1/kr/stock/trade/{}"
REFUSED = TOPIC.format("A035420")  # third of five, alphabetically too


@pytest.fixture
def relayer(tmp_path: Path, redis_server: RedisServer, sim: SimServer) -> Iterator[RelayerProcess]:
    process = RelayerProcess(tmp_path / "relayer.log", {
        "REDIS_URL": redis_server.url, "RELAYER_UPSTREAM_URL": sim.url,
        "RELAYER_HEARTBEAT_MS": "1000", "RELAYER_SUBSCRIBE": ",".join(CODES),
    })
    yield process
    process.kill()


# Named ERROR: pinned at once, one reconnect. Anonymous ERROR: the refused topic and the one
# after it (never answered) are suspects, each tried alone on the next connections.
@pytest.mark.parametrize(("receipt_ids", "sessions", "refusals"),
                         [(True, 2, 1), (False, 3, 2)], ids=["receipt-id", "no-receipt-id"])
async def test_refused_topic_inside_the_first_batch_is_recorded_and_the_rest_flow(
    relayer: RelayerProcess, bus: Redis, sim: SimServer, receipt_ids: bool, sessions: int,
    refusals: int,
) -> None:
    sim.reject_topics = {REFUSED}
    sim.error_receipt_ids = receipt_ids
    relayer.start()
    good = {TOPIC.format(code) for code in CODES} - {REFUSED}
    await wait_connected(bus, subscriptions=len(good))
    assert set(sim.subscriptions()) == good
    state = await health(bus)
    assert state["rejected_topics"] == [REFUSED]

    async def every_good_code_has_a_quote() -> bool:
        quotes = await bus.mget([NAMES.quote(code) for code in CODES])
        return all(quote is not None for code, quote in zip(CODES, quotes, strict=True)
                   if TOPIC.format(code) in good)

    await eventually(every_good_code_has_a_quote, what="quotes for every accepted topic")
    # No loop: the refusal cost one or two reconnects, and the connection now stays up.
    assert (sim.stomp_sessions_total, len(_subscribes(sim, REFUSED))) == (sessions, refusals)
    await asyncio.sleep(2)
    assert (sim.stomp_sessions_total, len(_subscribes(sim, REFUSED))) == (sessions, refusals)
    relayer.assert_running()


def _subscribes(sim: SimServer, topic: str) -> list[object]:
    return [f for f in sim.received
            if f.command == "SUBSCRIBE" and f.headers.get("destination") == topic]
