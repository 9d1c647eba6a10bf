"""Auth through HTTP, against the real app, a real Redis and a real database: registration,
login, tokens and their refusals, refresh with the current role, login rate limits shared by
workers, and the admin account ensured at start."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from jwt.warnings import InsecureKeyLengthWarning
from pydantic import SecretStr
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from api.app import create_app
from api.auth.passwords import PasswordProfile, Passwords
from api.auth.service import ensure_admin_account
from api.auth.tokens import Principal, TokenType, issue
from api.models import Account, LedgerEntry, RefreshTokenFamily, Role, User
from api.resources import Resources
from api.settings import ApiSettings
from api.text import NO_CONTROL_CHARACTERS_PATTERN
from relayer.bus import BusNames
from tests.conftest import RedisServer
from tests.support.api import ADMIN_EMAIL, ADMIN_PASSWORD, TEST_JWT_KEY, assert_problem, database
from tests.support.quotes import make_quote, put

PASSWORD = "alice-password-0001"
ME = "/api/v1/users/me"
ADMIN_ROUTE = "/api/v1/admin/websocket/subscriptions"  # any AdminUser route would do

MakeClient = Callable[..., TestClient]

# --------------------------------------------------------------------------------------------
# Helpers


def register(client: TestClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return client.post("/api/v1/auth/register", json={"email": email, "password": password})


def login(client: TestClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return client.post("/api/v1/auth/login", json={"email": email, "password": password})


def tokens(client: TestClient, email: str, password: str = PASSWORD) -> dict[str, Any]:
    response = login(client, email, password)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims_of(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(token, TEST_JWT_KEY, algorithms=["HS256"])
    return decoded


def user_row(client: TestClient, email: str) -> User | None:
    return database(client).call(
        lambda session: session.scalar(select(User).where(User.email == email)))


def set_role(client: TestClient, email: str, role: Role) -> None:
    database(client).call(lambda session: session.execute(
        update(User).where(User.email == email).values(role=role.value)))


@pytest.fixture
def make_client(api_settings: ApiSettings) -> Iterator[MakeClient]:
    """Another "worker": an app of its own on the test's Redis and database, with overrides."""
    with ExitStack() as stack:
        def make(**overrides: Any) -> TestClient:
            settings = api_settings.model_copy(update=overrides)
            return stack.enter_context(TestClient(create_app(settings)))
        yield make


# --------------------------------------------------------------------------------------------
# Registration


def test_register_answers_201_with_the_account_as_users_me_shows_it(client: TestClient) -> None:
    response = register(client, "  Alice@Example.COM ")

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"id", "email", "role", "created_at", "premium_until", "premium"}
    assert (body["premium_until"], body["premium"]) == (None, False)
    assert isinstance(body["id"], int)
    assert body["email"] == "alice@example.com"
    assert body["role"] == "user"
    created = datetime.fromisoformat(body["created_at"])
    assert created.tzinfo is not None
    assert abs(datetime.now(UTC) - created) < timedelta(minutes=1)

    me = client.get(ME, headers=bearer(tokens(client, "alice@example.com")["access_token"]))
    assert me.status_code == 200
    assert me.json() == body


def test_register_refuses_a_taken_email_whatever_its_case(client: TestClient) -> None:
    assert register(client, "bob@example.com").status_code == 201

    body = assert_problem(register(client, "BOB@Example.com", "another-password-1"), 409,
                          "email_taken")
    assert body["instance"] == "/api/v1/auth/register"
    count = database(client).call(lambda session: session.scalar(
        select(func.count()).select_from(User).where(User.email == "bob@example.com")))
    assert count == 1


def test_concurrent_registrations_of_one_email_give_one_account_and_409s(
        client: TestClient) -> None:
    with ThreadPoolExecutor(max_workers=5) as pool:
        responses = list(pool.map(lambda _: register(client, "race@example.com"), range(5)))

    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409, 409]
    for response in responses:
        if response.status_code == 409:
            assert response.json()["code"] == "email_taken"


@pytest.mark.parametrize("email", ["not-an-email", "a@b", "two@@example.com", ""])
def test_register_refuses_an_invalid_email(client: TestClient, email: str) -> None:
    body = assert_problem(register(client, email), 422, "validation_error")
    assert body["detail"].startswith("email:")


def test_register_refuses_a_short_password_and_accepts_the_minimum(client: TestClient) -> None:
    body = assert_problem(register(client, "short@example.com", "x" * 9), 422,
                          "password_too_short")
    assert body["min_length"] == 10
    assert "10" in body["detail"]
    assert user_row(client, "short@example.com") is None

    assert register(client, "short@example.com", "x" * 10).status_code == 201


def test_register_refuses_a_password_over_128_characters(client: TestClient) -> None:
    body = assert_problem(register(client, "long@example.com", "x" * 129), 422,
                          "validation_error")
    assert body["detail"].startswith("password:")
    assert register(client, "long@example.com", "x" * 128).status_code == 201


def test_register_refuses_a_body_without_password(client: TestClient) -> None:
    response = client.post("/api/v1/auth/register", json={"email": "nopw@example.com"})
    body = assert_problem(response, 422, "validation_error")
    assert body["detail"] == "password: Field required"


def test_passwords_are_stored_as_argon2id_hashes_only(standard_client: TestClient) -> None:
    client = standard_client
    assert register(client, "hash@example.com").status_code == 201

    user = user_row(client, "hash@example.com")
    assert user is not None
    assert user.password_hash.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert PASSWORD not in user.password_hash
    assert PasswordHasher().verify(user.password_hash, PASSWORD)


# --------------------------------------------------------------------------------------------
# Login


def test_login_answers_a_token_pair(client: TestClient, api_settings: ApiSettings) -> None:
    user_id = register(client, "carol@example.com").json()["id"]

    body = tokens(client, " CAROL@example.com", PASSWORD)

    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == api_settings.jwt_access_ttl_s == 900
    access, refresh = claims_of(body["access_token"]), claims_of(body["refresh_token"])
    assert (access["sub"], access["email"], access["role"], access["typ"]) == (
        str(user_id), "carol@example.com", "user", "access")
    assert access["exp"] - access["iat"] == 900
    assert (refresh["sub"], refresh["typ"]) == (str(user_id), "refresh")
    assert refresh["exp"] - refresh["iat"] == 14 * 24 * 3600
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "HS256"


def test_wrong_password_and_unknown_email_answer_the_same_401(client: TestClient) -> None:
    register(client, "dave@example.com")

    wrong = login(client, "dave@example.com", "not-the-password")
    unknown = login(client, "nobody@example.com", PASSWORD)

    body = assert_problem(wrong, 401, "invalid_credentials")
    assert body["detail"] == "invalid email or password"
    assert wrong.headers["www-authenticate"] == "Bearer"
    assert unknown.status_code == 401
    assert unknown.headers["www-authenticate"] == "Bearer"
    assert unknown.json() == body


def test_an_unknown_email_costs_a_password_verification_like_a_known_one(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The answer time must not tell whether an email is registered (checked by counting the
    slow verifications, not by timing)."""
    verified: list[str] = []
    real_verify = Passwords.verify

    def counting_verify(self: Passwords, password_hash: str, password: str) -> bool:
        verified.append(password)
        return real_verify(self, password_hash, password)

    monkeypatch.setattr(Passwords, "verify", counting_verify)
    register(client, "quinn@example.com")

    assert login(client, "quinn@example.com", "wrong-password-1").status_code == 401
    assert login(client, "nobody@example.com", "wrong-password-2").status_code == 401

    assert verified == ["wrong-password-1", "wrong-password-2"]


def test_the_admin_account_ensured_at_start_can_log_in(client: TestClient) -> None:
    body = tokens(client, ADMIN_EMAIL, ADMIN_PASSWORD)

    assert claims_of(body["access_token"])["role"] == "admin"
    me = client.get(ME, headers=bearer(body["access_token"])).json()
    assert (me["email"], me["role"]) == (ADMIN_EMAIL, "admin")


@pytest.fixture
def standard_client(api_settings: ApiSettings) -> Iterator[TestClient]:
    """The app with the production password hash (the other tests use the cheap one)."""
    settings = api_settings.model_copy(update={"password_hash_profile": PasswordProfile.STANDARD})
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_login_stores_a_fresh_hash_when_the_parameters_changed(
        standard_client: TestClient) -> None:
    client = standard_client
    register(client, "old@example.com")
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    database(client).call(lambda session: session.execute(
        update(User).where(User.email == "old@example.com").values(password_hash=weak)))

    assert login(client, "old@example.com").status_code == 200

    user = user_row(client, "old@example.com")
    assert user is not None
    assert user.password_hash != weak
    assert user.password_hash.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert login(client, "old@example.com").status_code == 200


# --------------------------------------------------------------------------------------------
# The bearer-token matrix, on a user route and on an admin route


def claims(principal: Principal, *, typ: str = "access", age_s: int = 0,
           ttl_s: int = 900) -> dict[str, Any]:
    issued = datetime.now(UTC) - timedelta(seconds=age_s)
    return {"sub": str(principal.user_id), "email": principal.email,
            "role": principal.role.value, "typ": typ, "iat": issued,
            "exp": issued + timedelta(seconds=ttl_s), "jti": "x"}


def unsigned_token(payload: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        raw = json.dumps(value, default=lambda d: int(d.timestamp())).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."


def hs512_token(payload: dict[str, Any]) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)  # the right key, too short
        return jwt.encode(payload, TEST_JWT_KEY, algorithm="HS512")


# Each maker gets the admin's principal, so that only the flaw in the header can refuse it.
BAD_CREDENTIALS: dict[str, tuple[Callable[[Principal], dict[str, str]], str]] = {
    "no header": (lambda p: {}, "not_authenticated"),
    "basic scheme": (lambda p: {"Authorization": "Basic YWRtaW46YWRtaW4="},
                     "not_authenticated"),
    "bearer without token": (lambda p: {"Authorization": "Bearer"}, "not_authenticated"),
    "not a jwt": (lambda p: bearer("not.a.jwt"), "invalid_token"),
    "signed with another key": (
        lambda p: bearer(jwt.encode(claims(p), "another-key-" + "y" * 40, algorithm="HS256")),
        "invalid_token"),
    "alg none": (lambda p: bearer(unsigned_token(claims(p))), "invalid_token"),
    "HS512 with the right key": (lambda p: bearer(hs512_token(claims(p))), "invalid_token"),
    "expired": (lambda p: bearer(issue(p, TokenType.ACCESS, TEST_JWT_KEY, 60,
                                       now=datetime.now(UTC) - timedelta(hours=1))),
                "token_expired"),
    "refresh token as access": (
        lambda p: bearer(issue(p, TokenType.REFRESH, TEST_JWT_KEY, 3600)), "invalid_token"),
    "no typ claim": (
        lambda p: bearer(jwt.encode({k: v for k, v in claims(p).items() if k != "typ"},
                                    TEST_JWT_KEY, algorithm="HS256")),
        "invalid_token"),
}


@pytest.fixture
def admin(client: TestClient) -> Principal:
    access = tokens(client, ADMIN_EMAIL, ADMIN_PASSWORD)["access_token"]
    return Principal(int(claims_of(access)["sub"]), ADMIN_EMAIL, Role.ADMIN)


@pytest.mark.parametrize("route", [ME, ADMIN_ROUTE])
@pytest.mark.parametrize("case", list(BAD_CREDENTIALS))
def test_bad_credentials_answer_401(client: TestClient, admin: Principal, route: str,
                                    case: str) -> None:
    make_headers, code = BAD_CREDENTIALS[case]

    response = client.get(route, headers=make_headers(admin))

    assert_problem(response, 401, code)
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("route", [ME, ADMIN_ROUTE])
def test_a_well_made_admin_token_is_accepted(client: TestClient, admin: Principal,
                                             route: str) -> None:
    """The control for the matrix above: the same claims, signed properly, pass."""
    response = client.get(route, headers=bearer(jwt.encode(claims(admin), TEST_JWT_KEY,
                                                            algorithm="HS256")))
    assert response.status_code == 200, response.text


def test_a_user_token_on_an_admin_route_answers_403(client: TestClient) -> None:
    register(client, "erin@example.com")
    access = tokens(client, "erin@example.com")["access_token"]

    response = client.get(ADMIN_ROUTE, headers=bearer(access))

    assert_problem(response, 403, "admin_required")


def test_an_admin_token_on_an_admin_route_answers_200(client: TestClient) -> None:
    access = tokens(client, ADMIN_EMAIL, ADMIN_PASSWORD)["access_token"]

    response = client.get(ADMIN_ROUTE, headers=bearer(access))

    assert response.status_code == 200, response.text


def delete_user(client: TestClient, email: str) -> None:
    """What an operator does in SQL: the ledger and the account refer to the user (no cascade:
    money history is not deleted by accident), so they go first."""
    def delete_rows(session: Session) -> None:
        user_id = session.scalar(select(User.id).where(User.email == email))
        for model in (LedgerEntry, Account):
            session.execute(delete(model).where(model.user_id == user_id))
        session.execute(delete(User).where(User.id == user_id))
    database(client).call(delete_rows)


# Every route that loads the caller's user or cash account, with a body it would accept.
USER_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", ME, None),
    ("GET", "/api/v1/account", None),
    ("GET", "/api/v1/portfolio", None),
    ("POST", "/api/v1/account/deposit", {"amount": 1000}),
    ("POST", "/api/v1/account/withdraw", {"amount": 1000}),
    ("POST", "/api/v1/orders", {"code": "A005930", "side": "BUY", "type": "MARKET",
                                "quantity": 1}),
    ("DELETE", "/api/v1/orders/1", None),
    ("POST", "/api/v1/watchlists", {"name": "mine"}),
    ("POST", "/api/v1/payments/portone/prepare", {"product_id": "cash-10m"}),
]


def test_a_valid_token_whose_user_is_gone_answers_401_user_not_found(
        client: TestClient, store: Any) -> None:
    """Not a 500 (the payment insert broke its foreign key) nor a misleading 404: every route
    that meets the missing user says so, while quote reads still need no SQL at all."""
    put(store, make_quote("A005930", price=70_000))
    register(client, "gone@example.com")
    pair = tokens(client, "gone@example.com")
    delete_user(client, "gone@example.com")
    headers = bearer(pair["access_token"])

    for method, path, body in USER_ROUTES:
        response = client.request(method, path, headers=headers, json=body)
        assert_problem(response, 401, "user_not_found")
        assert response.headers["www-authenticate"] == "Bearer"
    assert_problem(client.post("/api/v1/auth/refresh",
                               json={"refresh_token": pair["refresh_token"]}),
                   401, "user_not_found")
    # A token is checked without SQL, so quote reads go on until it expires.
    quote = client.get("/api/v1/trading/realtime/stock/A005930", headers=headers)
    assert quote.status_code == 200, quote.text


def test_a_user_without_a_cash_account_still_gets_404(client: TestClient) -> None:
    """The control: a user that exists but has no account (registered before accounts) is told
    so, not that it is gone."""
    register(client, "early@example.com")
    access = tokens(client, "early@example.com")["access_token"]
    database(client).call(lambda session: session.execute(
        delete(LedgerEntry).where(LedgerEntry.user_id == int(claims_of(access)["sub"]))))
    database(client).call(lambda session: session.execute(
        delete(Account).where(Account.user_id == int(claims_of(access)["sub"]))))

    assert_problem(client.get("/api/v1/account", headers=bearer(access)), 404,
                   "account_not_found")
    assert client.get(ME, headers=bearer(access)).status_code == 200


# --------------------------------------------------------------------------------------------
# Refresh


def refresh(client: TestClient, token: str) -> httpx.Response:
    return client.post("/api/v1/auth/refresh", json={"refresh_token": token})


def test_refresh_answers_a_working_new_pair(client: TestClient) -> None:
    register(client, "frank@example.com")
    first = tokens(client, "frank@example.com")

    response = refresh(client, first["refresh_token"])

    assert response.status_code == 200, response.text
    second = response.json()
    assert second["token_type"] == "bearer" and second["expires_in"] == 900
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]
    assert claims_of(second["access_token"])["typ"] == "access"
    assert client.get(ME, headers=bearer(second["access_token"])).json()["email"] == (
        "frank@example.com")
    assert refresh(client, second["refresh_token"]).status_code == 200


def test_refresh_refuses_an_access_token(client: TestClient) -> None:
    register(client, "grace@example.com")
    access = tokens(client, "grace@example.com")["access_token"]

    response = refresh(client, access)

    assert_problem(response, 401, "invalid_token")
    assert response.headers["www-authenticate"] == "Bearer"


def test_refresh_refuses_an_expired_or_forged_refresh_token(client: TestClient,
                                                            admin: Principal) -> None:
    expired = issue(admin, TokenType.REFRESH, TEST_JWT_KEY, 60,
                    now=datetime.now(UTC) - timedelta(hours=1))
    forged = jwt.encode(claims(admin, typ="refresh"), "another-key-" + "y" * 40,
                        algorithm="HS256")

    assert_problem(refresh(client, expired), 401, "token_expired")
    assert_problem(refresh(client, forged), 401, "invalid_token")
    assert_problem(refresh(client, unsigned_token(claims(admin, typ="refresh"))), 401,
                   "invalid_token")


def test_a_promotion_applies_on_refresh(client: TestClient) -> None:
    register(client, "heidi@example.com")
    pair = tokens(client, "heidi@example.com")
    set_role(client, "heidi@example.com", Role.ADMIN)

    renewed = refresh(client, pair["refresh_token"]).json()

    assert claims_of(pair["access_token"])["role"] == "user"  # tokens say what they said
    assert claims_of(renewed["access_token"])["role"] == "admin"
    assert claims_of(renewed["refresh_token"])["role"] == "admin"
    assert client.get(ME, headers=bearer(renewed["access_token"])).json()["role"] == "admin"


def test_a_demotion_applies_on_refresh(client: TestClient) -> None:
    pair = tokens(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    set_role(client, ADMIN_EMAIL, Role.USER)

    renewed = refresh(client, pair["refresh_token"]).json()

    assert claims_of(renewed["access_token"])["role"] == "user"
    assert_problem(client.get(ADMIN_ROUTE, headers=bearer(renewed["access_token"])), 403,
                   "admin_required")


# --------------------------------------------------------------------------------------------
# Refresh-token rotation, reuse detection and logout


def logout(client: TestClient, token: str) -> httpx.Response:
    return client.post("/api/v1/auth/logout", json={"refresh_token": token})


def family_row(client: TestClient, token: str) -> RefreshTokenFamily:
    family_id = claims_of(token)["fam"]
    row = database(client).call(lambda session: session.get(RefreshTokenFamily, family_id))
    assert row is not None
    return row


def test_each_refresh_rotates_and_the_used_token_stops_working(client: TestClient) -> None:
    register(client, "rita@example.com")
    first = tokens(client, "rita@example.com")["refresh_token"]

    second = refresh(client, first).json()["refresh_token"]

    assert (claims_of(first)["fam"], claims_of(first)["gen"]) == (
        claims_of(second)["fam"], 0)
    assert claims_of(second)["gen"] == 1
    assert_problem(refresh(client, first), 401, "refresh_token_reused")


def test_reusing_an_old_token_revokes_the_whole_family(client: TestClient) -> None:
    """An old token coming back means two parties hold the chain: every token descended from
    that login stops working, the newest included; other logins are not touched."""
    register(client, "sam@example.com")
    stolen = tokens(client, "sam@example.com")["refresh_token"]
    other_session = tokens(client, "sam@example.com")["refresh_token"]
    newest = refresh(client, refresh(client, stolen).json()["refresh_token"]).json()[
        "refresh_token"]

    assert_problem(refresh(client, stolen), 401, "refresh_token_reused")

    assert_problem(refresh(client, newest), 401, "token_revoked")
    row = family_row(client, newest)
    assert (row.generation, row.revoked_reason) == (2, "reuse")
    assert row.revoked_at is not None
    assert refresh(client, other_session).status_code == 200


def test_concurrent_refreshes_with_one_token_issue_at_most_one_new_token(
        client: TestClient) -> None:
    register(client, "tess@example.com")
    token = tokens(client, "tess@example.com")["refresh_token"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: refresh(client, token), range(8)))

    winners = [a for a in answers if a.status_code == 200]
    assert len(winners) <= 1, [a.text for a in answers]
    for answer in answers:
        if answer.status_code != 200:
            assert answer.status_code == 401, answer.text
            assert answer.json()["code"] in {"refresh_token_reused", "token_revoked"}
    # More than one use of the token is a reuse: the family is revoked, the winner's token too.
    row = family_row(client, token)
    assert row.revoked_reason == "reuse"
    assert row.generation == len(winners)
    for winner in winners:
        assert_problem(refresh(client, winner.json()["refresh_token"]), 401, "token_revoked")


def test_the_double_refresh_race_is_shared_by_workers(make_client: MakeClient) -> None:
    """Two app instances (two workers' engines) on one database: still one new token at most."""
    first, second = make_client(), make_client()
    register(first, "uma@example.com")
    token = tokens(first, "uma@example.com")["refresh_token"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda i: refresh((first, second)[i % 2], token), range(8)))

    assert sum(a.status_code == 200 for a in answers) <= 1
    assert all(a.status_code in (200, 401) for a in answers), [a.text for a in answers]
    assert family_row(first, token).revoked_reason == "reuse"


def test_logout_revokes_the_family_of_the_token(client: TestClient) -> None:
    register(client, "vera@example.com")
    pair = tokens(client, "vera@example.com")
    other_session = tokens(client, "vera@example.com")["refresh_token"]
    newest = refresh(client, pair["refresh_token"]).json()["refresh_token"]

    response = logout(client, newest)

    assert response.status_code == 204, response.text
    assert response.content == b""
    assert_problem(refresh(client, newest), 401, "token_revoked")
    assert_problem(refresh(client, pair["refresh_token"]), 401, "token_revoked")
    assert family_row(client, newest).revoked_reason == "logout"
    assert logout(client, newest).status_code == 204  # again: nothing more to do
    assert refresh(client, other_session).status_code == 200  # another login goes on


def test_logout_needs_a_valid_refresh_token(client: TestClient) -> None:
    register(client, "wade@example.com")
    pair = tokens(client, "wade@example.com")

    assert_problem(logout(client, pair["access_token"]), 401, "invalid_token")
    assert_problem(logout(client, "not.a.jwt"), 401, "invalid_token")
    assert_problem(client.post("/api/v1/auth/logout", json={}), 422, "validation_error")
    assert refresh(client, pair["refresh_token"]).status_code == 200


def test_a_refresh_token_from_before_families_is_refused(client: TestClient) -> None:
    register(client, "xena@example.com")
    user_id = claims_of(tokens(client, "xena@example.com")["access_token"])["sub"]
    legacy = issue(Principal(int(user_id), "xena@example.com", Role.USER), TokenType.REFRESH,
                   TEST_JWT_KEY, 3600)  # no `fam`/`gen`, as issued before migration 0006

    assert_problem(refresh(client, legacy), 401, "invalid_token")


def test_a_login_purges_its_users_expired_families(client: TestClient,
                                                  api_settings: ApiSettings) -> None:
    register(client, "yuri@example.com")
    resources: Resources = client.app.state.resources  # type: ignore[attr-defined]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    resources.clock = lambda: start
    old = tokens(client, "yuri@example.com")["refresh_token"]
    kept = tokens(client, "yuri@example.com")["refresh_token"]
    resources.clock = lambda: start + timedelta(seconds=api_settings.jwt_refresh_ttl_s - 1)
    refresh(client, kept)  # refreshed in time: its family lives on

    resources.clock = lambda: start + timedelta(seconds=api_settings.jwt_refresh_ttl_s + 1)
    tokens(client, "yuri@example.com")

    families = database(client).call(lambda session: list(session.scalars(
        select(RefreshTokenFamily.id).join(User).where(User.email == "yuri@example.com"))))
    assert claims_of(old)["fam"] not in families
    assert claims_of(kept)["fam"] in families
    assert len(families) == 2


# --------------------------------------------------------------------------------------------
# Login rate limits


def failed_login(client: TestClient, email: str, **headers: str) -> httpx.Response:
    return client.post("/api/v1/auth/login", json={"email": email, "password": "wrong-guess"},
                       headers=headers)


def attempts_key(api_settings: ApiSettings, scope: str, subject: str) -> str:
    return BusNames(api_settings.stocking_ns).login_attempts(scope, subject)


def assert_rate_limited(response: httpx.Response, window_s: int) -> int:
    assert_problem(response, 429, "too_many_login_attempts")
    retry_after = int(response.headers["retry-after"])
    assert 0 < retry_after <= window_s
    return retry_after


def test_failed_logins_over_the_account_address_limit_answer_429_with_retry_after(
        make_client: MakeClient, api_settings: ApiSettings, redis_server: RedisServer) -> None:
    client = make_client(login_max_attempts_per_account_address=3)
    register(client, "ivan@example.com")
    register(client, "judy@example.com")

    for _ in range(3):
        assert_problem(failed_login(client, "ivan@example.com"), 401, "invalid_credentials")
    limited = failed_login(client, "IVAN@example.com")

    retry_after = assert_rate_limited(limited, 300)
    ttl = redis_server.client().ttl(attempts_key(api_settings, "account_address",
                                                 "testclient/ivan@example.com"))
    assert retry_after - 1 <= ttl <= retry_after
    # Over the limit even the right password is refused, and nothing is learnt from it.
    assert_rate_limited(login(client, "ivan@example.com"), 300)
    # Other accounts are not affected.
    assert login(client, "judy@example.com").status_code == 200


def test_the_limit_is_shared_by_workers(make_client: MakeClient) -> None:
    first = make_client(login_max_attempts_per_account_address=3)
    second = make_client(login_max_attempts_per_account_address=3)
    register(first, "ken@example.com")

    assert failed_login(first, "ken@example.com").status_code == 401
    assert failed_login(second, "ken@example.com").status_code == 401
    assert failed_login(first, "ken@example.com").status_code == 401

    assert_rate_limited(failed_login(second, "ken@example.com"), 300)
    assert_rate_limited(login(first, "ken@example.com"), 300)


def test_a_successful_login_clears_the_account_address_counter(
        make_client: MakeClient) -> None:
    client = make_client(login_max_attempts_per_account_address=3)
    register(client, "leo@example.com")

    for _ in range(2):
        assert failed_login(client, "leo@example.com").status_code == 401
    assert login(client, "leo@example.com").status_code == 200
    for _ in range(3):  # a full allowance again
        assert failed_login(client, "leo@example.com").status_code == 401

    assert_rate_limited(failed_login(client, "leo@example.com"), 300)


def from_address(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


def test_failures_from_one_address_do_not_lock_the_owner_out_from_another(
        make_client: MakeClient) -> None:
    """The lockout that was: 5 wrong guesses from anywhere locked the account's owner out."""
    client = make_client(trust_forwarded_for=True)
    register(client, "owen@example.com")
    attacker, owner = from_address("203.0.113.66"), from_address("198.51.100.7")

    for _ in range(5):
        assert_problem(failed_login(client, "owen@example.com", **attacker), 401,
                       "invalid_credentials")
    assert_rate_limited(failed_login(client, "owen@example.com", **attacker), 300)

    response = client.post("/api/v1/auth/login", headers=owner,
                           json={"email": "owen@example.com", "password": PASSWORD})
    assert response.status_code == 200, response.text
    assert_problem(failed_login(client, "owen@example.com", **owner), 401,
                   "invalid_credentials")  # the owner's own allowance is untouched


def test_the_account_ceiling_stops_spread_guessing_but_not_a_known_address(
        make_client: MakeClient) -> None:
    client = make_client(trust_forwarded_for=True, login_max_attempts_per_account=3)
    register(client, "paula@example.com")
    home = from_address("198.51.100.7")
    assert client.post("/api/v1/auth/login", headers=home, json={
        "email": "paula@example.com", "password": PASSWORD}).status_code == 200

    for last_octet in (1, 2, 3):  # one guess from each of three addresses
        assert failed_login(client, "paula@example.com",
                            **from_address(f"203.0.113.{last_octet}")).status_code == 401
    assert_rate_limited(failed_login(client, "paula@example.com",
                                     **from_address("203.0.113.4")), 300)
    assert_rate_limited(login(client, "paula@example.com"), 300)  # a new address: refused too

    at_home = client.post("/api/v1/auth/login", headers=home,
                          json={"email": "paula@example.com", "password": PASSWORD})
    assert at_home.status_code == 200, at_home.text


def test_the_address_limit_spans_accounts(make_client: MakeClient,
                                          api_settings: ApiSettings,
                                          redis_server: RedisServer) -> None:
    client = make_client(login_max_attempts_per_account=100, login_max_attempts_per_address=3)
    register(client, "mia@example.com")

    for email in ("a@example.com", "b@example.com", "c@example.com"):
        assert failed_login(client, email).status_code == 401

    retry_after = assert_rate_limited(login(client, "mia@example.com"), 300)
    ttl = redis_server.client().ttl(attempts_key(api_settings, "address", "testclient"))
    assert retry_after - 1 <= ttl <= retry_after


def test_successful_logins_do_not_use_up_the_address_allowance(
        make_client: MakeClient) -> None:
    client = make_client(login_max_attempts_per_account=100, login_max_attempts_per_address=2)
    register(client, "nina@example.com")

    for _ in range(4):
        assert login(client, "nina@example.com").status_code == 200
    for _ in range(2):
        assert failed_login(client, "nina@example.com").status_code == 401

    assert_rate_limited(login(client, "nina@example.com"), 300)


def test_forwarded_for_names_the_address_only_when_trusted(make_client: MakeClient) -> None:
    trusting = make_client(login_max_attempts_per_account=100,
                           login_max_attempts_per_address=2, trust_forwarded_for=True)
    for _ in range(2):
        response = failed_login(trusting, "x@example.com", **{"X-Forwarded-For": "203.0.113.7"})
        assert response.status_code == 401
    assert_rate_limited(
        failed_login(trusting, "x@example.com",
                     **{"X-Forwarded-For": "203.0.113.7, 198.51.100.1"}), 300)
    assert failed_login(trusting, "x@example.com",
                        **{"X-Forwarded-For": "203.0.113.8"}).status_code == 401


def test_forwarded_for_is_ignored_unless_trusted(make_client: MakeClient) -> None:
    client = make_client(login_max_attempts_per_account=100, login_max_attempts_per_address=2)
    for last_octet in (1, 2):
        response = failed_login(client, "y@example.com",
                                **{"X-Forwarded-For": f"203.0.113.{last_octet}"})
        assert response.status_code == 401

    assert_rate_limited(
        failed_login(client, "y@example.com", **{"X-Forwarded-For": "203.0.113.3"}), 300)


def test_registrations_are_limited_per_address_and_shared_by_workers(
        make_client: MakeClient, api_settings: ApiSettings, redis_server: RedisServer) -> None:
    first = make_client(register_max_per_address=3, trust_forwarded_for=True)
    second = make_client(register_max_per_address=3, trust_forwarded_for=True)
    here, elsewhere = from_address("203.0.113.9"), from_address("198.51.100.9")

    def register_from(client: TestClient, email: str, headers: dict[str, str]
                      ) -> httpx.Response:
        return client.post("/api/v1/auth/register", headers=headers,
                           json={"email": email, "password": PASSWORD})

    assert register_from(first, "r1@example.com", here).status_code == 201
    assert_problem(register_from(second, "r1@example.com", here), 409, "email_taken")  # counts
    assert register_from(first, "r2@example.com", here).status_code == 201

    limited = register_from(second, "r3@example.com", here)

    assert_problem(limited, 429, "too_many_registrations")
    retry_after = int(limited.headers["retry-after"])
    assert 0 < retry_after <= 3600
    key = BusNames(api_settings.stocking_ns).registrations("203.0.113.9")
    assert retry_after - 1 <= redis_server.client().ttl(key) <= retry_after
    assert user_row(first, "r3@example.com") is None
    assert register_from(first, "r3@example.com", elsewhere).status_code == 201


@pytest.mark.private_redis
def test_registrations_fail_closed_when_redis_is_down(client: TestClient,
                                                      redis_server: RedisServer) -> None:
    redis_server.stop()

    assert_problem(register(client, "later@example.com"), 503, "redis_unavailable")
    assert user_row(client, "later@example.com") is None


@pytest.mark.private_redis
def test_logins_fail_closed_when_redis_is_down(client: TestClient,
                                               redis_server: RedisServer) -> None:
    register(client, "olga@example.com")
    redis_server.stop()

    response = login(client, "olga@example.com")

    assert_problem(response, 503, "redis_unavailable")


# --------------------------------------------------------------------------------------------
# The admin account ensured at start


def run_hooks(settings: ApiSettings, count: int) -> None:
    """`count` workers starting at once: each with its own engine and Redis pool."""
    async def main() -> None:
        workers = [Resources.open(settings) for _ in range(count)]
        try:
            await asyncio.gather(*(ensure_admin_account(worker) for worker in workers))
        finally:
            for worker in workers:
                await worker.close()
    asyncio.run(main())


def users_with(client: TestClient, email: str) -> list[User]:
    return list(database(client).call(lambda session: session.scalars(
        select(User).where(User.email == email)).all()))


def test_ensure_admin_account_is_idempotent(client: TestClient, api_settings: ApiSettings,
                                            caplog: pytest.LogCaptureFixture) -> None:
    before = users_with(client, ADMIN_EMAIL)
    assert len(before) == 1 and before[0].role == "admin"

    with caplog.at_level(logging.INFO, logger="api.auth.service"):
        run_hooks(api_settings, 1)
        run_hooks(api_settings, 1)

    after = users_with(client, ADMIN_EMAIL)
    assert [(u.id, u.role, u.password_hash) for u in after] == [
        (before[0].id, "admin", before[0].password_hash)]
    assert caplog.messages.count(f"admin account {ADMIN_EMAIL}: already in place") == 2
    assert ADMIN_PASSWORD not in caplog.text


def test_workers_starting_at_once_create_one_admin(client: TestClient,
                                                   api_settings: ApiSettings) -> None:
    settings = api_settings.model_copy(update={
        "stocking_admin_email": "  Root@Example.com",
        "stocking_admin_password": SecretStr("root-password-0001"),
    })

    run_hooks(settings, 4)

    created = users_with(client, "root@example.com")
    assert [u.role for u in created] == ["admin"]
    assert claims_of(tokens(client, "root@example.com",
                            "root-password-0001")["access_token"])["role"] == "admin"


def test_ensure_admin_account_promotes_an_existing_user_and_sets_its_password(
        client: TestClient, api_settings: ApiSettings, caplog: pytest.LogCaptureFixture,
) -> None:
    user_id = register(client, "pat@example.com").json()["id"]
    settings = api_settings.model_copy(update={
        "stocking_admin_email": "PAT@example.com",
        "stocking_admin_password": SecretStr("pat-admin-password-1"),
    })

    with caplog.at_level(logging.INFO, logger="api.auth.service"):
        run_hooks(settings, 1)

    assert caplog.messages[-1] == (
        "admin account pat@example.com: promoted to admin, password reset")
    assert "pat-admin-password-1" not in caplog.text
    assert [(u.id, u.role) for u in users_with(client, "pat@example.com")] == [
        (user_id, "admin")]
    assert_problem(login(client, "pat@example.com"), 401, "invalid_credentials")
    access = tokens(client, "pat@example.com", "pat-admin-password-1")["access_token"]
    assert claims_of(access)["role"] == "admin"


@pytest.mark.parametrize("overrides", [
    {"stocking_admin_email": None},
    {"stocking_admin_password": None},
])
def test_no_admin_account_without_both_settings(api_settings: ApiSettings,
                                                overrides: dict[str, Any],
                                                caplog: pytest.LogCaptureFixture) -> None:
    settings = api_settings.model_copy(update=overrides)

    with caplog.at_level(logging.WARNING, logger="api.auth.service"), \
            TestClient(create_app(settings)) as client:
        assert users_with(client, ADMIN_EMAIL) == []
        assert_problem(login(client, ADMIN_EMAIL, ADMIN_PASSWORD), 401, "invalid_credentials")
    assert any("no admin account is ensured" in m for m in caplog.messages)


def test_a_short_admin_password_refuses_to_start(api_settings: ApiSettings) -> None:
    settings = api_settings.model_copy(update={"stocking_admin_password": SecretStr("tiny-pw")})

    with pytest.raises(ValueError, match="STOCKING_ADMIN_PASSWORD is refused") as refused, \
            TestClient(create_app(settings)):
        pass
    assert "at least 10 characters" in str(refused.value)
    assert "tiny-pw" not in str(refused.value)


# --------------------------------------------------------------------------------------------
# /docs


def test_openapi_documents_the_auth_bodies(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()

    def response_schema(path: str, method: str, status: str) -> str:
        content = spec["paths"][path][method]["responses"][status]["content"]
        ref: str = content["application/json"]["schema"]["$ref"]
        return ref.rsplit("/", 1)[-1]

    assert response_schema("/api/v1/auth/register", "post", "201") == "UserOut"
    assert response_schema("/api/v1/auth/login", "post", "200") == "TokenPair"
    assert response_schema("/api/v1/auth/refresh", "post", "200") == "TokenPair"
    assert response_schema("/api/v1/users/me", "get", "200") == "UserOut"
    assert set(spec["components"]["schemas"]["TokenPair"]["properties"]) == {
        "access_token", "refresh_token", "token_type", "expires_in"}
    assert spec["paths"]["/api/v1/users/me"]["get"]["security"] == [{"HTTPBearer": []}]
    assert "429" in spec["paths"]["/api/v1/auth/login"]["post"]["responses"]


# --------------------------------------------------------------------------------------------
# Free text (api.text): control characters in a client's names and ids are 422


@pytest.mark.parametrize("bad", ["nul\x00", "line\nbreak", "bell\x07", "c1\x9b"])
def test_control_characters_in_free_text_fields_are_422(client: TestClient,
                                                        alice: dict[str, str], bad: str) -> None:
    order = {"code": "A005930", "side": "BUY", "type": "MARKET", "quantity": 1,
             "client_order_id": bad}
    body = assert_problem(client.post("/api/v1/orders", headers=alice, json=order), 422,
                          "validation_error")
    assert body["detail"].startswith("client_order_id: Value error, must not contain control")

    legacy_prepare = {"amount": 1000, "order_name": bad, "currency": "KRW"}
    body = assert_problem(client.post("/api/v1/payments/portone/prepare", headers=alice,
                                      json=legacy_prepare), 422, "validation_error")
    assert body["detail"].startswith("order_name: Value error, must not contain control")

    assert client.get("/api/v1/orders", headers=alice).json()["items"] == []
    assert client.get("/api/v1/payments", headers=alice).json()["items"] == []


def test_free_text_fields_say_so_in_the_openapi_document(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]

    def pattern(schema: str, field: str) -> str:
        spec = schemas[schema]["properties"][field]
        found: str = next(s for s in spec.get("anyOf", [spec]) if s.get("type") == "string")[
            "pattern"]
        return found

    assert pattern("WatchlistCreate", "name") == NO_CONTROL_CHARACTERS_PATTERN
    assert pattern("WatchlistRename", "name") == NO_CONTROL_CHARACTERS_PATTERN
    assert pattern("OrderCreate", "client_order_id") == NO_CONTROL_CHARACTERS_PATTERN
    assert pattern("PrepareRequest", "order_name") == NO_CONTROL_CHARACTERS_PATTERN
