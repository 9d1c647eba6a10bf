"""Helpers for tests that talk to the app through HTTP (FastAPI's TestClient)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.app import create_app
from api.auth.passwords import PasswordProfile
from api.db import Database
from api.errors import PROBLEM_JSON
from api.models import Role
from api.settings import ApiSettings
from tests.support.env import (
    API_REDIS_TIMEOUT_S,
    DATABASE_DEADLINE_S,
    DATABASE_READ_TIMEOUT_S,
    scaled,
)
from tests.support.tokens import bearer

# The admin account the test app ensures at start (tests/api/conftest.py api_settings).
ADMIN_EMAIL = "admin@stocking.test"
ADMIN_PASSWORD = "admin-password-0001"
TEST_JWT_KEY = "test-signing-key-" + "x" * 40


def app_settings(redis_url: str, database_url: str, **overrides: Any) -> ApiSettings:
    """The settings of an app under test: the admin above, a fixed signing key, and `overrides`."""
    fields: dict[str, Any] = {
        "jwt_secret_key": SecretStr(TEST_JWT_KEY),
        "stocking_admin_email": ADMIN_EMAIL,
        "stocking_admin_password": SecretStr(ADMIN_PASSWORD),
        # The cheap hash: hundreds of registrations and logins cost seconds, not minutes. The
        # standard profile is exercised in tests/api/test_auth.py.
        "password_hash_profile": PasswordProfile.TESTS_ONLY,
        # Bursts of 20-50 concurrent requests share one event loop here (see the constants).
        "api_redis_timeout_s": API_REDIS_TIMEOUT_S,
        "database_deadline_s": DATABASE_DEADLINE_S,
        "database_read_timeout_s": DATABASE_READ_TIMEOUT_S,
    }
    return ApiSettings(redis_url=redis_url, database_url=database_url, **{**fields, **overrides})


def database(client: TestClient) -> Database:
    """The app's own database handle, for checks behind the API."""
    app = client.app
    assert isinstance(app, FastAPI)
    db: Database = app.state.resources.db
    return db


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is an application/problem+json of this status and stable code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


def new_user(client: TestClient, settings: ApiSettings, email: str) -> dict[str, str]:
    """Register a user through the API (which opens its cash account); its bearer header."""
    response = client.post("/api/v1/auth/register",
                           json={"email": email, "password": "test-password-0001"})
    assert response.status_code == 201, response.text
    return bearer(settings, Role.USER, response.json()["id"])


def login_as_admin(client: TestClient) -> dict[str, str]:
    """The bearer header of the admin account the app ensures at start (a real login)."""
    answer = client.post("/api/v1/auth/login",
                         json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


@asynccontextmanager
async def running_app(settings: ApiSettings,
                      headers: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan (and so its background tasks), served in this event loop,
    where a simulator may run too; a client sending `headers` with every request."""
    app = create_app(settings)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api.test", headers=headers,
        timeout=scaled(30),
    ) as client:
        yield client


def metric(text: str, series: str) -> float:
    """The value of one series (`name{labels}` as exposed) in a /metrics page; 0 if absent."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0
