"""The live stream's `orders` channel for a chosen portfolio (issue 15; docs/api/STREAMS.md):
over real sockets, as tests/api/test_streams.py serves the app (Uvicorn in the test's event
loop, a real Redis and database, WebSocket clients, SSE through httpx).

What is held: an order placed with X-Portfolio-Id reaches the subscribers of that portfolio and
no one else's; one connection follows several portfolios at once, each message saying whose it
is, while a client that never names a portfolio gets the messages it got before portfolios; a
chosen portfolio resumes with `since` and is reset on its own; another user's, a deleted and an
unknown portfolio are refused (`portfolio_not_found`, nothing subscribed), a malformed id is
`invalid_message`; SSE chooses the portfolio with the X-Portfolio-Id header and resumes it with
Last-Event-ID. The money invariants hold after each test (tests/support/invariants.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import redis
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection

from api.db import Database
from tests.api.test_streams import (
    FAST,
    Server,
    authed,
    of_type,
    receive_until,
    serving,
    sse_events,
)
from tests.conftest import RedisServer
from tests.support.api import app_settings
from tests.support.env import scaled
from tests.support.invariants import assert_invariants
from tests.support.quotes import make_quote, put

CODE = "A005930"
MARKET_BUY = {"code": CODE, "side": "BUY", "type": "MARKET", "quantity": 1}
BUY_EVENTS = [("order", "created"), ("fill", "executed"), ("order", "filled")]


def served_database(server: Server) -> Database:
    app = server.server.config.app
    assert isinstance(app, FastAPI)
    db: Database = app.state.resources.db
    return db


@pytest.fixture
async def api(redis_server: RedisServer, database_url: str) -> AsyncIterator[Server]:
    async with serving(app_settings(redis_server.url, database_url, **FAST)) as server:
        yield server
        assert_invariants(served_database(server))


@pytest.fixture
def store(redis_server: RedisServer) -> redis.Redis:
    client = redis_server.client()
    put(client, make_quote(CODE))  # market buys fill at once
    return client


# --- helpers ----------------------------------------------------------------------------------

async def call(server: Server, method: str, path: str, token: str,
               portfolio_id: int | str | None = None,
               body: dict[str, Any] | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    if portfolio_id is not None:
        headers["X-Portfolio-Id"] = str(portfolio_id)
    async with httpx.AsyncClient(base_url=server.http) as client:
        return await client.request(method, path, headers=headers, json=body)


async def new_portfolio(server: Server, token: str, name: str) -> int:
    answer = await call(server, "POST", "/api/v1/portfolios", token, body={"name": name})
    assert answer.status_code == 201, answer.text
    portfolio_id: int = answer.json()["id"]
    return portfolio_id


async def default_portfolio(server: Server, token: str) -> int:
    answer = await call(server, "GET", "/api/v1/portfolios", token)
    assert answer.status_code == 200, answer.text
    (default,) = [item for item in answer.json()["items"] if item["is_default"]]
    portfolio_id: int = default["id"]
    return portfolio_id


async def market_buy(server: Server, token: str, portfolio_id: int | None = None) -> int:
    """A market buy of one share in that portfolio (the default one: None); its order id."""
    answer = await call(server, "POST", "/api/v1/orders", token, portfolio_id, MARKET_BUY)
    assert answer.status_code == 201, answer.text
    order_id: int = answer.json()["id"]
    return order_id


async def send(ws: ClientConnection, message: dict[str, Any]) -> None:
    await ws.send(orjson.dumps(message).decode())


async def subscribe(ws: ClientConnection, portfolio_id: int | None = None,
                    since: str | None = None) -> dict[str, Any]:
    """An orders subscription; the server's `subscribed` answer."""
    op: dict[str, Any] = {"op": "subscribe", "channel": "orders"}
    if portfolio_id is not None:
        op["portfolio_id"] = portfolio_id
    if since is not None:
        op["since"] = since
    await send(ws, op)
    return await receive_until(ws, lambda m: m.get("type") in ("subscribed", "error"))


async def events(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    """The next `count` orders events (messages with an offset)."""
    return [await receive_until(ws, lambda m: m.get("channel") == "orders" and "offset" in m)
            for _ in range(count)]


async def nothing_more(ws: ClientConnection) -> None:
    """No orders message is waiting: the next one after a ping is the pong."""
    await send(ws, {"op": "ping"})
    assert await receive_until(ws, lambda m: m.get("channel") == "orders"
                               or m.get("type") == "pong") == {"type": "pong"}


def assert_market_buy(found: list[dict[str, Any]], order_id: int,
                      portfolio_id: int | None) -> None:
    """One market buy's three events, in order, each saying its portfolio (the default one,
    followed without an id: no `portfolio_id` at all, as before portfolios)."""
    assert [(e["type"], e["event"]) for e in found] == BUY_EVENTS
    assert [e["data"].get("order_id", e["data"].get("id")) for e in found] == [order_id] * 3
    assert [e.get("portfolio_id", "absent") for e in found] == [
        "absent" if portfolio_id is None else portfolio_id] * 3
    offsets = [int(e["offset"]) for e in found]
    assert offsets == sorted(set(offsets))


# --- WebSocket ----------------------------------------------------------------------------------

async def test_an_order_in_a_chosen_portfolio_reaches_that_portfolios_subscriber_only(
        api: Server, store: redis.Redis) -> None:
    alice = await api.register("alice@example.com")
    momentum = await new_portfolio(api, alice, "Momentum")
    default_ws, chosen_ws = await authed(api, alice), await authed(api, alice)
    # A client that never names a portfolio: exactly the answer it had before portfolios.
    assert await subscribe(default_ws) == {"type": "subscribed", "channel": "orders"}
    assert await subscribe(chosen_ws, momentum) == {
        "type": "subscribed", "channel": "orders", "portfolio_id": momentum}

    order = await market_buy(api, alice, momentum)
    assert_market_buy(await events(chosen_ws, 3), order, momentum)
    await nothing_more(default_ws)

    order = await market_buy(api, alice)
    found = await events(default_ws, 3)
    assert_market_buy(found, order, None)
    assert list(found[0]) == ["channel", "type", "event", "offset", "data"]  # as before
    await nothing_more(chosen_ws)
    await default_ws.close()
    await chosen_ws.close()


async def test_one_connection_follows_several_portfolios_at_once(
        api: Server, store: redis.Redis) -> None:
    alice = await api.register("alice@example.com")
    momentum = await new_portfolio(api, alice, "Momentum")
    value = await new_portfolio(api, alice, "가치주")
    ws = await authed(api, alice)
    for portfolio_id in (None, momentum, value):
        assert (await subscribe(ws, portfolio_id)).get("portfolio_id") == portfolio_id

    orders = {portfolio_id: await market_buy(api, alice, portfolio_id)
              for portfolio_id in (value, None, momentum)}
    found = await events(ws, 9)
    for portfolio_id, order in orders.items():
        assert_market_buy([e for e in found if e.get("portfolio_id") == portfolio_id], order,
                          portfolio_id)
    await nothing_more(ws)

    # Subscribing again to a portfolio followed is still one subscription: no event twice.
    assert (await subscribe(ws, value))["portfolio_id"] == value
    order = await market_buy(api, alice, value)
    assert_market_buy(await events(ws, 3), order, value)
    await nothing_more(ws)

    # Leaving one portfolio leaves the others followed.
    await send(ws, {"op": "unsubscribe", "channel": "orders", "portfolio_id": momentum})
    assert await receive_until(ws, of_type("unsubscribed")) == {
        "type": "unsubscribed", "channel": "orders", "portfolio_id": momentum}
    await market_buy(api, alice, momentum)
    order = await market_buy(api, alice, value)
    assert_market_buy(await events(ws, 3), order, value)
    await nothing_more(ws)
    # Without an id, unsubscribe leaves the default portfolio, as it did before portfolios.
    await send(ws, {"op": "unsubscribe", "channel": "orders"})
    assert await receive_until(ws, of_type("unsubscribed")) == {
        "type": "unsubscribed", "channel": "orders"}
    await market_buy(api, alice)
    order = await market_buy(api, alice, value)
    assert_market_buy(await events(ws, 3), order, value)
    await nothing_more(ws)
    await ws.close()


async def test_the_default_portfolio_named_by_its_id_is_the_same_subscription(
        api: Server, store: redis.Redis) -> None:
    """Its id names the user's own account: the messages carry the id the client used, and
    one subscription per portfolio holds whichever way it was named."""
    alice = await api.register("alice@example.com")
    default = await default_portfolio(api, alice)
    ws = await authed(api, alice)
    await subscribe(ws)
    assert (await subscribe(ws, default))["portfolio_id"] == default
    order = await market_buy(api, alice)
    assert_market_buy(await events(ws, 3), order, default)
    await nothing_more(ws)
    # Followed without an id, left with it.
    await subscribe(ws)
    await send(ws, {"op": "unsubscribe", "channel": "orders", "portfolio_id": default})
    await receive_until(ws, of_type("unsubscribed"))
    await market_buy(api, alice)
    await nothing_more(ws)
    await ws.close()


async def test_a_chosen_portfolio_resumes_with_since_and_is_reset_on_its_own(
        api: Server, store: redis.Redis) -> None:
    alice = await api.register("alice@example.com")
    momentum = await new_portfolio(api, alice, "Momentum")
    ws = await authed(api, alice)
    await subscribe(ws, momentum)
    first = await market_buy(api, alice, momentum)
    live = await events(ws, 3)
    assert_market_buy(live, first, momentum)
    await ws.close()

    # Away: two orders in the portfolio and one in the default one. Back with `since`: each
    # missed event of the portfolio once, in order, then live ones; none of the default's.
    missed = [await market_buy(api, alice, momentum) for _ in range(2)]
    await market_buy(api, alice)
    ws = await authed(api, alice)
    assert (await subscribe(ws, momentum, since=live[-1]["offset"]))["portfolio_id"] == momentum
    replayed = await events(ws, 6)
    assert_market_buy(replayed[:3], missed[0], momentum)
    assert_market_buy(replayed[3:], missed[1], momentum)
    assert int(replayed[0]["offset"]) > int(live[-1]["offset"])
    after = await market_buy(api, alice, momentum)
    assert_market_buy(await events(ws, 3), after, momentum)
    await nothing_more(ws)

    # An offset beyond every one the portfolio had (the default portfolio's last, committed
    # after it): that portfolio is reset, and it alone; the default one, followed on the same
    # connection, goes on.
    await subscribe(ws)
    default_order = await market_buy(api, alice)
    default_events = await events(ws, 3)
    assert_market_buy(default_events, default_order, None)
    assert await subscribe(ws, momentum, since=default_events[-1]["offset"]) == {
        "type": "subscribed", "channel": "orders", "portfolio_id": momentum}
    assert await receive_until(ws, lambda m: m.get("channel") == "orders") == {
        "channel": "orders", "type": "reset", "portfolio_id": momentum}
    # After the reset: live from now, both portfolios.
    orders = {portfolio_id: await market_buy(api, alice, portfolio_id)
              for portfolio_id in (momentum, None)}
    found = await events(ws, 6)
    for portfolio_id, order in orders.items():
        assert_market_buy([e for e in found if e.get("portfolio_id") == portfolio_id], order,
                          portfolio_id)
    await nothing_more(ws)
    await ws.close()


async def test_another_users_a_deleted_or_an_unknown_portfolio_is_refused(
        api: Server, store: redis.Redis) -> None:
    bob = await api.register("bob@example.com")
    bobs = await new_portfolio(api, bob, "Bob's")
    alice = await api.register("alice@example.com")
    gone = await new_portfolio(api, alice, "Gone")
    answer = await call(api, "DELETE", f"/api/v1/portfolios/{gone}", alice)
    assert answer.status_code == 204, answer.text
    ws = await authed(api, alice)

    for portfolio_id in (bobs, gone, 2**63 - 1):
        refused = await subscribe(ws, portfolio_id)
        assert refused["type"] == "error", refused
        assert (refused["code"], refused["portfolio_id"]) == ("portfolio_not_found",
                                                              portfolio_id)
        # An unsubscribe naming it is refused alike (nothing of it is followed).
        await send(ws, {"op": "unsubscribe", "channel": "orders", "portfolio_id": portfolio_id})
        assert (await receive_until(ws, of_type("error")))["code"] == "portfolio_not_found"
    # Not an id: the protocol's validation error, before any SQL.
    for malformed in ("7", 0, -1, 1.5, True, 2**63, [1], {"id": 1}):
        assert (await subscribe(ws, malformed))["code"] == "invalid_message"  # type: ignore[arg-type]
    await send(ws, {"op": "subscribe", "channel": "quotes", "codes": [CODE],
                    "portfolio_id": bobs})
    assert (await receive_until(ws, of_type("error")))["code"] == "invalid_message"
    # None of it subscribed anything: Bob's trading in his portfolio reaches no one here, and
    # the connection is still open.
    await market_buy(api, bob, bobs)
    await nothing_more(ws)
    # Bob himself follows it.
    bob_ws = await authed(api, bob)
    await subscribe(bob_ws, bobs)
    order = await market_buy(api, bob, bobs)
    assert_market_buy(await events(bob_ws, 3), order, bobs)
    await nothing_more(ws)
    await ws.close()
    await bob_ws.close()


# --- SSE --------------------------------------------------------------------------------------

async def sse_orders(found: AsyncIterator[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """The next `count` orders events (those with an id) of an SSE stream, but cash ones (the
    accounts' opening credits)."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(scaled(5)):
        while len(seen) < count:
            event = await anext(found)
            if "id" in event and event["event"] != "cash":
                seen.append(event)
    return seen


async def test_sse_follows_the_portfolio_of_the_x_portfolio_id_header(
        api: Server, store: redis.Redis) -> None:
    alice = await api.register("alice@example.com")
    momentum = await new_portfolio(api, alice, "Momentum")
    first = await market_buy(api, alice, momentum)
    await market_buy(api, alice)  # the default portfolio's: never on this stream
    headers = {"Authorization": f"Bearer {alice}", "X-Portfolio-Id": str(momentum),
               "Last-Event-ID": "0"}
    async with httpx.AsyncClient(base_url=api.http, timeout=scaled(10)) as client:
        async with client.stream("GET", "/api/v1/stream/sse?orders=1",
                                 headers=headers) as response:
            assert response.status_code == 200
            found = sse_events(response)
            replayed = await sse_orders(found, 3)
            assert [e["event"] for e in replayed] == ["order", "fill", "order"]
            assert_market_buy([e["data"] for e in replayed], first, momentum)
            assert [e["id"] for e in replayed] == [e["data"]["offset"] for e in replayed]
            live = await market_buy(api, alice, momentum)
            assert_market_buy([e["data"] for e in await sse_orders(found, 3)], live, momentum)

        # Last-Event-ID resumes that portfolio: the events after it, and only its own.
        await market_buy(api, alice)
        missed = await market_buy(api, alice, momentum)
        headers["Last-Event-ID"] = replayed[-1]["id"]
        async with client.stream("GET", "/api/v1/stream/sse?orders=1",
                                 headers=headers) as response:
            found = sse_events(response)
            resumed = [e["data"] for e in await sse_orders(found, 6)]
            assert_market_buy(resumed[:3], live, momentum)
            assert_market_buy(resumed[3:], missed, momentum)

        # Refused before the stream starts, as a problem document, as REST refuses them.
        bob = await api.register("bob@example.com")
        bobs = await new_portfolio(api, bob, "Bob's")
        for portfolio_id, status, code in ((bobs, 404, "portfolio_not_found"),
                                           ("abc", 422, "validation_error"),
                                           ("0", 422, "validation_error")):
            answer = await client.get("/api/v1/stream/sse?orders=1", headers={
                "Authorization": f"Bearer {alice}", "X-Portfolio-Id": str(portfolio_id)})
            assert answer.status_code == status, answer.text
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["code"] == code
