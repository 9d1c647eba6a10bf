"""Shared test infrastructure: a private Redis server, timeouts, free ports.

Redis: every test that needs one gets a real `redis-server` started on a free port in a temporary
folder, so it can be killed and restarted without touching anyone else's data. Where no
`redis-server` binary exists, tests that only need Redis semantics get fakeredis' TCP server
instead, and tests that need to kill or restart Redis are skipped with a loud reason.

Timeouts scale with STOCKING_TEST_TIMEOUT_FACTOR (default 1) for slow machines.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.support.databases import (
    fresh_mysql_database,
    fresh_sqlite_database,
    mysql_unreachable_reason,
)
from tests.support.env import REPO, TIMEOUT_FACTOR, free_port, scaled

REDIS_SERVER = shutil.which("redis-server")


@dataclass
class RedisServer:
    """A private Redis for one test: real `redis-server` when installed, else fakeredis TCP."""

    port: int
    folder: Path
    real: bool
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if self.real:
            assert REDIS_SERVER is not None
            command = [
                REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.folder),
                "--logfile", str(self.folder / "redis.log"),
            ]
        else:
            command = [sys.executable, str(REPO / "scripts" / "embedded_redis.py"),
                       "--port", str(self.port)]
        self.process = subprocess.Popen(command, cwd=REPO)
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + scaled(10)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Redis on port {self.port} did not start") from None
                time.sleep(0.02)
            finally:
                client.close()

    def stop(self) -> None:
        """Kill the server abruptly (an outage, not a shutdown)."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private Redis (real when the binary exists) on a free port, stopped after the test."""
    with tempfile.TemporaryDirectory(prefix="stocking-redis-") as folder:
        server = RedisServer(port=free_port(), folder=Path(folder), real=REDIS_SERVER is not None)
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def real_redis_server(redis_server: RedisServer) -> RedisServer:
    """For tests about Redis outages and timing: a real redis-server, or a loud skip."""
    if not redis_server.real:
        pytest.skip("SKIPPED: redis-server is not installed; this test needs a real Redis "
                    "(apt-get install redis-server)")
    return redis_server


def pytest_report_header(config: pytest.Config) -> list[str]:
    redis_line = (f"redis-server: {REDIS_SERVER}" if REDIS_SERVER else
                  "redis-server: NOT FOUND - using fakeredis; outage tests will be skipped")
    reason = mysql_unreachable_reason()
    sql_line = ("SQL: MariaDB/MySQL (a fresh database per API test)" if reason is None else
                f"SQL: SQLite ONLY - {reason}; MySQL-only checks will be SKIPPED")
    return [redis_line, sql_line, f"timeout factor: {TIMEOUT_FACTOR}"]


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated SQL database: MariaDB/MySQL when reachable (the test of record), else
    SQLite, as the pytest header says."""
    if mysql_unreachable_reason() is None:
        with fresh_mysql_database() as url:
            yield url
    else:
        with fresh_sqlite_database(tmp_path) as url:
            yield url
