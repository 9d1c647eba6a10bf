"""Measures how subscriptions heal after Redis loses the desired set, and after a refused topic
(docs/OPERATIONS.md, "Faults: Redis loses the desired set; the upstream refuses a topic").

What runs, all on this machine: a private `redis-server` on a free port (no persistence), the
simulator in this process (SimServer, 20 ticks/s as `python -m relayer.sim` by default), the real
relayer (`python -m relayer`, default settings) seeded with the 20 codes start_services.sh
subscribes, and the API app with its lifespan in this process (the same background restore
every Gunicorn worker runs) on a fresh SQLite database, where the admin subscribes 5 more codes:
25 codes, as in issue 10.

1. FLUSHALL, then 2. a restart of redis-server (empty): reported, from the fault, the seconds
   until the desired set holds all 25 topics again ("desired"), and until every one of the 25
   quote keys Redis lost has been written again ("flowing": at 20 ticks/s over 25 codes a code
   ticks every 1.25 s, which bounds this from below); and the UNSUBSCRIBEs the relayer sent
   (0 expected). Nobody calls resync.
3. A refused topic: the simulator starts refusing one seeded code (ERROR with receipt-id), and
   the connection is dropped, so the reconnect subscribes all 25 in two batches with the refused
   one in the middle. Reported: the seconds until the 24 others are written again, the
   reconnects it took and the relayer's `rejected_topics`.

Usage:
    .venv/bin/python scripts/measure_desired_set.py
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from redis.asyncio import Redis
from redis.exceptions import RedisError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_support import RedisProcess, free_port  # noqa: E402

from api.app import create_app  # noqa: E402
from api.migrate import upgrade  # noqa: E402
from api.settings import ApiSettings  # noqa: E402
from relayer.bus import BusNames, TopicTemplate, as_text, decode_health  # noqa: E402
from relayer.sim import SimServer  # noqa: E402

NAMES = BusNames()
TOPICS = TopicTemplate("/topic/v1/kr/stock/trade/{code}")
SEEDED = ("A005930,A000660,A373220,A207940,A005380,A000270,A068270,A035420,A005490,A051910,"
          "A035720,A006400,A105560,A055550,A012330,A028260,A066570,A003670,A096770,A034730"
          ).split(",")
ADMIN_CODES = ["A010130", "A009150", "A018260", "A032830", "A011200"]
CODES = SEEDED + ADMIN_CODES
REFUSED = "A005490"  # in the middle of the first batch of 20 (sorted topics)
ADMIN = ("admin@measure.local", "measure-admin-password")


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 60) -> float:
    """Seconds until `check()` holds (polled every 10 ms)."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout_s:
            raise SystemExit(f"{what}: not within {timeout_s:g} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def main() -> None:
    folder = tempfile.mkdtemp(prefix="stocking-measure-")
    redis_server = RedisProcess(folder, free_port())
    redis_server.start()
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    bus = Redis.from_url(url)
    await until(lambda: _pings(bus), "redis-server answering")
    database_url = f"sqlite:///{folder}/stocking.db"
    upgrade(database_url, configure_logging=False)
    settings = ApiSettings(redis_url=url, database_url=database_url,
                           stocking_admin_email=ADMIN[0],
                           stocking_admin_password=SecretStr(ADMIN[1]))
    relayer: asyncio.subprocess.Process | None = None
    async with SimServer(ticks_per_sec=20) as sim:
        try:
            env = {**os.environ, "REDIS_URL": url, "RELAYER_UPSTREAM_URL": sim.url,
                   "RELAYER_SUBSCRIBE": ",".join(SEEDED), "LOG_LEVEL": "WARNING"}
            relayer = await asyncio.create_subprocess_exec(sys.executable, "-m", "relayer",
                                                           cwd=REPO, env=env)
            app = create_app(settings)
            async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://api.local",
                timeout=30,
            ) as api:
                login = await api.post("/api/v1/auth/login",
                                       json={"email": ADMIN[0], "password": ADMIN[1]})
                api.headers["authorization"] = f"Bearer {login.json()['access_token']}"
                await until(lambda: _listening(bus), "the relayer listening for commands")
                for code in ADMIN_CODES:
                    answer = await api.post("/api/v1/admin/websocket/subscriptions/subscribe",
                                            params={"topic": code})
                    assert answer.status_code == 200, answer.text
                await until(lambda: _flowing(bus, CODES), "25 codes flowing")

                for fault in ("FLUSHALL", "restart of redis-server (empty)"):
                    unsubscribes = _unsubscribes(sim)
                    started = time.monotonic()
                    if fault == "FLUSHALL":
                        await bus.flushall()
                    else:
                        redis_server.kill()
                        redis_server.start()
                        await bus.connection_pool.disconnect()
                        await until(lambda: _pings(bus), "redis-server answering again")
                    await until(lambda: _desired(bus), "25 topics desired")
                    desired = time.monotonic() - started
                    await until(lambda: _flowing(bus, CODES), "25 codes flowing")
                    flowing = time.monotonic() - started
                    ready = (await api.get("/ready")).status_code
                    print(f"{fault}: desired set complete after {desired:.2f} s, all 25 codes "
                          f"written again after {flowing:.2f} s; UNSUBSCRIBEs sent: "
                          f"{_unsubscribes(sim) - unsubscribes}; /ready {ready}")

                sessions = sim.stomp_sessions_total
                sim.reject_topics = {TOPICS.topic(REFUSED)}
                others = [code for code in CODES if code != REFUSED]
                started = time.monotonic()
                await sim.drop_connections()
                await bus.delete(*[NAMES.quote(code) for code in others])
                flowing = await until(lambda: _flowing(bus, others), "24 codes flowing")
                health = await _health(bus)
                print(f"refused topic {REFUSED} in the reconnect batch: the 24 others written "
                      f"again after {flowing:.2f} s, {sim.stomp_sessions_total - sessions} "
                      f"STOMP sessions, rejected_topics {health['rejected_topics']}")
        finally:
            if relayer is not None:
                relayer.send_signal(signal.SIGTERM)
                await asyncio.wait_for(relayer.wait(), timeout=15)
            await bus.aclose()
            redis_server.kill()
            shutil.rmtree(folder, ignore_errors=True)


async def _pings(bus: Redis) -> bool:
    try:
        return bool(await bus.ping())
    except RedisError:  # not listening yet
        return False


async def _listening(bus: Redis) -> bool:
    numsub = dict(await bus.pubsub_numsub(NAMES.commands))
    health = await _health(bus)
    return numsub.get(NAMES.commands.encode(), 0) > 0 and health["state"] == "connected"


async def _desired(bus: Redis) -> bool:
    members = await bus.smembers(NAMES.desired_subscriptions)
    return {as_text(member) for member in members} == {TOPICS.topic(code) for code in CODES}


async def _flowing(bus: Redis, codes: list[str]) -> bool:
    return all(quote is not None for quote in await bus.mget([NAMES.quote(c) for c in codes]))


async def _health(bus: Redis) -> dict[str, Any]:
    return decode_health(await bus.hgetall(NAMES.relayer_health))


def _unsubscribes(sim: SimServer) -> int:
    return sum(1 for frame in sim.received if frame.command == "UNSUBSCRIBE")


if __name__ == "__main__":
    asyncio.run(main())
