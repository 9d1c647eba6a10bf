"""Instrument search latency (docs/BENCHMARKS.md): the search function over the in-process
catalog, and GET /api/v1/instruments through the real app (in-process ASGI, no network), for
the keystroke sequences people type into a trading app's search box.

    .venv/bin/python scripts/bench_instruments.py [--rounds N]

Uses a fresh SQLite database migrated with the shipped master; needs no Redis for the search
route (the app's Redis is only opened, never used by it).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

# A sibling script (scripts/ is on sys.path when this runs as a script); importing it puts the
# repository root on sys.path for the imports below.
import bench_support  # noqa: F401
import httpx
from pydantic import SecretStr

from api.app import create_app
from api.auth.passwords import PasswordProfile
from api.auth.tokens import Principal, TokenType, issue
from api.db import Database, make_engine
from api.instruments.catalog import CatalogSnapshot, read_instruments
from api.migrate import upgrade
from api.models import Role
from api.settings import ApiSettings

# What people type, one keystroke at a time (each prefix is one request).
SEQUENCES = ["삼성전자", "ㅅㅅㅈㅈ", "005930", "kodex 200", "카카오", "ㅋㅋㅇ", "sk하이닉스",
             "삼ㅅ", "스팩", "셀트리온"]


def keystrokes() -> list[str]:
    return [text[:end] for text in SEQUENCES for end in range(1, len(text) + 1)]


def percentiles(samples_s: list[float]) -> str:
    ordered = sorted(samples_s)
    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000
    return (f"n={len(ordered)} p50={at(0.50):.3f} ms p90={at(0.90):.3f} ms "
            f"p99={at(0.99):.3f} ms max={ordered[-1] * 1000:.3f} ms "
            f"mean={statistics.fmean(ordered) * 1000:.3f} ms")


def bench_function(snapshot: CatalogSnapshot, rounds: int) -> str:
    samples = []
    for _ in range(rounds):
        for query in keystrokes():
            started = time.perf_counter()
            snapshot.index.search(query)[:20]
            samples.append(time.perf_counter() - started)
    return percentiles(samples)


async def bench_http(settings: ApiSettings, rounds: int) -> str:
    app = create_app(settings)
    token = issue(Principal(1, "bench@stocking.test", Role.USER), TokenType.ACCESS,
                  settings.signing_key(), 900)
    headers = {"Authorization": f"Bearer {token}"}
    samples = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for _ in range(rounds):
                for query in keystrokes():
                    started = time.perf_counter()
                    answer = await client.get("/api/v1/instruments",
                                              params={"query": query, "limit": 20},
                                              headers=headers)
                    samples.append(time.perf_counter() - started)
                    assert answer.status_code == 200, answer.text
    return percentiles(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'bench.db'}"
        upgrade(url, configure_logging=False)
        db = Database(make_engine(url))
        snapshot = CatalogSnapshot(db.call_read(read_instruments), time.monotonic())
        db.dispose()
        print(f"catalog: {len(snapshot)} instruments; {len(keystrokes())} keystrokes a round")
        print(f"search function: {bench_function(snapshot, arguments.rounds)}")
        # The full KRX master is about 4,000 instruments: the same records, repeated under
        # other codes, show what a scan of that many keys costs.
        infos = list(snapshot.by_code.values())
        scaled = [replace(info, code=f"A{900_000 + n:06d}") if n >= len(infos) else info
                  for n, info in enumerate(infos * (4_000 // len(infos) + 1))][:4_000]
        big = CatalogSnapshot(scaled, time.monotonic())
        print(f"search function, {len(big)} instruments: {bench_function(big, arguments.rounds)}")
        settings = ApiSettings(database_url=url, jwt_secret_key=SecretStr("bench-" + "k" * 40),
                               password_hash_profile=PasswordProfile.TESTS_ONLY)
        print(f"GET /api/v1/instruments: {asyncio.run(bench_http(settings, arguments.rounds))}")


if __name__ == "__main__":
    main()
