"""Watchlists through HTTP, against the real app, a real database (MariaDB when reachable) and a
real Redis holding quotes as the relayer writes them: the CRUD round trip, the quote of each
item (fresh, stale, missing), refusals (bad codes and names, duplicates, limits) that change
nothing, isolation between users, and concurrent writes that respect the limits."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

import orjson
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.app import create_app
from api.db import Database, make_engine
from api.errors import PROBLEM_JSON, Unprocessable
from api.ledger.service import open_account
from api.models import Role, User, WatchlistItem
from api.quotes.schemas import QuoteOut
from api.settings import ApiSettings
from api.watchlists import service
from relayer.bus import Quote
from tests.conftest import RedisServer
from tests.support.api import assert_problem, database
from tests.support.concurrency import concurrently
from tests.support.quotes import NAMES, make_quote, put

WATCHLISTS = "/api/v1/watchlists"

Headers = dict[str, str]
PutQuote = Callable[..., Quote]


# --------------------------------------------------------------------------------------------
# Helpers


def register(client: TestClient, email: str) -> Headers:
    """A new user (with a cash account, as registration opens one), signed in for real."""
    password = "watchlist-password-01"
    created = client.post("/api/v1/auth/register", json={"email": email, "password": password})
    assert created.status_code == 201, created.text
    login = client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


@pytest.fixture
def alice(client: TestClient) -> Headers:
    return register(client, "alice@example.com")


@pytest.fixture
def bob(client: TestClient) -> Headers:
    return register(client, "bob@example.com")


@pytest.fixture
def put_quote(redis_server: RedisServer) -> Iterator[PutQuote]:
    """Store a quote of a code, received `age_s` ago, where the relayer writes it."""
    store = redis_server.client()

    def put_one(code: str, **fields: Any) -> Quote:
        made = make_quote(code, **fields)
        quote = dataclasses.replace(made, tick_id=f"1764000000000-{made.seq}")  # as stored
        put(store, quote)
        return quote

    yield put_one
    store.close()


def create(client: TestClient, headers: Headers, name: str,
           codes: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name} if codes is None else {"name": name, "codes": codes}
    response = client.post(WATCHLISTS, headers=headers, json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def listing(client: TestClient, headers: Headers) -> list[dict[str, Any]]:
    response = client.get(WATCHLISTS, headers=headers)
    assert response.status_code == 200, response.text
    watchlists: list[dict[str, Any]] = response.json()["watchlists"]
    return watchlists


def fetch(client: TestClient, headers: Headers, watchlist_id: int) -> dict[str, Any]:
    response = client.get(f"{WATCHLISTS}/{watchlist_id}", headers=headers)
    assert response.status_code == 200, response.text
    watchlist: dict[str, Any] = response.json()
    return watchlist


def codes_of(watchlist: dict[str, Any]) -> list[str]:
    return [item["code"] for item in watchlist["items"]]


# --------------------------------------------------------------------------------------------
# The round trip


def test_crud_round_trip(client: TestClient, alice: Headers) -> None:
    assert listing(client, alice) == []

    created = create(client, alice, "  반도체  ", ["A005930", "000660", "a005930"])
    # Trimmed name; bus-form codes in request order, a repeat counted once; no quotes yet.
    assert created["name"] == "반도체"
    assert codes_of(created) == ["A005930", "A000660"]
    assert created["item_count"] == 2
    assert [item["quote"] for item in created["items"]] == [None, None]
    watchlist_id = created["id"]
    assert fetch(client, alice, watchlist_id) == created  # the answer is what was stored

    second = create(client, alice, "Empty")
    assert second["items"] == [] and second["item_count"] == 0
    assert listing(client, alice) == [
        {key: created[key] for key in ("id", "name", "created_at", "item_count")},
        {key: second[key] for key in ("id", "name", "created_at", "item_count")},
    ]

    renamed = client.patch(f"{WATCHLISTS}/{watchlist_id}", headers=alice,
                           json={"name": "Chips"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json() == {**created, "name": "Chips"}

    added = client.post(f"{WATCHLISTS}/{watchlist_id}/items", headers=alice,
                        json={"code": "035420"})
    assert added.status_code == 201, added.text
    assert codes_of(added.json()) == ["A005930", "A000660", "A035420"]  # in the order added
    assert added.json()["item_count"] == 3

    removed = client.delete(f"{WATCHLISTS}/{watchlist_id}/items/005930", headers=alice)
    assert removed.status_code == 204 and removed.content == b""
    assert codes_of(fetch(client, alice, watchlist_id)) == ["A000660", "A035420"]
    assert listing(client, alice)[0]["item_count"] == 2

    deleted = client.delete(f"{WATCHLISTS}/{watchlist_id}", headers=alice)
    assert deleted.status_code == 204 and deleted.content == b""
    assert_problem(client.get(f"{WATCHLISTS}/{watchlist_id}", headers=alice), 404,
                   "watchlist_not_found")
    assert [w["id"] for w in listing(client, alice)] == [second["id"]]
    # Its items went with it (ON DELETE CASCADE).
    left = database(client).call(lambda session: session.scalar(
        select(func.count()).select_from(WatchlistItem)
        .where(WatchlistItem.watchlist_id == watchlist_id)))
    assert left == 0
    # And the name is free again.
    assert create(client, alice, "Chips")["items"] == []


def test_items_carry_their_quotes_fresh_stale_or_missing(
        client: TestClient, alice: Headers, put_quote: PutQuote,
        api_settings: ApiSettings) -> None:
    fresh = put_quote("A005930", age_s=0.5, price=71200)
    put_quote("A000660", age_s=api_settings.quote_max_age_s + 50, price=180000)
    watchlist_id = create(client, alice, "Mixed", ["A005930", "A000660", "A035420"])["id"]

    items = fetch(client, alice, watchlist_id)["items"]

    assert [item["code"] for item in items] == ["A005930", "A000660", "A035420"]
    first, second, third = (item["quote"] for item in items)
    assert {key: first[key] for key in dataclasses.asdict(fresh)} == dataclasses.asdict(fresh)
    assert first["stale"] is False and 0.4 <= first["age_s"] < 5
    QuoteOut.model_validate(first)  # the documented shape is the real one
    assert second["price"] == 180000 and second["stale"] is True
    assert second["age_s"] >= api_settings.quote_max_age_s + 50
    assert third is None


def test_a_new_quote_shows_at_the_next_read(client: TestClient, alice: Headers,
                                            put_quote: PutQuote) -> None:
    created = create(client, alice, "Live", ["A005930"])
    assert created["items"][0]["quote"] is None
    put_quote("A005930", price=72000)
    assert fetch(client, alice, created["id"])["items"][0]["quote"]["price"] == 72000
    added = client.post(f"{WATCHLISTS}/{created['id']}/items", headers=alice,
                        json={"code": "A000660"}).json()
    assert [item["quote"] and item["quote"]["price"] for item in added["items"]] == [72000, None]


def test_a_stored_quote_is_passed_through(client: TestClient, alice: Headers,
                                          redis_server: RedisServer) -> None:
    store: redis.Redis = redis_server.client()
    try:
        raw = orjson.loads(make_quote("A005930").to_json()) | {"vi_active": True}
        store.set(NAMES.quote("A005930"), orjson.dumps(raw))
    finally:
        store.close()
    watchlist_id = create(client, alice, "Raw", ["A005930"])["id"]
    assert fetch(client, alice, watchlist_id)["items"][0]["quote"]["vi_active"] is True


def test_the_quote_is_documented_as_the_quote_routes_answer_it(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    item = spec["components"]["schemas"]["WatchlistItemOut"]["properties"]["quote"]
    documented = next(option for option in item["anyOf"] if option.get("type") != "null")
    assert list(documented["properties"]) == list(QuoteOut.model_fields)
    paths = {path for path in spec["paths"] if path.startswith(WATCHLISTS)}
    assert paths == {WATCHLISTS, f"{WATCHLISTS}/{{watchlist_id}}",
                     f"{WATCHLISTS}/{{watchlist_id}}/items",
                     f"{WATCHLISTS}/{{watchlist_id}}/items/{{code}}"}


# --------------------------------------------------------------------------------------------
# Refusals


@pytest.mark.parametrize("code", ["XYZ", "A12345", "A00066", "00593", "A0059301", ""])
def test_an_invalid_code_is_422_and_changes_nothing(client: TestClient, alice: Headers,
                                                    code: str) -> None:
    assert_problem(client.post(WATCHLISTS, headers=alice,
                               json={"name": "Bad", "codes": ["A005930", code]}),
                   422, "invalid_code")
    assert listing(client, alice) == []  # not even the watchlist without the bad code

    watchlist = create(client, alice, "Good", ["A005930"])
    assert_problem(client.post(f"{WATCHLISTS}/{watchlist['id']}/items", headers=alice,
                               json={"code": code}), 422, "invalid_code")
    if code:  # an empty path segment is another route
        assert_problem(client.delete(f"{WATCHLISTS}/{watchlist['id']}/items/{code}",
                                     headers=alice), 422, "invalid_code")
    assert fetch(client, alice, watchlist["id"]) == watchlist


def test_a_duplicate_name_is_409(client: TestClient, alice: Headers, bob: Headers) -> None:
    tech = create(client, alice, "Tech")
    other = create(client, alice, "Other")

    for name in ("Tech", "  Tech ", "TECH", "tech"):  # trimmed, and letter case ignored
        assert_problem(client.post(WATCHLISTS, headers=alice, json={"name": name}),
                       409, "watchlist_name_taken")
    assert_problem(client.patch(f"{WATCHLISTS}/{other['id']}", headers=alice,
                                json={"name": "tech"}), 409, "watchlist_name_taken")
    assert [w["name"] for w in listing(client, alice)] == ["Tech", "Other"]

    # Renaming a watchlist to its own name, in another case, is not a conflict with itself.
    same = client.patch(f"{WATCHLISTS}/{tech['id']}", headers=alice, json={"name": "TECH"})
    assert same.status_code == 200 and same.json()["name"] == "TECH"
    # Names are per user.
    assert create(client, bob, "TECH")["name"] == "TECH"


def test_adding_a_code_already_present_is_409(client: TestClient, alice: Headers) -> None:
    watchlist = create(client, alice, "Once", ["A005930"])
    for code in ("A005930", "005930", "a005930"):
        assert_problem(client.post(f"{WATCHLISTS}/{watchlist['id']}/items", headers=alice,
                                   json={"code": code}), 409, "watchlist_item_exists")
    assert fetch(client, alice, watchlist["id"]) == watchlist


def test_removing_a_code_not_present_is_404(client: TestClient, alice: Headers) -> None:
    watchlist = create(client, alice, "Some", ["A005930"])
    assert_problem(client.delete(f"{WATCHLISTS}/{watchlist['id']}/items/A000660",
                                 headers=alice), 404, "watchlist_item_not_found")
    assert fetch(client, alice, watchlist["id"]) == watchlist


@pytest.mark.parametrize("body", [
    {},
    {"name": ""},
    {"name": "   "},
    {"name": "x" * 65},
    {"name": 7},
    {"name": None},
    {"name": "Fine", "codes": "A005930"},
    {"name": "Fine", "codes": [5930]},
])
def test_a_bad_body_is_422_and_changes_nothing(client: TestClient, alice: Headers,
                                               body: dict[str, Any]) -> None:
    kept = create(client, alice, "Kept", ["A005930"])

    assert_problem(client.post(WATCHLISTS, headers=alice, json=body), 422, "validation_error")
    if "codes" not in body:
        assert_problem(client.patch(f"{WATCHLISTS}/{kept['id']}", headers=alice, json=body),
                       422, "validation_error")

    assert listing(client, alice) == [
        {key: kept[key] for key in ("id", "name", "created_at", "item_count")}]
    assert fetch(client, alice, kept["id"]) == kept


def test_bad_items_bodies_and_ids_are_422(client: TestClient, alice: Headers) -> None:
    kept = create(client, alice, "Kept", ["A005930"])
    for body in ({}, {"code": None}, {"code": 5930}, {"code": ["A000660"]}):
        assert_problem(client.post(f"{WATCHLISTS}/{kept['id']}/items", headers=alice,
                                   json=body), 422, "validation_error")
    for bad_id in ("abc", "0", "-1", str(2**63)):
        assert_problem(client.get(f"{WATCHLISTS}/{bad_id}", headers=alice), 422,
                       "validation_error")
    assert fetch(client, alice, kept["id"]) == kept


def test_a_name_of_64_characters_is_accepted(client: TestClient, alice: Headers) -> None:
    name = "가" * 64  # characters, not bytes
    watchlist = create(client, alice, name)
    assert watchlist["name"] == name
    assert fetch(client, alice, watchlist["id"])["name"] == name


@pytest.mark.parametrize("name", ["a\x00b", "NUL at the end\x00", "two\nlines", "tab\tinside",
                                  "esc \x1b[31mred", "del\x7f", "c1 \x85 next line"])
def test_a_name_with_a_control_character_is_422_and_changes_nothing(
        client: TestClient, alice: Headers, name: str) -> None:
    kept = create(client, alice, "Kept")

    created = assert_problem(client.post(WATCHLISTS, headers=alice, json={"name": name}), 422,
                             "validation_error")
    renamed = assert_problem(client.patch(f"{WATCHLISTS}/{kept['id']}", headers=alice,
                                          json={"name": name}), 422, "validation_error")

    for body in (created, renamed):
        assert body["detail"].startswith("name: Value error, must not contain control "
                                         "characters (U+"), body
    assert listing(client, alice) == [
        {key: kept[key] for key in ("id", "name", "created_at", "item_count")}]


def test_names_keep_their_inner_spaces_and_non_ascii_text(client: TestClient,
                                                          alice: Headers) -> None:
    """The control-character rule refuses only category Cc: ordinary Unicode text passes."""
    name = "반도체 · Chips 👩‍💻 (2026)"
    assert create(client, alice, f"  {name} ")["name"] == name


# --------------------------------------------------------------------------------------------
# Limits

MakeClient = Callable[..., tuple[TestClient, Headers]]


@pytest.fixture
def make_client_with(api_settings: ApiSettings) -> Iterator[MakeClient]:
    """An app with overridden settings (on the test's database), and a new user's headers."""
    with ExitStack() as stack:
        def make(**overrides: Any) -> tuple[TestClient, Headers]:
            settings = api_settings.model_copy(update=overrides)
            client = stack.enter_context(TestClient(create_app(settings)))
            return client, register(client, "limits@example.com")

        yield make


def test_the_number_of_watchlists_is_limited(make_client_with: MakeClient) -> None:
    client, headers = make_client_with(watchlists_max_per_user=2)
    first = create(client, headers, "One")
    create(client, headers, "Two")

    body = assert_problem(client.post(WATCHLISTS, headers=headers, json={"name": "Three"}),
                          422, "watchlist_limit_reached")
    assert body["max_watchlists"] == 2
    assert [w["name"] for w in listing(client, headers)] == ["One", "Two"]

    assert client.delete(f"{WATCHLISTS}/{first['id']}", headers=headers).status_code == 204
    assert create(client, headers, "Three")["name"] == "Three"


def test_the_items_of_a_watchlist_are_limited(make_client_with: MakeClient) -> None:
    client, headers = make_client_with(watchlist_max_items=3)
    body = assert_problem(client.post(WATCHLISTS, headers=headers, json={
        "name": "Big", "codes": ["A005930", "A000660", "A035420", "A051910"]}),
        422, "watchlist_full")
    assert body["max_items"] == 3
    assert listing(client, headers) == []

    # Repeats count once: three distinct codes fit.
    full = create(client, headers, "Full", ["A005930", "005930", "A000660", "A035420"])
    assert full["item_count"] == 3
    assert_problem(client.post(f"{WATCHLISTS}/{full['id']}/items", headers=headers,
                               json={"code": "A051910"}), 422, "watchlist_full")
    # A code already present is a conflict first, not a lack of room.
    assert_problem(client.post(f"{WATCHLISTS}/{full['id']}/items", headers=headers,
                               json={"code": "A005930"}), 409, "watchlist_item_exists")
    assert fetch(client, headers, full["id"]) == full

    assert client.delete(f"{WATCHLISTS}/{full['id']}/items/A000660",
                         headers=headers).status_code == 204
    added = client.post(f"{WATCHLISTS}/{full['id']}/items", headers=headers,
                        json={"code": "A051910"})
    assert added.status_code == 201, added.text
    assert codes_of(added.json()) == ["A005930", "A035420", "A051910"]


def test_concurrent_creates_of_one_name_make_one(client: TestClient, alice: Headers) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(
            lambda _: client.post(WATCHLISTS, headers=alice, json={"name": "Same"}).status_code,
            range(8)))
    assert sorted(outcomes) == [201] + [409] * 7
    assert [w["name"] for w in listing(client, alice)] == ["Same"]


def test_concurrent_creates_stop_at_the_limit(mysql_database_url: str) -> None:
    """20 threads each create a watchlist at once, with a limit of 5: exactly 5 exist after,
    because one user's writes run one at a time under the account lock (MySQL only: SQLite
    has no row locks, so there the count limit is not exact under concurrent requests)."""
    db = Database(make_engine(mysql_database_url, pool_size=25))
    try:
        def make_user(session: Session) -> int:
            user = User(email="race@example.com", password_hash="x", role=Role.USER.value)
            session.add(user)
            session.flush()
            open_account(session, user.id, 0)
            return user.id
        user_id = db.call(make_user)

        def attempt(n: int) -> str:
            try:
                db.call_retrying(service.create_watchlist, user_id, f"List {n}", [],
                                 max_per_user=5, max_items=100)
                return "ok"
            except Unprocessable as exc:
                return exc.code

        outcomes = concurrently(20, attempt)

        assert outcomes.count("ok") == 5
        assert outcomes.count("watchlist_limit_reached") == 15
        assert len(db.call(service.list_watchlists, user_id)) == 5
    finally:
        db.dispose()


def test_concurrent_adds_of_one_code_add_it_once(client: TestClient, alice: Headers) -> None:
    watchlist_id = create(client, alice, "Race")["id"]

    def attempt(code: str) -> int:
        return client.post(f"{WATCHLISTS}/{watchlist_id}/items", headers=alice,
                           json={"code": code}).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(attempt, ["A005930", "005930"] * 4))
    assert sorted(outcomes) == [201] + [409] * 7
    assert codes_of(fetch(client, alice, watchlist_id)) == ["A005930"]


# --------------------------------------------------------------------------------------------
# Isolation and authentication


def test_someone_elses_watchlist_is_404_on_every_verb(client: TestClient, alice: Headers,
                                                      bob: Headers) -> None:
    bobs = create(client, bob, "Bob's", ["A005930"])
    path = f"{WATCHLISTS}/{bobs['id']}"

    for response in (
        client.get(path, headers=alice),
        client.patch(path, headers=alice, json={"name": "Mine now"}),
        client.delete(path, headers=alice),
        client.post(f"{path}/items", headers=alice, json={"code": "A000660"}),
        client.delete(f"{path}/items/A005930", headers=alice),
    ):
        body = assert_problem(response, 404, "watchlist_not_found")
        assert "Bob" not in body["detail"]

    assert listing(client, alice) == []
    assert fetch(client, bob, bobs["id"]) == bobs
    # Exactly what an id that does not exist answers.
    assert_problem(client.get(f"{WATCHLISTS}/{bobs['id'] + 1000}", headers=bob), 404,
                   "watchlist_not_found")


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", WATCHLISTS, None),
    ("POST", WATCHLISTS, {"name": "x"}),
    ("GET", f"{WATCHLISTS}/1", None),
    ("PATCH", f"{WATCHLISTS}/1", {"name": "x"}),
    ("DELETE", f"{WATCHLISTS}/1", None),
    ("POST", f"{WATCHLISTS}/1/items", {"code": "A005930"}),
    ("DELETE", f"{WATCHLISTS}/1/items/A005930", None),
])
def test_every_watchlist_route_needs_a_token(client: TestClient, method: str, path: str,
                                             body: dict[str, str] | None) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        response = client.request(method, path, headers=headers, json=body)
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["content-type"] == PROBLEM_JSON
        assert response.headers["www-authenticate"] == "Bearer"


# --------------------------------------------------------------------------------------------
# Redis down


@pytest.mark.private_redis
def test_redis_down_fails_a_read_but_not_a_committed_write(
        client: TestClient, alice: Headers, redis_server: RedisServer) -> None:
    watchlist = create(client, alice, "Before", ["A005930"])
    redis_server.stop()

    assert_problem(client.get(f"{WATCHLISTS}/{watchlist['id']}", headers=alice), 503,
                   "redis_unavailable")
    # The change is committed before the quotes are read: it succeeds, without quotes, so
    # that no client retries a change that already happened.
    created = client.post(WATCHLISTS, headers=alice, json={"name": "During",
                                                           "codes": ["A000660"]})
    assert created.status_code == 201, created.text
    assert created.json()["items"][0]["quote"] is None
    assert [w["name"] for w in listing(client, alice)] == ["Before", "During"]
