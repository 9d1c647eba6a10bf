"""Fixtures for API tests: settings, a migrated database, a client through the real app."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.app import create_app
from api.auth.passwords import PasswordProfile
from api.settings import ApiSettings
from tests.conftest import RedisServer
from tests.support.api import ADMIN_EMAIL, ADMIN_PASSWORD, database, new_user
from tests.support.databases import (
    fresh_mysql_database,
    mysql_unreachable_reason,
)
from tests.support.invariants import assert_invariants

TEST_JWT_KEY = "test-signing-key-" + "x" * 40


@pytest.fixture
def mysql_database_url() -> Iterator[str]:
    """For checks that only mean something on MySQL/MariaDB: skipped loudly without one."""
    reason = mysql_unreachable_reason()
    if reason is not None:
        pytest.skip(f"SKIPPED MySQL-only check: {reason}")
    with fresh_mysql_database() as url:
        yield url


@pytest.fixture
def api_settings(redis_server: RedisServer, database_url: str) -> ApiSettings:
    return ApiSettings(
        redis_url=redis_server.url,
        database_url=database_url,
        jwt_secret_key=SecretStr(TEST_JWT_KEY),
        stocking_admin_email=ADMIN_EMAIL,
        stocking_admin_password=SecretStr(ADMIN_PASSWORD),
        # The cheap hash: hundreds of registrations and logins cost seconds, not minutes. The
        # standard profile is exercised in tests/api/test_auth.py.
        password_hash_profile=PasswordProfile.TESTS_ONLY,
    )


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
