"""The API keeps the contract its OpenAPI document states (schemathesis).

Every operation of the document is called with generated requests, as a user and as an admin,
against the real app (schemathesis' ASGI transport runs its lifespan) with a private Redis holding
quotes, a scripted relayer answering commands, a fresh migrated database (MariaDB when reachable,
else SQLite) and the fake PortOne. Each answer must be no 5xx, a status the document lists for
that operation, with a documented content type and a body that matches the documented schema; a
request the document calls invalid must be refused. After the run the money invariants hold.
A failure prints the request as a `curl` line.

One app, Redis and database serve the whole module (a fresh one per operation would cost more
than the calls). Reproducible: a fixed seed, no example database, no deadline; a few examples per
operation so the run stays within CI's budget (README, Tests).
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
import schemathesis
from fastapi import FastAPI
from pydantic import SecretStr
from schemathesis.python import asgi

from api.app import create_app
from api.errors import PROBLEM_JSON
from api.settings import ApiSettings
from relayer.bus import BusNames, Command, CommandResult, format_utc
from tests.conftest import REDIS_SERVER, RedisServer
from tests.support.api import ADMIN_EMAIL, ADMIN_PASSWORD, app_settings
from tests.support.databases import (
    fresh_mysql_database,
    fresh_sqlite_database,
    mysql_unreachable_reason,
)
from tests.support.env import free_port
from tests.support.fake_portone import FakePortOne, PaymentStatus, webhook_secret
from tests.support.invariants import assert_invariants
from tests.support.quotes import make_quote, publish_ticks

SEED = 20261128
EXAMPLES_PER_OPERATION = 10
USER_EMAIL = "contract-user@example.com"
USER_PASSWORD = "contract-password-0001"
CODES = ("A005930", "A000660", "A035420")
NAMES = BusNames()
Case = schemathesis.Case[Any]

# What every answer must satisfy: no 5xx, the document tells the truth, and a request the
# document calls invalid is refused (4xx). schemathesis' other checks (authorization probes,
# acceptance of every valid request, ...) are off: business rules refuse valid-looking input.
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "negative_data_rejection")

ADMIN_TAG = "admin: subscriptions"


def contract_config(*, coverage_for_all: bool, admin_only_examples: int | None = None,
                    ) -> schemathesis.Config:
    """schemathesis' settings: `coverage_for_all` runs its coverage phase (boundary and
    invalid values of every parameter) on every operation, else only on the admin and system
    ones; `admin_only_examples` caps the admin operations (for a user they all answer 403)."""
    operations: list[dict[str, Any]] = []
    if not coverage_for_all:
        operations.append({"include-tag": [ADMIN_TAG, "system"],
                           "phases": {"coverage": {"enabled": True,
                                                   "unexpected-methods": []}}})
    if admin_only_examples is not None:
        operations.append({"include-tag": ADMIN_TAG,
                           "phases": {"coverage": {"enabled": False}},
                           "generation": {"max-examples": admin_only_examples}})
    return schemathesis.Config.from_dict({
        "seed": SEED,
        "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
        "generation": {"max-examples": EXAMPLES_PER_OPERATION, "deterministic": True,
                       "database": "none"},
        # No requests with methods the document does not list: a 405 says nothing about it.
        "phases": {"coverage": {"enabled": coverage_for_all, "unexpected-methods": []}},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
        "operations": operations,
    })


# The document as the app builds it (settings do not change it). Loaded at import so that each
# operation is its own test; `test_the_app_serves_this_document` ties it to the served one.
DOCUMENT = create_app(ApiSettings()).openapi()
# A user gets the coverage phase everywhere; the admin, who is also a user, only where the
# admin role changes the answer (the admin and system operations).
as_user = schemathesis.openapi.from_dict(
    DOCUMENT, config=contract_config(coverage_for_all=True, admin_only_examples=3))
as_admin = schemathesis.openapi.from_dict(DOCUMENT, config=contract_config(coverage_for_all=False))


@pytest.fixture(scope="module")
def portone() -> Iterator[FakePortOne]:
    with FakePortOne(secret="contract-portone-secret") as fake:
        yield fake


@pytest.fixture(scope="module")
def contract_app(portone: FakePortOne) -> Iterator[FastAPI]:
    """The app on a private Redis (holding quotes) and a fresh database, for the whole module;
    its lifespan is run by schemathesis' ASGI transport and ended here."""
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stocking-contract-")))
        redis_server = RedisServer(port=free_port(), folder=folder,
                                   real=REDIS_SERVER is not None)
        redis_server.start()
        stack.callback(redis_server.stop)
        database_url = stack.enter_context(
            fresh_mysql_database() if mysql_unreachable_reason() is None
            else fresh_sqlite_database(folder))
        store = redis_server.client()
        stack.callback(store.close)
        stack.enter_context(ScriptedRelayer(redis_server))
        publish_ticks(store, *(make_quote(code, price=70_000 + 100 * i, base=70_000)
                               for i, code in enumerate(CODES)))
        app = create_app(app_settings(
            redis_server.url, database_url,
            portone_store_id=portone.store_id,
            portone_channel_key=portone.channel_key,
            portone_v2_api_secret=SecretStr(portone.secret),
            portone_webhook_secret=SecretStr(webhook_secret()),
            portone_api_base_url=portone.base_url,
            portone_timeout_s=2.0,
            # The callers' access tokens outlive the run, however slow the machine.
            jwt_access_ttl_s=3600,
            # The quotes written above stay fresh for the whole run, so orders can execute.
            quote_max_age_s=3600,
        ))
        stack.callback(asgi.shutdown_lifespans)
        yield app
        assert_invariants(app.state.resources.db)


class ScriptedRelayer:
    """Stands in for the relayer on the bus: keeps its health report fresh and answers every
    command at once with success, so the admin commands answer 200 (not 503 "no relayer")."""

    def __init__(self, redis_server: RedisServer) -> None:
        self._store = redis_server.client()
        self._listener = self._store.pubsub()
        self._listener.subscribe(NAMES.commands)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scripted-relayer", daemon=True)

    def __enter__(self) -> ScriptedRelayer:
        self._write_health()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()
        self._store.close()

    def _write_health(self) -> None:
        self._store.hset(NAMES.relayer_health, mapping={
            "state": "connected", "updated_at": format_utc(datetime.now(UTC), millis=True),
            "rejected_topics": "[]",
        })

    def _run(self) -> None:
        while not self._stop.is_set():
            self._write_health()
            message = self._listener.get_message(ignore_subscribe_messages=True, timeout=0.5)
            if message is None:
                continue
            command = Command.from_json(message["data"])
            result = CommandResult(id=command.id, ok=True, topic=command.topic,
                                   message="applied", active=1)
            self._store.lpush(NAMES.command_result(command.id), result.to_json())


def _http(app: FastAPI) -> asgi.ASGIClient:
    """A requests-like client of the app, in the ASGI transport's event loop and lifespan."""
    return asgi.get_client(cast(Any, app))


def _login(client: Any, email: str, password: str) -> dict[str, str]:
    response = client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _seed(client: Any, portone: FakePortOne, headers: dict[str, str]) -> None:
    """Some of everything, so that listings answer with items and not only empty pages."""
    order = client.post("/api/v1/orders", headers=headers,
                        json={"code": CODES[0], "side": "BUY", "type": "MARKET", "quantity": 3})
    assert order.status_code == 201, order.text
    resting = client.post("/api/v1/orders", headers=headers, json={
        "code": CODES[1], "side": "BUY", "type": "LIMIT", "quantity": 2, "price": 60_000,
        "time_in_force": "GTC"})
    assert resting.status_code == 201, resting.text
    watchlist = client.post("/api/v1/watchlists", headers=headers, json={"name": "contract"})
    assert watchlist.status_code == 201, watchlist.text
    item = client.post(f"/api/v1/watchlists/{watchlist.json()['id']}/items", headers=headers,
                       json={"code": CODES[2]})
    assert item.status_code == 201, item.text
    prepared = client.post("/api/v1/payments/portone/prepare", headers=headers,
                           json={"product_id": "cash-10m"})
    assert prepared.status_code == 201, prepared.text
    data = prepared.json()["data"]
    portone.set_payment(data["payment_id"], status=PaymentStatus.PAID, amount=data["amount"],
                        order_name=data["order_name"])
    completed = client.post("/api/v1/payments/portone/complete", headers=headers,
                            json={"payment_id": data["payment_id"]})
    assert completed.status_code == 200, completed.text


@pytest.fixture(scope="module")
def callers(contract_app: FastAPI, portone: FakePortOne) -> dict[str, dict[str, str]]:
    """A registered user and the admin, each signed in (before schemathesis' failed logins
    could rate-limit this client's address) and with orders, a watchlist and a payment of
    their own: their bearer headers, by role."""
    with _http(contract_app) as client:
        registered = client.post("/api/v1/auth/register",
                                 json={"email": USER_EMAIL, "password": USER_PASSWORD})
        assert registered.status_code == 201, registered.text
        headers = {"user": _login(client, USER_EMAIL, USER_PASSWORD),
                   "admin": _login(client, ADMIN_EMAIL, ADMIN_PASSWORD)}
        for role_headers in headers.values():
            _seed(client, portone, role_headers)
    return headers


@pytest.fixture(scope="module")
def caller(request: pytest.FixtureRequest, callers: dict[str, dict[str, str]],
           ) -> dict[str, str]:
    """The bearer header of the role each test names (`"user"` or `"admin"`)."""
    return callers[request.param]


def test_the_app_serves_this_document(contract_app: FastAPI) -> None:
    with _http(contract_app) as client:
        response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.json() == DOCUMENT


def _operations() -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            yield f"{method.upper()} {path}", operation


def test_every_operation_documents_the_shared_answers() -> None:
    """The answers of the shared mechanisms (api.openapi.document_errors), on every operation,
    not only on those schemathesis happens to provoke them on."""
    for name, operation in _operations():
        responses = operation["responses"]
        assert "431" in responses, name  # the server's limit on the request head
        if operation.get("security") == [{"HTTPBearer": []}]:
            assert "401" in responses, name
        if ADMIN_TAG in operation["tags"]:
            assert "403" in responses, name
        if "requestBody" in operation:
            assert "413" in responses, name
        parsed_body = "requestBody" in operation and not name.endswith("/webhook")  # raw
        if operation.get("parameters") or parsed_body:
            assert "422" in responses, name
        for status, answer in responses.items():
            if int(status) >= 400:
                # Every error is a problem, with its schema (never FastAPI's default 422 body,
                # HTTPValidationError as application/json, which the API does not send).
                assert answer["content"][PROBLEM_JSON]["schema"] == {
                    "$ref": "#/components/schemas/Problem"}, (name, status)
                assert "HTTPValidationError" not in str(answer), (name, status)
    # Every /api operation can meet a store outage, but the catalog (settings only) and the
    # market clock and calendar (the process's calendar only).
    without_503 = {name for name, operation in _operations()
                   if name.split()[1].startswith("/api/") and "503" not in operation["responses"]}
    assert without_503 == {"GET /api/v1/payments/products", "GET /api/v1/market/clock",
                           "GET /api/v1/market/calendar"}
    # Public: the market's hours are no one's secret (a login screen may show them).
    for name in ("GET /api/v1/market/clock", "GET /api/v1/market/calendar"):
        assert "security" not in dict(_operations())[name], name
    assert "HTTPValidationError" not in DOCUMENT["components"]["schemas"]


def test_a_body_that_is_not_utf8_is_400_malformed_body(contract_app: FastAPI) -> None:
    with _http(contract_app) as client:
        response = client.post("/api/v1/auth/register", data=b"\xff\xfe{",
                               headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["code"] == "malformed_body"


# The role is a parameter also so that each operation's test has its own node id (`[GET /x][user]`).
@as_user.parametrize()
@pytest.mark.parametrize("caller", ["user"], indirect=True)
def test_every_operation_answers_a_user_as_documented(
        case: Case, caller: dict[str, str], contract_app: FastAPI) -> None:
    case.call_and_validate(app=contract_app, headers=caller)


@as_admin.parametrize()
@pytest.mark.parametrize("caller", ["admin"], indirect=True)
def test_every_operation_answers_an_admin_as_documented(
        case: Case, caller: dict[str, str], contract_app: FastAPI) -> None:
    case.call_and_validate(app=contract_app, headers=caller)
