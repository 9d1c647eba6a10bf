"""Measures how the relayer and the API's Redis pool recover from Redis faults (docs/OPERATIONS.md,
"Redis faults").

What runs, all on this machine: a private `redis-server` on a free port (no persistence), the
simulator (`python -m relayer.sim`) and the real relayer (`python -m relayer`) with its default
settings, subscribed to 5 codes; then, in this process, the API's own Redis client
(`api.resources.redis_pool`, as every API worker builds it).

1. Redis refused: Redis is killed for `--outage` seconds (30 by default, as in issue 10) and
   started again, empty. Reported: the seconds from Redis answering again to the buffered ticks
   written, and to the first tick read upstream after that (an outage longer than the leader
   lease, 5 s, makes the relayer step down and take the lease back first), and the relayer's
   health hash (`ticks_written_total`, `last_write_at`) once it is back.
2. `CLIENT KILL TYPE normal`, then Redis restarted: the API client first opens 20 pooled
   connections (20 concurrent GETs), then the fault, then 20 concurrent and 20 sequential GETs;
   reported: how many failed (a failure would be a 503 in the API).

Usage:
    .venv/bin/python scripts/measure_redis_faults.py [--outage 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_support import RedisProcess, free_port  # noqa: E402

from api.resources import redis_pool  # noqa: E402
from relayer.bus import BusNames, Quote, decode_health, format_utc  # noqa: E402

NAMES = BusNames()
CODES = "A005930,A000660,A035420,A068270,A051910"


async def wait_for(check: Callable[[], Awaitable[bool]], limit_s: float, what: str) -> float:
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > limit_s:
            raise SystemExit(f"{what} not reached within {limit_s}s")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def relayer_outage(redis_server: RedisProcess, outage_s: float) -> None:
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    client = Redis.from_url(url)

    async def quotes() -> bool:
        return bool(await client.exists(NAMES.quote("A005930")))

    await wait_for(quotes, 30, "first quote")
    await asyncio.sleep(2)
    print(f"Redis killed for {outage_s:.0f}s ...", flush=True)
    await client.aclose()
    redis_server.kill()
    await asyncio.sleep(outage_s)
    redis_server.start()
    await redis_server.answering()
    back, back_at = time.monotonic(), format_utc(datetime.now(UTC), millis=True)
    client = Redis.from_url(url)
    flushed = await wait_for(quotes, 120, "a quote after the outage")

    async def new_tick() -> bool:  # read upstream after Redis came back, not from the buffer
        raw = await client.get(NAMES.quote("A005930"))
        return raw is not None and Quote.from_json(raw).received_at > back_at

    await wait_for(new_tick, 120, "a new tick after the outage")
    fresh = time.monotonic() - back
    await asyncio.sleep(1.5)
    raw: Any = await client.hgetall(NAMES.relayer_health)
    health = decode_health(raw)
    await client.aclose()
    print(f"relayer (outage {outage_s:.0f}s): buffered ticks written {flushed:.2f}s and the "
          f"first tick read after the outage {fresh:.2f}s after Redis answered again")
    print(f"relayer health after: state={health['state']} ticks_total={health['ticks_total']} "
          f"ticks_written_total={health['ticks_written_total']} "
          f"last_write_at={health['last_write_at']} dropped_total={health['dropped_total']}")


async def api_pool(redis_server: RedisProcess) -> None:
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    pool = redis_pool(url, socket_timeout=0.5, connect_timeout=0.5, max_connections=64)

    async def failures(concurrent: bool) -> int:
        if concurrent:
            answers = await asyncio.gather(*[pool.get("x") for _ in range(20)],
                                           return_exceptions=True)
        else:
            answers = []
            for _ in range(20):
                try:
                    answers.append(await pool.get("x"))
                except Exception as exc:
                    answers.append(exc)
        return sum(isinstance(answer, Exception) for answer in answers)

    for fault in ("CLIENT KILL TYPE normal", "Redis restart"):
        await failures(concurrent=True)  # 20 pooled connections
        if fault.startswith("CLIENT"):
            admin = Redis.from_url(url)
            killed = await admin.client_kill_filter(_type="normal", skipme=True)
            await admin.aclose()
            label = f"{fault} ({killed} connections)"
        else:
            redis_server.kill()
            redis_server.start()
            await redis_server.answering()
            label = fault
        await asyncio.sleep(0.1)
        concurrent = await failures(concurrent=True)
        sequential = await failures(concurrent=False)
        print(f"API pool after {label}: {concurrent}/20 concurrent and {sequential}/20 "
              "sequential requests failed")
    await pool.aclose()


async def measure(redis_server: RedisProcess, outage_s: float) -> None:
    await relayer_outage(redis_server, outage_s)
    await api_pool(redis_server)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--outage", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stocking-faults-") as folder, \
            open(f"{folder}/processes.log", "ab") as log:
        redis_server = RedisProcess(folder, free_port())
        redis_server.start()
        asyncio.run(redis_server.answering())
        sim_port = free_port()
        env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/0",
               "SIM_PORT": str(sim_port), "RELAYER_UPSTREAM": "sim",
               "RELAYER_UPSTREAM_URL": f"ws://127.0.0.1:{sim_port}/ws",
               "RELAYER_SUBSCRIBE": CODES, "LOG_LEVEL": "WARNING"}
        sim = subprocess.Popen([sys.executable, "-m", "relayer.sim"], cwd=REPO, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
        time.sleep(1)
        relayer = subprocess.Popen([sys.executable, "-m", "relayer"], cwd=REPO, env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
        try:
            asyncio.run(measure(redis_server, args.outage))
        finally:
            for process in (relayer, sim):
                process.send_signal(signal.SIGTERM)
                process.wait(15)
            redis_server.kill()


if __name__ == "__main__":
    main()
