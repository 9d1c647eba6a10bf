"""Bad input is a clear 4xx and changes nothing, through the real app, on SQLite and on
MariaDB (each misbehaved differently before): request bodies over MAX_REQUEST_BODY_BYTES
(413 before authentication), ids and cursors beyond the 64-bit id columns, and the extreme
days of `/transactions`. The request head limit is the HTTP server's, tested through real
Gunicorn in tests/test_request_limits.py."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.app import create_app
from api.settings import ApiSettings
from tests.conftest import RedisServer
from tests.support.api import assert_problem
from tests.support.databases import database_url_on_both_backends  # noqa: F401 (64-bit ids)
from tests.support.quotes import make_quote, put

TOO_BIG = 2**64  # beyond every id column (BIGINT, SQLite INTEGER: 2^63 - 1)
LARGEST = 2**63 - 1


def cursor(kind: str, number: str) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{number}".encode()).decode().rstrip("=")


# --------------------------------------------------------------------------------------------
# Ids and cursors


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/api/v1/orders/{id}", None),
    ("DELETE", "/api/v1/orders/{id}", None),
    ("PATCH", "/api/v1/orders/{id}", {"price": 70_000}),
    ("GET", "/api/v1/watchlists/{id}", None),
    ("PATCH", "/api/v1/watchlists/{id}", {"name": "x"}),
    ("DELETE", "/api/v1/watchlists/{id}", None),
    ("POST", "/api/v1/watchlists/{id}/items", {"code": "A005930"}),
    ("DELETE", "/api/v1/watchlists/{id}/items/A005930", None),
])
def test_an_id_beyond_64_bits_is_422_and_the_largest_one_is_404(
        client: TestClient, alice: dict[str, str], method: str, path: str,
        body: dict[str, Any] | None) -> None:
    kwargs: dict[str, Any] = {} if body is None else {"json": body}
    for number in (TOO_BIG, -TOO_BIG, 0):
        answer = client.request(method, path.format(id=number), headers=alice, **kwargs)
        assert_problem(answer, 422, "validation_error")
    answer = client.request(method, path.format(id=LARGEST), headers=alice, **kwargs)
    assert answer.status_code == 404, answer.text


@pytest.mark.parametrize(("path", "kind"), [
    ("/api/v1/orders", "ord"),
    ("/api/v1/transactions", "le"),
    ("/api/v1/payments", "pay"),
])
def test_a_cursor_beyond_64_bits_is_422_invalid_cursor(
        client: TestClient, alice: dict[str, str], path: str, kind: str) -> None:
    for number in (str(TOO_BIG), str(LARGEST + 1), "9" * 90, "0", "\N{SUPERSCRIPT TWO}"):
        assert_problem(client.get(path, headers=alice, params={"cursor": cursor(kind, number)}),
                       422, "invalid_cursor")
    # The largest id is a cursor like any other: everything is below it.
    answer = client.get(path, headers=alice, params={"cursor": cursor(kind, str(LARGEST))})
    assert answer.status_code == 200, answer.text


def test_a_payment_id_longer_than_any_is_422(client: TestClient, alice: dict[str, str]) -> None:
    assert_problem(client.get(f"/api/v1/payments/{'p' * 65}", headers=alice), 422,
                   "validation_error")
    assert_problem(client.get(f"/api/v1/payments/{'p' * 64}", headers=alice), 404,
                   "payment_not_found")


# --------------------------------------------------------------------------------------------
# The extreme days of the ledger filter


@pytest.mark.parametrize("params", [
    {"to": "9999-12-31"},
    {"from": "0001-01-01"},
    {"from": "0001-01-01", "to": "9999-12-31"},
    {"from": "0001-01-02", "to": "9999-12-30"},
    {"from": "1969-12-31"},
])
def test_the_widest_days_are_the_whole_ledger(client: TestClient, alice: dict[str, str],
                                              params: dict[str, str]) -> None:
    answer = client.get("/api/v1/transactions", headers=alice, params=params)
    assert answer.status_code == 200, answer.text
    assert [row["type"] for row in answer.json()["items"]] == ["DEPOSIT"]


def test_days_beyond_the_calendar_are_422(client: TestClient, alice: dict[str, str]) -> None:
    for params in ({"to": "10000-01-01"}, {"from": "0000-12-31"},
                   {"from": "9999-12-31", "to": "0001-01-01"},
                   # Not days at all, though pydantic would read a number as a Unix time.
                   {"to": "0"}, {"from": "1699920000"}, {"from": "2026-01-01T00:00:00"}):
        answer = client.get("/api/v1/transactions", headers=alice, params=params)
        assert answer.status_code == 422, answer.text


# --------------------------------------------------------------------------------------------
# The request body limit


LIMIT = 4096


@pytest.fixture
def small_limit(redis_server: RedisServer, database_url: str) -> Iterator[TestClient]:
    settings = ApiSettings(redis_url=redis_server.url, database_url=database_url,
                           jwt_secret_key=SecretStr("test-signing-key-" + "x" * 40),
                           max_request_body_bytes=LIMIT)
    with TestClient(create_app(settings)) as client:
        yield client


def test_a_declared_body_over_the_limit_is_413_before_authentication(
        small_limit: TestClient) -> None:
    """Register and login take no token: the body is refused on its Content-Length alone."""
    big = b'{"email": "a@example.com", "password": "' + b"x" * LIMIT + b'"}'
    for path in ("/api/v1/auth/register", "/api/v1/auth/login", "/api/v1/orders",
                 "/api/v1/payments/portone/webhook"):
        answer = small_limit.post(path, content=big, headers={"content-type":
                                                              "application/json"})
        body = assert_problem(answer, 413, "request_too_large")
        assert answer.headers["connection"] == "close"
        assert body["max_body_bytes"] == LIMIT and body["instance"] == path
    # Nothing was registered.
    login = small_limit.post("/api/v1/auth/login",
                             json={"email": "a@example.com", "password": "x" * 20})
    assert login.status_code == 401, login.text


def test_a_chunked_body_is_counted_as_it_streams(small_limit: TestClient) -> None:
    def chunks(total: int) -> Iterator[bytes]:
        yield b'{"email": "b@example.com", "password": "'
        sent = 0
        while sent < total:
            yield b"y" * 512
            sent += 512
        yield b'"}'

    answer = small_limit.post("/api/v1/auth/register", content=chunks(LIMIT * 4),
                              headers={"content-type": "application/json"})
    assert_problem(answer, 413, "request_too_large")

    # At the limit is fine (a password too long for the rules, but read and judged).
    fits = small_limit.post("/api/v1/auth/register", content=chunks(LIMIT - 1024),
                            headers={"content-type": "application/json"})
    assert fits.status_code == 422, fits.text


def test_a_body_at_the_default_limit_passes_and_one_byte_more_is_413(
        client: TestClient, alice: dict[str, str], api_settings: ApiSettings) -> None:
    limit = api_settings.max_request_body_bytes
    assert limit == 1024 * 1024
    head, tail = b'{"amount": 1000, "pad": "', b'"}'
    exact = head + b" " * (limit - len(head) - len(tail)) + tail
    ok = client.post("/api/v1/account/deposit", content=exact,
                     headers={**alice, "content-type": "application/json"})
    assert ok.status_code == 200, ok.text
    over = client.post("/api/v1/account/deposit", content=exact + b" ",
                       headers={**alice, "content-type": "application/json"})
    assert_problem(over, 413, "request_too_large")
    rows = client.get("/api/v1/transactions", headers=alice).json()["items"]
    assert [row["amount"] for row in rows] == [1000, 10_000_000]


def test_an_order_body_with_a_huge_integer_is_422(client: TestClient, store: Any,
                                                  alice: dict[str, str]) -> None:
    put(store, make_quote("A005930"))
    for field in ("price", "quantity"):
        body = {"code": "A005930", "side": "BUY", "type": "LIMIT", "quantity": 1,
                "price": 70_000, field: TOO_BIG}
        answer = client.post("/api/v1/orders", headers=alice, json=body)
        assert answer.status_code == 422, answer.text
