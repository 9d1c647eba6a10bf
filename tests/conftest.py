"""Shared test infrastructure: a private Redis server, timeouts, free ports.

Redis: each test worker starts one real `redis-server` on a free port, and every test that needs
Redis gets it emptied (FLUSHALL). A test that kills or restarts Redis asks for `real_redis_server`
or is marked `private_redis`, and gets a server of its own that no other test sees. Where no
`redis-server` binary exists, tests that only need Redis semantics get fakeredis' TCP server
instead, and tests that need to kill or restart Redis are skipped with a loud reason.

SQL: each test worker migrates one database (tests/support/databases.py) and hands it to each test
as new: emptied on MariaDB, copied from a template on SQLite.

Timeouts scale with STOCKING_TEST_TIMEOUT_FACTOR (default 1) for slow machines.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from redis.asyncio import Redis as AsyncRedis

from relayer.sim import SimServer
from tests.support.databases import (
    ReusedMySQLDatabase,
    SQLiteTemplate,
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
    # Shared by the tests of one worker: killing it would fail the tests that come after.
    shared: bool = False

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
        if self.shared:
            raise RuntimeError("this test kills or restarts Redis: ask for `real_redis_server` "
                               "or mark it `@pytest.mark.private_redis`")
        self._kill()

    def _kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


@contextmanager
def private_redis_server(*, shared: bool = False) -> Iterator[RedisServer]:
    """A Redis (real when the binary exists) on a free port, killed on exit."""
    with tempfile.TemporaryDirectory(prefix="stocking-redis-") as folder:
        server = RedisServer(port=free_port(), folder=Path(folder), real=REDIS_SERVER is not None,
                             shared=shared)
        server.start()
        try:
            yield server
        finally:
            server._kill()


@pytest.fixture(scope="session")
def shared_redis_server() -> Iterator[RedisServer]:
    """This worker's Redis, for the tests that do not kill it."""
    with private_redis_server(shared=True) as server:
        yield server


@pytest.fixture
def redis_server(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """An empty Redis: this worker's shared one, or one of the test's own when it will kill or
    restart it (it asks for `real_redis_server` or is marked `private_redis`)."""
    if ("real_redis_server" in request.fixturenames
            or request.node.get_closest_marker("private_redis") is not None):
        with private_redis_server() as server:
            yield server
        return
    server: RedisServer = request.getfixturevalue("shared_redis_server")
    with contextlib.closing(server.client()) as client:
        client.flushall()
    yield server


@pytest.fixture
async def bus(redis_server: RedisServer) -> AsyncIterator[AsyncRedis]:
    """An asyncio client of the test's Redis: what a test reads and writes on the bus."""
    client = AsyncRedis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    """The simulator on a free port: 200 ticks/s from a fixed seed, heart-beats every second."""
    async with SimServer(ticks_per_sec=200, seed=7, heartbeat_ms=(1000, 1000)) as server:
        yield server


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
    sql_line = ("SQL: MariaDB/MySQL (one migrated database per worker, emptied for each test)"
                if reason is None else
                f"SQL: SQLite ONLY - {reason}; MySQL-only checks will be SKIPPED")
    return [redis_line, sql_line, f"timeout factor: {TIMEOUT_FACTOR}"]


@pytest.fixture(scope="session")
def reused_mysql_database() -> Iterator[ReusedMySQLDatabase]:
    database = ReusedMySQLDatabase()
    yield database
    database.drop()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> SQLiteTemplate:
    return SQLiteTemplate(tmp_path_factory.mktemp("sqlite-template"))


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated SQL database holding nothing: MariaDB/MySQL when reachable (the test of
    record), else SQLite, as the pytest header says."""
    if mysql_unreachable_reason() is None:
        reused: ReusedMySQLDatabase = request.getfixturevalue("reused_mysql_database")
        return reused.emptied(request.node.nodeid)
    template: SQLiteTemplate = request.getfixturevalue("sqlite_template")
    return template.copy_into(tmp_path)
