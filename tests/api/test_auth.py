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
from api.auth.service import ensure_admin_account
from api.auth.tokens import Principal, TokenType, issue
from api.models import Account, LedgerEntry, Role, User
from api.resources import Resources
from api.settings import ApiSettings
from relayer.bus import BusNames
from tests.api.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, TEST_JWT_KEY
from tests.conftest import RedisServer
from tests.support.api import assert_problem, database

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


def test_passwords_are_stored_as_argon2id_hashes_only(client: TestClient) -> None:
    assert register(client, "hash@example.com").status_code == 201

    user = user_row(client, "hash@example.com")
    assert user is not None
    assert user.password_hash.startswith("$argon2id$")
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
    import api.auth.passwords as passwords

    verified: list[str] = []
    real_verify = passwords.verify_password

    def counting_verify(password_hash: str, password: str) -> bool:
        verified.append(password)
        return real_verify(password_hash, password)

    monkeypatch.setattr(passwords, "verify_password", counting_verify)
    monkeypatch.setattr("api.auth.service.verify_password", counting_verify)
    register(client, "quinn@example.com")

    assert login(client, "quinn@example.com", "wrong-password-1").status_code == 401
    assert login(client, "nobody@example.com", "wrong-password-2").status_code == 401

    assert verified == ["wrong-password-1", "wrong-password-2"]


def test_the_admin_account_ensured_at_start_can_log_in(client: TestClient) -> None:
    body = tokens(client, ADMIN_EMAIL, ADMIN_PASSWORD)

    assert claims_of(body["access_token"])["role"] == "admin"
    me = client.get(ME, headers=bearer(body["access_token"])).json()
    assert (me["email"], me["role"]) == (ADMIN_EMAIL, "admin")


def test_login_stores_a_fresh_hash_when_the_parameters_changed(client: TestClient) -> None:
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


def test_users_me_answers_401_once_the_account_is_gone(client: TestClient) -> None:
    register(client, "gone@example.com")
    pair = tokens(client, "gone@example.com")
    user_id = claims_of(pair["access_token"])["sub"]

    def delete_user(session: Session) -> None:
        # The ledger and the account refer to the user (no cascade: money history is not
        # deleted by accident), so they go first.
        for model in (LedgerEntry, Account):
            session.execute(delete(model).where(model.user_id == int(user_id)))
        session.execute(delete(User).where(User.email == "gone@example.com"))
    database(client).call(delete_user)

    assert_problem(client.get(ME, headers=bearer(pair["access_token"])), 401, "invalid_token")
    assert_problem(client.post("/api/v1/auth/refresh",
                               json={"refresh_token": pair["refresh_token"]}),
                   401, "invalid_token")


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


def test_failed_logins_over_the_account_limit_answer_429_with_retry_after(
        make_client: MakeClient, api_settings: ApiSettings, redis_server: RedisServer) -> None:
    client = make_client(login_max_attempts_per_account=3)
    register(client, "ivan@example.com")
    register(client, "judy@example.com")

    for _ in range(3):
        assert_problem(failed_login(client, "ivan@example.com"), 401, "invalid_credentials")
    limited = failed_login(client, "IVAN@example.com")

    retry_after = assert_rate_limited(limited, 300)
    ttl = redis_server.client().ttl(attempts_key(api_settings, "account", "ivan@example.com"))
    assert retry_after - 1 <= ttl <= retry_after
    # Over the limit even the right password is refused, and nothing is learnt from it.
    assert_rate_limited(login(client, "ivan@example.com"), 300)
    # Other accounts are not affected.
    assert login(client, "judy@example.com").status_code == 200


def test_the_limit_is_shared_by_workers(make_client: MakeClient) -> None:
    first = make_client(login_max_attempts_per_account=3)
    second = make_client(login_max_attempts_per_account=3)
    register(first, "ken@example.com")

    assert failed_login(first, "ken@example.com").status_code == 401
    assert failed_login(second, "ken@example.com").status_code == 401
    assert failed_login(first, "ken@example.com").status_code == 401

    assert_rate_limited(failed_login(second, "ken@example.com"), 300)
    assert_rate_limited(login(first, "ken@example.com"), 300)


def test_a_successful_login_clears_the_account_counter(make_client: MakeClient) -> None:
    client = make_client(login_max_attempts_per_account=3)
    register(client, "leo@example.com")

    for _ in range(2):
        assert failed_login(client, "leo@example.com").status_code == 401
    assert login(client, "leo@example.com").status_code == 200
    for _ in range(3):  # a full allowance again
        assert failed_login(client, "leo@example.com").status_code == 401

    assert_rate_limited(failed_login(client, "leo@example.com"), 300)


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
