"""Fixtures for API tests: settings, a migrated database, a client through the real app."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from api.fills.worker import FillsWorker
from api.market.rules import Costs
from api.settings import ApiSettings
from relayer.bus import BusNames
from tests.conftest import RedisServer
from tests.support.api import app_settings, database, new_user
from tests.support.databases import ReusedMySQLDatabase, mysql_unreachable_reason
from tests.support.invariants import assert_invariants
from tests.support.mariadb_server import MariaDbServer, mariadb_unavailable_reason, private_mariadb


@pytest.fixture
def mysql_database_url(request: pytest.FixtureRequest) -> str:
    """For checks that only mean something on MySQL/MariaDB: skipped loudly without one."""
    reason = mysql_unreachable_reason()
    if reason is not None:
        pytest.skip(f"SKIPPED MySQL-only check: {reason}")
    reused: ReusedMySQLDatabase = request.getfixturevalue("reused_mysql_database")
    return reused.emptied(request.node.nodeid)


@pytest.fixture
def api_settings(redis_server: RedisServer, database_url: str) -> ApiSettings:
    return app_settings(redis_server.url, database_url)


@pytest.fixture
def client(api_settings: ApiSettings) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings)) as test_client:
        yield test_client


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client of the test's private Redis, to write what the relayer would."""
    client = redis_server.client()
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _money_invariants(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every API test that used the app, the money invariants hold (docs/TRADING.md).
    The client is asked for at setup, so that it is torn down after this check."""
    client = request.getfixturevalue("client") if "client" in request.fixturenames else None
    yield
    if client is not None:
        assert_invariants(database(client))


@pytest.fixture
def alice(client: TestClient, api_settings: ApiSettings) -> dict[str, str]:
    """A registered user (with a cash account), as a bearer header."""
    return new_user(client, api_settings, "alice@example.com")


@pytest.fixture
def worker(client: TestClient, store: redis.Redis) -> Iterator[FillsWorker]:
    """A fills worker in this process, on the app's database and Redis (its group made), for
    tests that step it by hand; the money invariants hold after it."""
    fills = FillsWorker(database(client), store, BusNames(), Costs(Decimal("0.00015")),
                        group="fills", batch_size=100, block_ms=10, idempotency_ttl_s=86_400)
    fills.ensure_group()
    yield fills
    assert_invariants(database(client))


@pytest.fixture
def mariadb() -> Iterator[MariaDbServer]:
    """A private mariadbd of the test's own, to stop and start (the fault tests)."""
    reason = mariadb_unavailable_reason()
    if reason is not None:
        pytest.skip(f"SKIPPED database fault test: {reason}")
    with private_mariadb() as server:
        yield server
