"""Benchmark the default SQLite database under one user's concurrent reads and writes, on real
Gunicorn workers: what serialising every write (BEGIN IMMEDIATE, api/db.py) costs, and what
read-only units of work (`Database.read`, a deferred WAL snapshot) keep.

What runs (all on this machine, all torn down at the end): a private `redis-server` on a free
port, a fresh migrated SQLite file, Gunicorn with `gunicorn.conf.py` (WEB_CONCURRENCY workers).
One user; `--writers` threads deposit 1 KRW in a loop (`POST /api/v1/account/deposit`: a unit
of work that takes the write lock) while `--readers` threads read `GET /api/v1/portfolio` (a
read-only unit of work), each on a new connection per request, for `--duration` seconds. At the
end the cash must equal the initial cash plus the deposits counted.

    .venv/bin/python scripts/bench_sqlite.py [--duration 8] [--readers 8] [--writers 8]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import httpx
import redis

# A sibling script (scripts/ is on sys.path when this runs as a script); it also puts the
# repository root on sys.path for the imports below.
from bench_support import BenchError, free_port, percentile, process, wait_until

from api.migrate import upgrade

INITIAL_CASH = 10_000_000


def request(method: str, url: str, headers: dict[str, str]) -> int:
    """One request on a new connection (so either worker may take it); its status. urllib, not
    a new httpx client per request: building one (its TLS context) costs more CPU than the
    request it would send, and the client shares the machine with the server."""
    body = json.dumps({"amount": 1}).encode() if method == "POST" else None
    prepared = urllib.request.Request(url, data=body, method=method, headers={
        "content-type": "application/json", **headers})
    try:
        with urllib.request.urlopen(prepared, timeout=30) as answer:
            answer.read()
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def hammer(url: str, method: str, headers: dict[str, str], until: float,
           latencies: list[float], failures: list[int]) -> None:
    while time.monotonic() < until:
        started = time.perf_counter()
        status = request(method, url, headers)
        if status == 200:
            latencies.append(time.perf_counter() - started)
        else:
            failures.append(status)


def summary(name: str, latencies: list[float], duration_s: float) -> str:
    if not latencies:
        return f"{name}: none"
    return (f"{name}: {len(latencies) / duration_s:.0f}/s, p50 "
            f"{percentile(latencies, 0.5) * 1000:.1f} ms, p99 "
            f"{percentile(latencies, 0.99) * 1000:.1f} ms")


def run(options: argparse.Namespace) -> None:
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise BenchError("redis-server not found: apt-get install redis-server")
    with tempfile.TemporaryDirectory(prefix="stocking-bench-sqlite-") as tmp, \
            ExitStack() as stack:
        folder = Path(tmp)
        redis_port, api_port = free_port(), free_port()
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        database_url = f"sqlite:///{folder / 'bench.db'}"
        env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url,
               "PORT": str(api_port), "WEB_CONCURRENCY": str(options.workers),
               "LOG_LEVEL": "WARNING", "INITIAL_CASH": str(INITIAL_CASH)}
        stack.enter_context(process(
            [redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp], env, folder / "redis.log"))
        wait_until(redis.Redis.from_url(redis_url).ping, "redis-server")
        upgrade(database_url, configure_logging=False)
        stack.enter_context(process(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "api.main:app"], env,
            folder / "gunicorn.log"))
        base = f"http://127.0.0.1:{api_port}"
        wait_until(lambda: httpx.get(f"{base}/health").status_code == 200, "gunicorn")

        account = {"email": "bench@example.com", "password": "bench-password-0001"}
        httpx.post(f"{base}/api/v1/auth/register", json=account).raise_for_status()
        login = httpx.post(f"{base}/api/v1/auth/login", json=account)
        login.raise_for_status()
        headers = {"authorization": f"Bearer {login.json()['access_token']}"}

        reads: list[float] = []
        writes: list[float] = []
        failures: list[int] = []
        until = time.monotonic() + options.duration
        threads = [threading.Thread(target=hammer, args=(
            f"{base}/api/v1/portfolio", "GET", headers, until, reads, failures))
            for _ in range(options.readers)]
        threads += [threading.Thread(target=hammer, args=(
            f"{base}/api/v1/account/deposit", "POST", headers, until, writes, failures))
            for _ in range(options.writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        cash = httpx.get(f"{base}/api/v1/account", headers=headers).json()["cash"]
        print(f"SQLite, {options.workers} Gunicorn workers, {options.readers} readers + "
              f"{options.writers} writers, {options.duration:g} s")
        print(summary("portfolio reads", reads, options.duration))
        print(summary("deposits", writes, options.duration))
        print(f"failed requests: {len(failures)} {sorted(set(failures))}")
        if cash != INITIAL_CASH + len(writes):
            raise BenchError(f"cash {cash} != {INITIAL_CASH} + {len(writes)} deposits")
        print(f"cash {cash} == initial + deposits: exact")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8, help="seconds (8)")
    parser.add_argument("--readers", type=int, default=8, help="reading threads (8)")
    parser.add_argument("--writers", type=int, default=8, help="depositing threads (8)")
    parser.add_argument("--workers", type=int, default=2, help="Gunicorn workers (2)")
    options = parser.parse_args()
    try:
        run(options)
    except BenchError as exc:
        print(f"bench_sqlite: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
