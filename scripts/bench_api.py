"""Benchmark the API on real Gunicorn workers: quote reads against a hello route, and the admin
subscribe round trip through the real relayer and simulator.

What runs (all on this machine, all torn down at the end):
- a private `redis-server` on a free port and a fresh SQLite database (migrated);
- Gunicorn with `gunicorn.conf.py` (Uvicorn workers, WEB_CONCURRENCY of them) serving
  `api.main:app`, exactly as start_services.sh runs it;
- for the round trip: the simulator and the relayer (`python -m relayer.sim`, `python -m relayer`).

Load comes from `wrk` (Debian package `wrk`): closed-loop at full speed for requests/s and
latency, and throttled (a Lua `delay()` per request) at half the hello route's rate for the
latency target. `GET /health` is the hello route: a FastAPI route returning a constant, in the
same app, on the same workers, behind the same middleware as the quote route.

At full speed the two routes take turns (`--rounds` of hello then quote): on a shared machine
other work comes and goes, and turns spread it over both. Each window also reports the API
workers' CPU per request (which other work on the machine moves much less than requests/s) and
`other`: the machine's busy time that neither the API, Redis, the relayer, the simulator, wrk
nor this script used, in % of one core (a clean window shows ~0).

    .venv/bin/python scripts/bench_api.py [--duration 10] [--connections 20] [--workers 2]
                                          [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import redis

# A sibling script (scripts/ is on sys.path when this runs as a script); it also puts the
# repository root on sys.path for the imports below.
from bench_support import (
    JWT_KEY,
    BenchError,
    CpuMeter,
    WrkResult,
    free_port,
    percentile,
    process,
    process_group,
    run_wrk,
    wait_until,
)

from api.auth.tokens import Principal, TokenType, issue
from api.migrate import upgrade
from api.models import Role
from relayer.bus import BusNames, Quote, TopicTemplate
from relayer.master import ListingStatus, by_code, read_master, shipped_paths

NAMES = BusNames()
TOPICS = TopicTemplate("/topic/v1/kr/stock/trade/{code}")
ADMIN_EMAIL, ADMIN_PASSWORD = "bench-admin@stocking.local", "bench-admin-password"
SEEDED = "A005930"  # what the relayer subscribes at start (RELAYER_SUBSCRIBE)


@dataclass
class Window:
    """One wrk run and the CPU used during it (CpuMeter.window, % of one core)."""

    result: WrkResult
    cpu: dict[str, float]

    @property
    def api_us_per_request(self) -> float:
        """The API workers' CPU per answered request, in microseconds."""
        return self.cpu["api"] * 10_000 / self.result.requests_per_s


def measured(meter: CpuMeter, url: str, *, duration_s: int, connections: int,
             token: str | None, rate: float | None = None) -> Window:
    before = meter.sample()
    result = run_wrk(url, duration_s=duration_s, connections=connections, token=token, rate=rate)
    return Window(result, CpuMeter.window(before, meter.sample()))


def seed_quote(client: redis.Redis, code: str) -> None:
    now = datetime.now(UTC)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    quote = Quote(code=code, price=71200, base=70500, change=700, change_rate="0.99",
                  change_type="UP", volume=10, cum_volume=1234567, cum_amount=87900000000,
                  trade_type="BUY", trading_strength="112.30", open=70800, high=71500,
                  low=70600, session="REGULAR", exchange="KRX", currency="KRW", ts=stamp,
                  received_at=now.strftime("%Y-%m-%dT%H:%M:%S.000Z"), seq=1)
    client.set(NAMES.quote(code), quote.to_json())


def master_codes(count: int, besides: str) -> list[str]:
    """`count` instruments of the shipped master (what a fresh database holds): the admin
    routes subscribe only instruments the master knows (api.instruments.gate)."""
    records = by_code([read_master(path) for path in shipped_paths()])
    codes = [code for code, record in sorted(records.items())
             if record.status is not ListingStatus.DELISTED and code != besides]
    if len(codes) < count:
        raise BenchError(f"the shipped master has {len(codes)} instruments, not {count}")
    return codes[:count]


def subscribe_round_trips(base_url: str, count: int) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {"subscribe": [], "unsubscribe": []}
    codes = master_codes(count, besides=SEEDED)
    with httpx.Client(base_url=base_url, timeout=30) as http:
        login = http.post("/api/v1/auth/login",
                          json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        login.raise_for_status()
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        prefix = "/api/v1/admin/websocket/subscriptions"
        for code in codes:
            topic = TOPICS.topic(code)
            for kind, method in (("subscribe", "POST"), ("unsubscribe", "DELETE")):
                started = time.perf_counter()
                answer = http.request(method, f"{prefix}/{kind}", params={"topic": topic},
                                      headers=headers)
                elapsed = (time.perf_counter() - started) * 1000
                if answer.status_code != 200 or not answer.json().get("success"):
                    raise BenchError(f"{kind} {topic}: {answer.status_code} {answer.text}")
                timings[kind].append(elapsed)
    return timings


def run(options: argparse.Namespace) -> None:
    if shutil.which("wrk") is None:
        raise BenchError("wrk not found: apt-get install wrk")
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise BenchError("redis-server not found: apt-get install redis-server")
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="stocking-bench-api-") as tmp, ExitStack() as stack:
        folder = Path(tmp)
        redis_port, api_port, sim_port = free_port(), free_port(), free_port()
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        database_url = f"sqlite:///{folder / 'bench.db'}"
        env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url,
               "JWT_SECRET_KEY": JWT_KEY, "PORT": str(api_port),
               "WEB_CONCURRENCY": str(options.workers), "LOG_LEVEL": "WARNING",
               "STOCKING_ADMIN_EMAIL": ADMIN_EMAIL, "STOCKING_ADMIN_PASSWORD": ADMIN_PASSWORD,
               "SIM_PORT": str(sim_port), "RELAYER_UPSTREAM_URL": f"ws://127.0.0.1:{sim_port}/ws",
               "RELAYER_SUBSCRIBE": SEEDED}
        redis_child = stack.enter_context(process(
            [redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp], env, folder / "redis.log"))
        client = redis.Redis.from_url(redis_url)
        wait_until(client.ping, "redis-server")
        upgrade(database_url, configure_logging=False)
        sim = stack.enter_context(process([python, "-m", "relayer.sim"], env,
                                          folder / "sim.log"))
        relayer = stack.enter_context(process([python, "-m", "relayer"], env,
                                              folder / "relayer.log"))
        api = stack.enter_context(process(
            [python, "-m", "gunicorn", "-c", "gunicorn.conf.py", "api.main:app"], env,
            folder / "gunicorn.log"))
        meter = CpuMeter({"api": lambda: process_group(api.pid),
                          "redis": lambda: process_group(redis_child.pid),
                          "relayer": lambda: process_group(relayer.pid),
                          "sim": lambda: process_group(sim.pid)})
        base = f"http://127.0.0.1:{api_port}"
        wait_until(lambda: httpx.get(f"{base}/health").status_code == 200, "gunicorn")
        # A quote that does not move, so every read returns the same bytes.
        code = "A000020"
        seed_quote(client, code)
        token = issue(Principal(1, "bench@stocking.local", Role.USER), TokenType.ACCESS,
                      JWT_KEY, 3600)
        quote_url = f"{base}/api/v1/trading/realtime/stock/{code}"

        print(f"warming up ({options.workers} workers) ...", flush=True)
        run_wrk(f"{base}/health", duration_s=2, connections=options.connections, token=None)
        run_wrk(quote_url, duration_s=2, connections=options.connections, token=token)
        hellos: list[Window] = []
        quotes: list[Window] = []
        for turn in range(1, options.rounds + 1):
            print(f"full speed, round {turn} of {options.rounds} ...", flush=True)
            hellos.append(measured(meter, f"{base}/health", duration_s=options.duration,
                                   connections=options.connections, token=None))
            quotes.append(measured(meter, quote_url, duration_s=options.duration,
                                   connections=options.connections, token=token))
        half = statistics.median(w.result.requests_per_s for w in hellos) / 2
        print(f"throttled at {half:,.0f} req/s ...", flush=True)
        throttled = measured(meter, quote_url, duration_s=options.duration,
                             connections=options.connections, token=token, rate=half)
        hello_throttled = measured(meter, f"{base}/health", duration_s=options.duration,
                                   connections=options.connections, token=None, rate=half)

        wait_until(lambda: client.hget(NAMES.relayer_health, "state") == b"connected",
                   "the relayer")
        print(f"{options.round_trips} subscribe + unsubscribe round trips ...", flush=True)
        trips = subscribe_round_trips(base, options.round_trips)

    print()
    print(f"machine: {os.cpu_count()} CPUs; Gunicorn {options.workers} Uvicorn workers; "
          f"wrk -t2 -c{options.connections} -d{options.duration}s; {options.rounds} rounds")
    print(f"{'route':<44} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} "
          f"{'API us/req':>10} {'other %':>8}")
    rows = [(f"round {turn}: {name}", window)
            for turn, pair in enumerate(zip(hellos, quotes, strict=True), 1)
            for name, window in zip(("GET /health (hello)", "GET /.../stock/{code}"), pair,
                                    strict=True)]
    rows += [("GET /.../stock/{code} at half hello rate", throttled),
             ("GET /health at the same throttle", hello_throttled)]
    for name, window in rows:
        result = window.result
        print(f"{name:<44} {result.requests_per_s:>10,.0f} {result.p50_ms:>8.2f} "
              f"{result.p99_ms:>8.2f} {result.non_2xx:>8} {window.api_us_per_request:>10.0f} "
              f"{window.cpu['other']:>8.0f}")
    ratios = [q.result.requests_per_s / h.result.requests_per_s
              for h, q in zip(hellos, quotes, strict=True)]
    print(f"quote / hello: {statistics.median(ratios):.0%} (median of "
          f"{', '.join(f'{ratio:.0%}' for ratio in ratios)}); API CPU per request: hello "
          f"{statistics.median(w.api_us_per_request for w in hellos):.0f} us, quote "
          f"{statistics.median(w.api_us_per_request for w in quotes):.0f} us")
    print()
    print(f"{'admin round trip':<14} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for kind, values in trips.items():
        print(f"{kind:<14} {len(values):>5} {percentile(values, 0.5):>8.2f} "
              f"{percentile(values, 0.99):>8.2f} {statistics.mean(values):>8.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (10)")
    parser.add_argument("--connections", type=int, default=20, help="wrk connections (20)")
    parser.add_argument("--workers", type=int, default=2, help="Gunicorn workers (2)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="turns of hello then quote at full speed (3)")
    parser.add_argument("--round-trips", type=int, default=200,
                        help="admin subscribe/unsubscribe pairs (200)")
    options = parser.parse_args()
    try:
        run(options)
    except BenchError as exc:
        print(f"bench_api: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
