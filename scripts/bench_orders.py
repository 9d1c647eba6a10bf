"""Benchmark orders on real Gunicorn workers and MariaDB: market orders/s and latency through
HTTP, and how long a resting limit order takes to fill once a trade prints at its price.

What runs (all on this machine, all torn down at the end):
- a private `redis-server` on a free port, and a fresh MariaDB database `stocking_bench_<random>`
  on the server at --mysql-url, migrated with `api.migrate.upgrade` and dropped at the end;
- Gunicorn with `gunicorn.conf.py` (Uvicorn workers, WEB_CONCURRENCY of them) serving
  `api.main:app`, exactly as start_services.sh runs it, with INITIAL_CASH 10**15 so that no one
  runs out of cash, and LOG_LEVEL WARNING;
- the fills worker (`python -m api.fills`), same environment.

Users (--users) are inserted with SQL before Gunicorn starts, with no usable password; the API
opens their cash accounts at start, as it does for every user without one. Their access tokens
are minted with `api.auth.tokens.issue` and the workers' key. One user's orders serialise on
that user's account row, so the load is spread: every wrk thread rotates over its own half of
the users, one request each, so a user is never asked twice at once.

Quotes are written as the relayer writes them (`relayer.publisher.WRITE_TICKS`: latest-quote
key, channel, stream entry) at 70,000 KRW (reference price 70,000), and re-published every
second during the market-order runs so that they stay fresher than QUOTE_MAX_AGE_S (10 s).

First orders: every user's first market buy, --connections (the first value) at a time. Each
opens the user's position row in the code, so this step is where concurrent inserts of new
positions meet; any answer but 201 is reported (and the order sent again, alone).

Market orders: wrk closed loop, `POST /api/v1/orders {"code", "side", "type": "MARKET",
"quantity": 1}`, for each of --connections: 2 s of warm-up, then --duration s of BUY only, then
--duration s of alternating BUY/SELL (each user's requests alternate, buy first, on one code
per user, so a sell always has a share). Reported: orders/s, wrk's latency percentiles,
non-2xx answers (each status with its first body), transactions retried after a deadlock
(from the API log), and the CPU each process used (from /proc; `other` is CPU used by
processes outside the benchmark; MariaDB's figure is the whole server's). After the runs, SQL
checks that every 2xx answer is an order, every market order is FILLED, and cash, holds,
positions and filled quantities add up.

Limit orders (--limit-orders): LIMIT BUY GTC, 1 share at 69,900, round-robin over the users,
on a code the market runs do not trade, placed over HTTP; a tick that fills nothing makes the
fills worker look at them first (its catch-up of new orders). Then
- one tick at a time: a tick at 69,900 for 1 share fills exactly one order (the oldest), and
  the next tick is written once that fill is seen: tick write -> order FILLED, no queueing;
- one tick for all the rest (69,900, volume 1,000,000): time to the first and to the last fill,
  i.e. the worker's fills/s.
"Seen" is a poll of `orders.status` over SQL (autocommit) with --poll-ms between polls, so
each figure is late by up to one pause plus one query (the report gives the query's mean
time); the tick write time is taken just before the EVAL of the relayer's script.

The floors (after the API runs; --no-floor skips them, --floor-only runs nothing else): what
the database allows on this machine for the same work with no web framework. For each of
--connections, N client threads (in FLOOR_PROCESSES processes, so that one GIL is not the limit),
each with its own PyMySQL connection to the same database and its own users (as in the API runs),
place market buys of 1 share for --floor-warmup s, then --duration s measured: orders/s, latency
per order (the whole transaction), MariaDB's CPU and statements per order. Two variants:
- `same`: the round trips the API makes for a market BUY today, with SQLAlchemy's own SQL text
  (the pool's ping, 14 statements, COMMIT, the pool's reset ROLLBACK);
- `lean`: the lean transaction proposed in issue 16 (lock the account, insert the order as it
  ends, upsert the position, the ledger rows in one insert, update the account, insert the fill,
  the three events in one insert, COMMIT).
Each API BUY run is then printed as a share of both floors. Their orders count in the SQL checks.

--py-spy PATH: after each connection count's runs, one more BUY run with both workers recorded
by py-spy (100 Hz, the thread holding the GIL), and the samples grouped by the innermost library or
module (PROFILE_GROUPS), in shares and in µs of the workers' CPU per order.

Exits 1 if anything failed (a non-2xx answer, a socket error, an exception in a log, a failed
check, a floor error), 2 if the benchmark could not run; a missed target is only reported.

    .venv/bin/python scripts/bench_orders.py [--duration 10] [--connections 20[,50...]]
        [--users 200] [--limit-orders 200] [--workers 2] [--poll-ms 1] [--logs DIR]
        [--api-env NAME=VALUE ...] [--no-floor | --floor-only] [--floor-warmup 2]
        [--py-spy /tmp/pyspy/bin/py-spy]
        [--mysql-url mysql+pymysql://root@127.0.0.1:3306/]
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import queue
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pymysql  # type: ignore[import-untyped]  # (no stubs) the floor's driver, as the API's
import redis

# A sibling script (scripts/ is on sys.path when this runs as a script); it also puts the
# repository root on sys.path for the imports below.
from bench_support import (
    JWT_KEY,
    BenchError,
    CpuMeter,
    WrkResult,
    free_port,
    percentile,
    pids_named,
    process,
    process_group,
    run_wrk,
    wait_until,
)
from sqlalchemy import Engine, create_engine, insert, make_url, select, text
from sqlalchemy.orm import Session

from api.auth.tokens import Principal, TokenType, issue
from api.ledger.service import open_account
from api.migrate import upgrade
from api.models import Position, Role, User
from relayer.bus import STREAM_QUOTE_FIELD, BusNames, Quote, format_utc
from relayer.publisher import WRITE_TICKS

NAMES = BusNames()
MARKET_CODES = ("A005930", "A000660", "A035420")
LIMIT_CODE = "A051910"
PRICE = BASE = 70_000
LIMIT_PRICE = 69_900  # one KRX tick (100 KRW at this level) below the last trade
INITIAL_CASH = 10**15
QUOTE_TTL_S, STREAM_MAXLEN = 3600, 100_000
ORDERS_PATH = "/api/v1/orders"
TARGET_RPS, TARGET_P99_MS = 500, 50.0


# --- ticks, as the relayer writes them ----------------------------------------------------------


class TickWriter:
    """Writes quotes with the relayer's own script (as tests/support/quotes.py does)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._seq = itertools.count(1)
        self._lock = threading.Lock()

    def quote(self, code: str, price: int, volume: int) -> Quote:
        now = datetime.now(UTC)
        with self._lock:
            seq = next(self._seq)
        return Quote(code=code, price=price, base=BASE, change=price - BASE,
                     change_rate=f"{(price - BASE) / BASE * 100:.2f}",
                     change_type="FLAT" if price == BASE else "DOWN", volume=volume,
                     cum_volume=1_234_567, cum_amount=87_900_000_000, trade_type="BUY",
                     trading_strength="100.00", open=BASE, high=BASE, low=LIMIT_PRICE,
                     session="REGULAR", exchange="KRX", currency="KRW", ts=format_utc(now),
                     received_at=format_utc(now, millis=True), seq=seq)

    def publish(self, *quotes: Quote) -> float:
        """Write the ticks; returns time.perf_counter() taken just before the write."""
        keys = [NAMES.tick_stream, *(NAMES.quote(q.code) for q in quotes)]
        args: list[Any] = [str(QUOTE_TTL_S), str(STREAM_MAXLEN), STREAM_QUOTE_FIELD,
                           str(len(NAMES.quote(""))), NAMES.tick_channel(""),
                           *(q.to_json() for q in quotes)]
        started = time.perf_counter()
        self.client.eval(WRITE_TICKS, len(keys), *keys, *args)
        return started


@contextmanager
def fresh_quotes(ticks: TickWriter, codes: tuple[str, ...]) -> Iterator[None]:
    """Re-publish a tick of every code every second, so that market orders find a fresh
    quote (QUOTE_MAX_AGE_S is 10 s)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(1.0):
            ticks.publish(*(ticks.quote(code, PRICE, 10) for code in codes))

    ticks.publish(*(ticks.quote(code, PRICE, 10) for code in codes))
    thread = threading.Thread(target=loop, name="quotes", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# --- market orders ------------------------------------------------------------------------------


def _lua_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def orders_lua(tokens: list[str], codes: tuple[str, ...], *, mixed: bool, threads: int) -> str:
    """A wrk script: request n of thread t goes to user (n * threads + t) mod users, so each
    thread rotates over its own users; with `mixed`, each user's requests alternate BUY, SELL.
    Requests are built once per user and side in init(). Answers that are not 2xx are counted
    by status, and done() prints them with the first body of each status."""
    token_list = ",\n".join(_lua_string(token) for token in tokens)
    code_list = ", ".join(_lua_string(code) for code in codes)
    return f"""
local TOKENS = {{
{token_list}
}}
local CODES = {{{code_list}}}
local MIXED = {"true" if mixed else "false"}
local THREADS = {threads}
local USERS = #TOKENS
local created = {{}}
local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(created, thread)
end

local requests = {{}}
local n = 0
bad = 0
bad_statuses = ""

function init(args)
  for u = 0, USERS - 1 do
    local headers = {{["Authorization"] = "Bearer " .. TOKENS[u + 1],
                     ["Content-Type"] = "application/json"}}
    local code = CODES[(u % #CODES) + 1]
    requests[u] = {{}}
    for _, side in ipairs({{"BUY", "SELL"}}) do
      local body = '{{"code":"' .. code .. '","side":"' .. side ..
                   '","type":"MARKET","quantity":1}}'
      requests[u][side] = wrk.format("POST", "{ORDERS_PATH}", headers, body)
    end
  end
end

function request()
  local slot = n * THREADS + tid
  n = n + 1
  local u = slot % USERS
  local side = "BUY"
  if MIXED and math.floor(slot / USERS) % 2 == 1 then side = "SELL" end
  return requests[u][side]
end

local seen = {{}}
function response(status, headers, body)
  if status >= 300 then
    bad = bad + 1
    if not seen[status] then
      seen[status] = true
      bad_statuses = bad_statuses .. "NON2XX " .. status .. " " ..
                     string.sub(body or "", 1, 300) .. "\\n"
    end
  end
end

function done(summary, latency, requests)
  for _, thread in ipairs(created) do
    io.write("BAD_COUNT " .. thread:get("bad") .. "\\n")
    io.write(thread:get("bad_statuses"))
  end
end
"""


@dataclass
class MarketRun:
    name: str
    connections: int
    result: WrkResult
    cpu: dict[str, float]
    retries: int  # transactions run again after a deadlock or lock wait timeout
    server: dict[str, int]  # change of MariaDB's global status counters over the run
    bad_samples: list[str] = field(default_factory=list)

    @property
    def orders_per_s(self) -> float:
        return self.result.requests_per_s

    @property
    def meets_target(self) -> bool:
        return (self.orders_per_s >= TARGET_RPS and self.result.p99_ms < TARGET_P99_MS
                and self.result.non_2xx == 0 and self.result.socket_errors == 0)


SERVER_COUNTERS = ("Questions", "Connections")


def server_counters(engine: Engine) -> dict[str, int]:
    """MariaDB's global statement and connection counters (the whole server's)."""
    with engine.connect() as sql:
        rows = sql.execute(text("SHOW GLOBAL STATUS WHERE Variable_name IN "
                                f"({', '.join(repr(name) for name in SERVER_COUNTERS)})"))
        return {name: int(value) for name, value in rows}


def market_run(base: str, tokens: list[str], meter: CpuMeter, engine: Engine, api_log: Path,
               *, name: str, mixed: bool, connections: int, duration_s: int) -> MarketRun:
    threads = min(2, connections)  # wrk needs a connection per thread
    lua = orders_lua(tokens, MARKET_CODES, mixed=mixed, threads=threads)
    retries_before = len(log_lines(api_log, RETRY_LINE))
    server_before = server_counters(engine)
    before = meter.sample()
    result = run_wrk(f"{base}{ORDERS_PATH}", duration_s=duration_s, connections=connections,
                     lua=lua, threads=threads)
    after = meter.sample()
    server_after = server_counters(engine)
    samples = [line.removeprefix("NON2XX ") for line in result.output.splitlines()
               if line.startswith("NON2XX ")]
    return MarketRun(name, connections, result, CpuMeter.window(before, after),
                     len(log_lines(api_log, RETRY_LINE)) - retries_before,
                     {key: server_after[key] - server_before[key] for key in SERVER_COUNTERS},
                     samples)


@dataclass
class FirstOrders:
    """Every user's first market buy, sent concurrently: each opens a position row."""

    statuses: Counter[int]
    samples: dict[int, str]
    seconds: float
    retries: int


def first_orders(base: str, tokens: list[str], api_log: Path, concurrency: int) -> FirstOrders:
    """One market BUY per user (of the user's code), `concurrency` at a time; then the ones
    that failed again, one at a time, so that every user holds a position before the runs."""
    def place(http: httpx.Client, user: int) -> tuple[int, str]:
        """(status, body); status 0 when the connection failed (e.g. reset after a 500)."""
        try:
            answer = http.post(ORDERS_PATH, headers={"Authorization": f"Bearer {tokens[user]}"},
                               json={"code": MARKET_CODES[user % len(MARKET_CODES)],
                                     "side": "BUY", "type": "MARKET", "quantity": 1})
        except httpx.TransportError as exc:
            return 0, f"{type(exc).__name__}: {exc}"
        return answer.status_code, answer.text

    retries_before = len(log_lines(api_log, RETRY_LINE))
    started = time.perf_counter()
    with httpx.Client(base_url=base, timeout=30,
                      limits=httpx.Limits(max_connections=concurrency)) as http, \
            ThreadPoolExecutor(concurrency) as pool:
        answers = list(pool.map(lambda user: place(http, user), range(len(tokens))))
        seconds = time.perf_counter() - started
        for user, (status, _) in enumerate(answers):
            if status != 201:
                again = place(http, user)
                if again[0] != 201:
                    raise BenchError(f"first order of user {user}, sent again alone: {again}")
    statuses = Counter(status for status, _ in answers)
    samples = {status: body[:300] for status, body in answers if status != 201}
    return FirstOrders(statuses, samples, seconds,
                       len(log_lines(api_log, RETRY_LINE)) - retries_before)


# --- limit orders -------------------------------------------------------------------------------


@dataclass
class LimitResult:
    one_by_one_ms: list[float]
    burst_orders: int
    burst_first_ms: float
    burst_last_ms: float
    burst_each_ms: list[float]
    polls: int
    poll_cost_ms: float


def place_limit_orders(base: str, tokens: list[str], count: int) -> list[int]:
    """LIMIT BUY GTC orders of 1 share at LIMIT_PRICE, round-robin over the users; their ids
    in placement order (which is time priority)."""
    ids = []
    body = {"code": LIMIT_CODE, "side": "BUY", "type": "LIMIT", "quantity": 1,
            "price": LIMIT_PRICE, "time_in_force": "GTC"}
    with httpx.Client(base_url=base, timeout=30) as http:
        for serial in range(count):
            answer = http.post(ORDERS_PATH, json=body, headers={
                "Authorization": f"Bearer {tokens[serial % len(tokens)]}"})
            if answer.status_code != 201 or answer.json()["status"] != "OPEN":
                raise BenchError(f"limit order {serial}: {answer.status_code} {answer.text}")
            ids.append(int(answer.json()["id"]))
    return ids


def _in_list(ids: list[int]) -> str:
    return ",".join(str(int(i)) for i in ids)


def limit_fills(engine: Engine, ticks: TickWriter, ids: list[int], *, poll_s: float,
                timeout_s: float = 30.0) -> LimitResult:
    with engine.connect() as sql:
        def filled(subset: list[int]) -> set[int]:
            return {row[0] for row in sql.execute(text(
                f"SELECT id FROM orders WHERE status = 'FILLED' AND id IN ({_in_list(subset)})"))}

        # The worker looks at new orders on the next tick (catching up on the ticks since
        # they were placed): do that first, with a tick that fills nothing.
        ticks.publish(ticks.quote(LIMIT_CODE, PRICE, 10))
        wait_until(lambda: sql.execute(text(
            f"SELECT COUNT(*) FROM orders WHERE checked_upto IS NULL AND id IN ({_in_list(ids)})"
        )).scalar() == 0, "the fills worker to see the resting orders")

        polls = 0
        poll_time = 0.0

        def poll_until(predicate: Callable[[], object], what: str) -> float:
            nonlocal polls, poll_time
            deadline = time.perf_counter() + timeout_s
            while True:
                started = time.perf_counter()
                done = predicate()
                polls += 1
                poll_time += time.perf_counter() - started
                if done:
                    return time.perf_counter()
                if started > deadline:
                    raise BenchError(f"{what} not seen within {timeout_s:.0f}s")
                time.sleep(poll_s)

        # One tick at a time: volume 1 fills exactly the oldest order (same price: time
        # priority); the next tick goes out once that fill is seen.
        half = len(ids) // 2
        one_by_one = []
        for index, order_id in enumerate(ids[:half]):
            written = ticks.publish(ticks.quote(LIMIT_CODE, LIMIT_PRICE, 1))
            seen = poll_until(partial(filled, [order_id]), f"fill of order {order_id}")
            one_by_one.append((seen - written) * 1000)
            if len(filled(ids)) != index + 1:
                raise BenchError(f"a 1-share tick filled more than order {order_id}")

        # One tick for all the rest.
        rest = ids[half:]
        first_seen: dict[int, float] = {}

        def all_filled() -> bool:
            now = time.perf_counter()
            for order_id in filled(rest):
                first_seen.setdefault(order_id, now)
            return len(first_seen) == len(rest)

        written = ticks.publish(ticks.quote(LIMIT_CODE, LIMIT_PRICE, 1_000_000))
        poll_until(all_filled, f"fills of {len(rest)} orders from one tick")
        each = sorted((at - written) * 1000 for at in first_seen.values())
    return LimitResult(one_by_one, len(rest), each[0], each[-1], each, polls,
                       poll_time / max(polls, 1) * 1000)


# --- checks -------------------------------------------------------------------------------------

CHECKS = {
    "market orders not FILLED":
        "SELECT COUNT(*) FROM orders WHERE type = 'MARKET' AND status <> 'FILLED'",
    "limit orders not FILLED":
        f"SELECT COUNT(*) FROM orders WHERE type = 'LIMIT' AND code = '{LIMIT_CODE}' "
        "AND status <> 'FILLED'",
    "accounts whose cash is not the sum of their ledger":
        "SELECT COUNT(*) FROM accounts a LEFT JOIN (SELECT user_id, SUM(amount) s "
        "FROM ledger_entries GROUP BY user_id) l ON l.user_id = a.user_id "
        "WHERE a.cash <> COALESCE(l.s, 0)",
    "accounts whose held cash is not what their live buys hold":
        "SELECT COUNT(*) FROM accounts a LEFT JOIN (SELECT user_id, SUM(held_cash) h "
        "FROM orders WHERE status IN ('OPEN', 'PARTIALLY_FILLED') AND side = 'BUY' "
        "GROUP BY user_id) o ON o.user_id = a.user_id WHERE a.held_cash <> COALESCE(o.h, 0)",
    "positions that are not the sum of their fills":
        "SELECT COUNT(*) FROM positions p LEFT JOIN (SELECT user_id, code, "
        "SUM(CASE WHEN side = 'BUY' THEN quantity ELSE -quantity END) q FROM fills "
        "GROUP BY user_id, code) f ON f.user_id = p.user_id AND f.code = p.code "
        "WHERE p.quantity <> COALESCE(f.q, 0)",
    "orders whose filled quantity is not the sum of their fills":
        "SELECT COUNT(*) FROM orders o LEFT JOIN (SELECT order_id, SUM(quantity) q "
        "FROM fills GROUP BY order_id) f ON f.order_id = o.id "
        "WHERE o.filled_quantity <> COALESCE(f.q, 0)",
}


def check_database(engine: Engine, answered_2xx: int, in_flight_max: int) -> list[str]:
    """What is wrong in the database after the runs (empty: nothing)."""
    problems = []
    with engine.connect() as sql:
        for what, query in CHECKS.items():
            found = sql.execute(text(query)).scalar()
            if found:
                problems.append(f"{found} {what}")
        market = int(sql.execute(text(
            "SELECT COUNT(*) FROM orders WHERE type = 'MARKET'")).scalar() or 0)
    # wrk counts the answers it read; requests in flight when it stops may still commit.
    if not answered_2xx <= market <= answered_2xx + in_flight_max:
        problems.append(f"{market} market orders in SQL for {answered_2xx} 2xx answers "
                        f"(+ at most {in_flight_max} in flight)")
    return problems


def count(engine: Engine, query: str) -> int:
    with engine.connect() as sql:
        return int(sql.execute(text(query)).scalar() or 0)


RETRY_LINE = r"WARNING .*retrying in"
ERROR_LINE = r"^\w[\w.]*(Error|Exception): "


def log_lines(log: Path, pattern: str) -> list[str]:
    return [line for line in log.read_text(errors="replace").splitlines()
            if re.search(pattern, line)]


# --- the floor: the order's statements from a lean client ---------------------------------------

# A market BUY of 1 share at PRICE, written as the API writes it: the hold it places before the
# fill (the value at the day's upper limit, 91,000, plus its commission) and the commission.
FLOOR_HOLD = 91_013
FLOOR_COMMISSION = 10  # 0.015% of 70,000, rounded down
FLOOR_TICK = "floor-tick"
FLOOR_PROCESSES = 2  # client processes (one per core), so that one GIL is not the limit
FLOOR_VARIANTS = {
    "same": "the API's statements (ping, 14 statements, COMMIT, the pool's ROLLBACK)",
    "lean": "the lean transaction of issue 16 (7 statements and COMMIT)",
}

# The statements of one market BUY as the API issues them today on MariaDB (captured with a
# SQLAlchemy `before_cursor_execute` listener and PyMySQL's `_execute_command`; listed in
# docs/BENCHMARKS.md), with SQLAlchemy's own text and parameter names: PyMySQL interpolates
# them on the client, as it does for the API.
SELECT_ACCOUNT = (
    "SELECT accounts.user_id, accounts.cash, accounts.held_cash, accounts.clawback_due, "
    "accounts.fees_paid, accounts.taxes_paid, accounts.created_at, accounts.updated_at \n"
    "FROM accounts \nWHERE accounts.user_id = %(user_id_1)s FOR UPDATE")
SELECT_POSITION = (
    "SELECT positions.user_id, positions.code, positions.quantity, positions.held_quantity, "
    "positions.cost_basis, positions.purchase_value, positions.realized_pnl, "
    "positions.updated_at \nFROM positions \nWHERE positions.user_id = %(user_id_1)s AND "
    "positions.code = %(code_1)s FOR UPDATE")
ORDER_COLUMNS = ("user_id", "client_order_id", "code", "market", "security_kind", "side", "type",
                 "time_in_force", "quantity", "price", "status", "reason", "filled_quantity",
                 "filled_value", "held_cash", "rests_after", "checked_upto", "expires_at",
                 "activates_at", "session", "created_at", "updated_at")
FILL_COLUMNS = ("order_id", "user_id", "code", "side", "quantity", "price", "value",
                "commission", "tax", "securities_transaction_tax", "rural_special_tax",
                "tick_id", "tick_seq", "tick_ts", "rule", "cost_basis_sold", "realized_pnl",
                "created_at")
LEDGER_COLUMNS = ("user_id", "type", "amount", "balance_before", "balance_after", "reference",
                  "created_at")
EVENT_COLUMNS = ("user_id", "type", "event", "data", "created_at")


def _insert(table: str, columns: tuple[str, ...], rows: int = 1, suffix: str = "") -> str:
    """INSERT of `rows` rows, parameters named as SQLAlchemy names them (`col`, or `col__n`
    in a multi-row insert)."""
    def values(row: int | None) -> str:
        tail = "" if row is None else f"__{row}"
        return "(" + ", ".join(f"%({column}{tail})s" for column in columns) + ")"
    rendered = (values(None) if rows == 1 else ", ".join(values(row) for row in range(rows)))
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {rendered}{suffix}"


def _numbered(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {f"{name}__{index}": value for index, row in enumerate(rows)
            for name, value in row.items()}


INSERT_ORDER = _insert("orders", ORDER_COLUMNS)
INSERT_FILL = _insert("fills", FILL_COLUMNS)
INSERT_EVENT = _insert("user_events", EVENT_COLUMNS)
INSERT_TWO_LEDGER_ROWS = _insert(
    "ledger_entries", LEDGER_COLUMNS, 2,
    " RETURNING ledger_entries.id, ledger_entries.id AS id__1")
UPDATE_ACCOUNT_HOLD = ("UPDATE accounts SET held_cash=%(held_cash)s, updated_at=%(updated_at)s "
                       "WHERE accounts.user_id = %(accounts_user_id)s")
UPDATE_ORDER_HOLD = ("UPDATE orders SET held_cash=%(held_cash)s, updated_at=%(updated_at)s "
                     "WHERE orders.id = %(orders_id)s")
UPDATE_ACCOUNT_FILL = ("UPDATE accounts SET cash=%(cash)s, held_cash=%(held_cash)s, "
                       "fees_paid=%(fees_paid)s, updated_at=%(updated_at)s "
                       "WHERE accounts.user_id = %(accounts_user_id)s")
UPDATE_ORDER_FILLED = ("UPDATE orders SET status=%(status)s, filled_quantity=%(filled_quantity)s, "
                       "filled_value=%(filled_value)s, held_cash=%(held_cash)s, "
                       "updated_at=%(updated_at)s WHERE orders.id = %(orders_id)s")
UPDATE_POSITION = ("UPDATE positions SET quantity=%(quantity)s, cost_basis=%(cost_basis)s, "
                   "purchase_value=%(purchase_value)s, updated_at=%(updated_at)s "
                   "WHERE positions.user_id = %(positions_user_id)s AND "
                   "positions.code = %(positions_code)s")
SELECT_FILLS = ("SELECT " + ", ".join(f"fills.{c}" for c in ("id", *FILL_COLUMNS))
                + " \nFROM fills \nWHERE fills.order_id = %(order_id_1)s ORDER BY fills.id")

# The lean transaction (issue 16): lock the account; insert the order as it ends; upsert the
# position; the ledger rows in one insert; update the account; insert the fill; the events in
# one insert; COMMIT. No ping, no reset ROLLBACK, nothing read back.
LEAN_SELECT_ACCOUNT = "SELECT cash, fees_paid FROM accounts WHERE user_id = %s FOR UPDATE"
LEAN_UPSERT_POSITION = (
    "INSERT INTO positions (user_id, code, quantity, held_quantity, cost_basis, purchase_value, "
    "realized_pnl, updated_at) VALUES (%s, %s, 1, 0, %s, %s, 0, %s) ON DUPLICATE KEY UPDATE "
    "quantity = quantity + 1, cost_basis = cost_basis + VALUES(cost_basis), "
    "purchase_value = purchase_value + VALUES(purchase_value), updated_at = VALUES(updated_at)")
LEAN_INSERT_LEDGER = _insert("ledger_entries", LEDGER_COLUMNS, 2)
LEAN_UPDATE_ACCOUNT = ("UPDATE accounts SET cash = %s, fees_paid = %s, updated_at = %s "
                       "WHERE user_id = %s")
LEAN_INSERT_EVENTS = _insert("user_events", EVENT_COLUMNS, 3)


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _order_json(order_id: int, code: str, at: datetime, *, filled: bool,
                fill: dict[str, Any] | None) -> str:
    """The order as the API's events carry it (`OrderDetailOut`), same keys and sizes."""
    return json.dumps({
        "id": order_id, "client_order_id": None, "code": code, "side": "BUY", "type": "MARKET",
        "time_in_force": "DAY", "quantity": 1, "price": None,
        "status": "FILLED" if filled else "OPEN", "reason": None, "session": "CONTINUOUS",
        "filled_quantity": 1 if filled else 0, "remaining_quantity": 0 if filled else 1,
        "avg_fill_price": f"{PRICE}.00" if filled else None,
        "held_cash": 0 if filled else FLOOR_HOLD, "expires_at": None, "activates_at": None,
        "created_at": _stamp(at), "updated_at": _stamp(at),
        "fills": [fill] if fill is not None else []}, separators=(",", ":"))


def _fill_json(fill_id: int, at: datetime) -> dict[str, Any]:
    return {"id": fill_id, "quantity": 1, "price": PRICE, "value": PRICE,
            "commission": FLOOR_COMMISSION, "tax": 0, "securities_transaction_tax": 0,
            "rural_special_tax": 0, "tick_id": FLOOR_TICK, "tick_seq": 1,
            "tick_ts": _stamp(at), "rule": "market_order_last_trade",
            "created_at": _stamp(at)}


def _order_row(user_id: int, code: str, at: datetime, *, filled: bool) -> dict[str, Any]:
    return {"user_id": user_id, "client_order_id": None, "code": code, "market": "KOSPI",
            "security_kind": "STOCK", "side": "BUY", "type": "MARKET", "time_in_force": "DAY",
            "quantity": 1, "price": None, "status": "FILLED" if filled else "OPEN",
            "reason": None, "filled_quantity": 1 if filled else 0,
            "filled_value": PRICE if filled else 0, "held_cash": 0, "rests_after": None,
            "checked_upto": None, "expires_at": None, "activates_at": None,
            "session": "CONTINUOUS", "created_at": at, "updated_at": at}


def _fill_row(order_id: int, user_id: int, code: str, at: datetime) -> dict[str, Any]:
    return {"order_id": order_id, "user_id": user_id, "code": code, "side": "BUY",
            "quantity": 1, "price": PRICE, "value": PRICE, "commission": FLOOR_COMMISSION,
            "tax": 0, "securities_transaction_tax": 0, "rural_special_tax": 0,
            "tick_id": FLOOR_TICK, "tick_seq": 1, "tick_ts": _stamp(at),
            "rule": "market_order_last_trade", "cost_basis_sold": None, "realized_pnl": None,
            "created_at": at}


def _ledger_rows(user_id: int, order_id: int, cash: int, at: datetime) -> list[dict[str, Any]]:
    reference = f"{order_id}@{FLOOR_TICK}"
    bought = cash - PRICE
    return [{"user_id": user_id, "type": "BUY", "amount": -PRICE, "balance_before": cash,
             "balance_after": bought, "reference": reference, "created_at": at},
            {"user_id": user_id, "type": "FEE", "amount": -FLOOR_COMMISSION,
             "balance_before": bought, "balance_after": bought - FLOOR_COMMISSION,
             "reference": reference, "created_at": at}]


def _event(user_id: int, type_: str, event: str, data: str, at: datetime) -> dict[str, Any]:
    return {"user_id": user_id, "type": type_, "event": event, "data": data, "created_at": at}


def same_buy(connection: Any, user_id: int, code: str) -> None:
    """One market BUY with exactly the round trips the API makes for it (the user's position
    exists: every user's first order opened it)."""
    connection.ping(reconnect=False)  # the pool's pre-ping at checkout
    with connection.cursor() as cursor:
        cursor.execute(SELECT_ACCOUNT, {"user_id_1": user_id})
        _, cash, held, _, fees, *_ = cursor.fetchone()
        cursor.execute(SELECT_POSITION, {"user_id_1": user_id, "code_1": code})
        _, _, quantity, _, cost_basis, purchase_value, *_ = cursor.fetchone()
        at = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        cursor.execute(INSERT_ORDER, _order_row(user_id, code, at, filled=False))
        order_id = cursor.lastrowid
        cursor.execute(UPDATE_ACCOUNT_HOLD, {"held_cash": held + FLOOR_HOLD, "updated_at": at,
                                             "accounts_user_id": user_id})
        cursor.execute(UPDATE_ORDER_HOLD, {"held_cash": FLOOR_HOLD, "updated_at": at,
                                           "orders_id": order_id})
        cursor.execute(UPDATE_ACCOUNT_FILL, {
            "cash": cash - PRICE - FLOOR_COMMISSION, "held_cash": held,
            "fees_paid": fees + FLOOR_COMMISSION, "updated_at": at, "accounts_user_id": user_id})
        cursor.execute(INSERT_FILL, _fill_row(order_id, user_id, code, at))
        fill_id = cursor.lastrowid
        cursor.execute(INSERT_TWO_LEDGER_ROWS,
                       _numbered(_ledger_rows(user_id, order_id, cash, at)))
        cursor.fetchall()
        cursor.execute(UPDATE_ORDER_FILLED, {
            "status": "FILLED", "filled_quantity": 1, "filled_value": PRICE, "held_cash": 0,
            "updated_at": at, "orders_id": order_id})
        cursor.execute(UPDATE_POSITION, {
            "quantity": quantity + 1, "cost_basis": cost_basis + PRICE + FLOOR_COMMISSION,
            "purchase_value": purchase_value + PRICE, "updated_at": at,
            "positions_user_id": user_id, "positions_code": code})
        fill = _fill_json(fill_id, at)
        cursor.execute(INSERT_EVENT, _event(
            user_id, "order", "created", _order_json(order_id, code, at, filled=False,
                                                     fill=None), at))
        cursor.execute(INSERT_EVENT, _event(
            user_id, "fill", "executed",
            json.dumps({**fill, "order_id": order_id}, separators=(",", ":")), at))
        cursor.execute(SELECT_FILLS, {"order_id_1": order_id})
        cursor.fetchall()
        cursor.execute(INSERT_EVENT, _event(
            user_id, "order", "filled", _order_json(order_id, code, at, filled=True, fill=fill),
            at))
    connection.commit()
    connection.rollback()  # the pool's reset when the connection is returned


def lean_buy(connection: Any, user_id: int, code: str) -> None:
    """One market BUY as the lean transaction of issue 16 writes it."""
    with connection.cursor() as cursor:
        cursor.execute(LEAN_SELECT_ACCOUNT, (user_id,))
        cash, fees = cursor.fetchone()
        at = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        cursor.execute(INSERT_ORDER, _order_row(user_id, code, at, filled=True))
        order_id = cursor.lastrowid
        cursor.execute(LEAN_UPSERT_POSITION, (user_id, code, PRICE + FLOOR_COMMISSION, PRICE, at))
        cursor.execute(LEAN_INSERT_LEDGER, _numbered(_ledger_rows(user_id, order_id, cash, at)))
        cursor.execute(LEAN_UPDATE_ACCOUNT, (cash - PRICE - FLOOR_COMMISSION,
                                             fees + FLOOR_COMMISSION, at, user_id))
        cursor.execute(INSERT_FILL, _fill_row(order_id, user_id, code, at))
        fill = _fill_json(cursor.lastrowid, at)
        cursor.execute(LEAN_INSERT_EVENTS, _numbered([
            _event(user_id, "order", "created",
                   _order_json(order_id, code, at, filled=False, fill=None), at),
            _event(user_id, "fill", "executed",
                   json.dumps({**fill, "order_id": order_id}, separators=(",", ":")), at),
            _event(user_id, "order", "filled",
                   _order_json(order_id, code, at, filled=True, fill=fill), at)]))
    connection.commit()


FLOOR_ORDERS: dict[str, Callable[[Any, int, str], None]] = {"same": same_buy, "lean": lean_buy}


def floor_connection(database_url: str) -> Any:
    """A PyMySQL connection set up as the API's engine sets up its own (api.db.make_engine):
    READ COMMITTED, a 5 s lock wait, no autocommit."""
    url = make_url(database_url)
    connection = pymysql.connect(
        host=url.host or "127.0.0.1", port=url.port or 3306, user=url.username or "root",
        password=url.password or "", database=url.database, charset="utf8mb4",
        autocommit=False, init_command="SET SESSION innodb_lock_wait_timeout = 5")
    with connection.cursor() as cursor:
        cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
    return connection


@dataclass
class FloorClientResult:
    committed: int  # every order committed, window or not
    latencies_ms: list[float]  # the orders that started and ended inside the window
    errors: list[str]


def floor_client(database_url: str, variant: str, users: list[tuple[int, str]],
                 window: tuple[float, float]) -> FloorClientResult:
    """One connection placing market buys for its own users in turn, until the window ends
    (monotonic clock); an order's latency is its whole transaction, round trips included."""
    place = FLOOR_ORDERS[variant]
    connection = floor_connection(database_url)
    result = FloorClientResult(0, [], [])
    start, end = window
    try:
        for user_id, code in itertools.cycle(users):
            began = time.monotonic()
            if began >= end:
                break
            try:
                place(connection, user_id, code)
            except pymysql.MySQLError as exc:
                result.errors.append(f"{type(exc).__name__}: {exc}")
                try:
                    connection.rollback()
                except pymysql.MySQLError:
                    break  # the connection is gone: this client stops, its error reported
                continue
            done = time.monotonic()
            result.committed += 1
            if began >= start and done <= end:
                result.latencies_ms.append((done - began) * 1000)
    finally:
        connection.close()
    return result


def floor_process(database_url: str, variant: str, clients: list[list[tuple[int, str]]],
                  warmup_s: float, duration_s: float, ready: Any, results: Any) -> None:
    """A client process: one thread per client, started together once every process is
    ready (the barrier); puts its clients' results together on `results`."""
    ready.wait()
    start = time.monotonic() + warmup_s
    window = (start, start + duration_s)
    with ThreadPoolExecutor(len(clients)) as pool:
        done = list(pool.map(lambda users: floor_client(database_url, variant, users, window),
                             clients))
    results.put(FloorClientResult(sum(r.committed for r in done),
                                  [ms for r in done for ms in r.latencies_ms],
                                  [e for r in done for e in r.errors]))


@dataclass
class FloorRun:
    variant: str
    connections: int
    processes: int
    duration_s: float
    latencies_ms: list[float]
    committed: int
    errors: list[str]
    cpu: dict[str, float]
    server: dict[str, int]

    @property
    def orders_per_s(self) -> float:
        return len(self.latencies_ms) / self.duration_s

    def per_order_us(self, part: str) -> float:
        return self.cpu[part] / 100 / max(self.orders_per_s, 1) * 1e6


def floor_run(database_url: str, engine: Engine, users: list[tuple[int, str]], *, variant: str,
              connections: int, warmup_s: float, duration_s: float,
              server_pids: Callable[[], list[int]]) -> FloorRun:
    """`connections` clients, each on its own PyMySQL connection with its own users (user i
    goes to client i mod connections, so no user is asked twice at once, as in the API runs),
    in FLOOR_PROCESSES processes; `warmup_s` then `duration_s` measured."""
    processes = min(FLOOR_PROCESSES, connections)
    own = [users[client::connections] for client in range(connections)]
    # Forked, not spawned: a spawned child imports this script again (the API's modules with
    # it), seconds per process on this machine. Nothing the children inherit is used by them:
    # each opens its own connection, and multiprocessing ends them with os._exit, so the
    # parent's pooled connections are never closed from a child.
    context = multiprocessing.get_context("fork")
    ready = context.Barrier(processes + 1)
    results = context.Queue()
    children = [context.Process(
        target=floor_process, name=f"floor-{index}",
        args=(database_url, variant, own[index::processes], warmup_s, duration_s, ready,
              results)) for index in range(processes)]
    for child in children:
        child.start()
    meter = CpuMeter({"mariadb": server_pids,
                      "clients": lambda: [c.pid for c in children if c.pid is not None]})
    try:
        ready.wait(timeout=60)
        start = time.monotonic() + warmup_s
        time.sleep(max(0.0, start - time.monotonic()))
        before, counters_before = meter.sample(), server_counters(engine)
        time.sleep(max(0.0, start + duration_s - time.monotonic()))
        after, counters_after = meter.sample(), server_counters(engine)
        try:
            done = [results.get(timeout=60) for _ in children]
        except queue.Empty:
            raise BenchError(f"a floor client process ended without its results ({variant}, "
                             f"{connections} connections)") from None
    finally:
        for child in children:
            child.join(timeout=10)
            if child.is_alive():
                child.kill()
    return FloorRun(variant, connections, processes, duration_s,
                    [ms for r in done for ms in r.latencies_ms], sum(r.committed for r in done),
                    [e for r in done for e in r.errors], CpuMeter.window(before, after),
                    {key: counters_after[key] - counters_before[key] for key in SERVER_COUNTERS})


def server_pids_of(engine: Engine) -> Callable[[], list[int]]:
    """The pid of the MariaDB server at the engine's URL, from its pid file (test suites may
    run private `mariadbd`s beside it); any process named mariadbd or mysqld if unreadable
    (a server on another host: then its CPU is not measured)."""
    with engine.connect() as sql:
        pid_file = sql.execute(text("SELECT @@pid_file")).scalar()
    try:
        pid = int(Path(str(pid_file)).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return lambda: pids_named("mariadbd") or pids_named("mysqld")
    return lambda: [pid]


# --- where the API's CPU goes (py-spy) ----------------------------------------------------------

# A sample belongs to the group of its innermost frame that matches one (the first pattern that
# matches that frame); samples with no matching frame are "other".
PROFILE_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("PyMySQL (the driver and its socket I/O)", ("/pymysql/",)),
    ("SQLAlchemy (ORM unit of work, Core, pool)", ("/sqlalchemy/",)),
    ("pydantic (validation, serialisation)", ("/pydantic/", "/pydantic_core/")),
    ("metrics (middleware, Prometheus files)", ("/prometheus_client/", "/api/system/metrics.py")),
    ("events (api/streams/events.py itself)", ("/api/streams/",)),
    ("Redis client (the market snapshot)", ("/redis/",)),
    ("auth (JWT, token cache)", ("/jwt/", "/api/auth/")),
    ("HTTP: Uvicorn, Starlette, FastAPI", ("/uvicorn/", "/uvicorn_worker/", "/starlette/",
                                           "/fastapi/", "/httptools/", "/h11/", "/gunicorn/")),
    ("thread hop and event loop (anyio, asyncio, threads)",
     ("/anyio/", "/asyncio/", "/concurrent/futures/", "/threading.py", "/queue.py",
      "/uvloop/", "/api/db.py")),
    ("our rules and services (api/)", ("/api/", "/relayer/")),
)
OTHER_GROUP = "other (standard library, interpreter)"
PROFILE_PASS_THROUGH = "/asyncio/streams.py"
PROFILE_HZ = 100
# Inclusive shares: samples with such a frame anywhere in the stack (function, file pattern).
PROFILE_SPANS: tuple[tuple[str, str, str], ...] = (
    ("the SQL unit of work (api.orders.service._place, in a thread)", "_place",
     "/api/orders/service.py"),
    ("  of which the ORM's flushes (Session.flush)", "flush", "/sqlalchemy/orm/session.py"),
    ("  of which recording the events (api.streams.events.record_*)", "", "/api/streams/events.py"),
    ("  of which the COMMIT", "commit", "/pymysql/connections.py"),
    ("the market snapshot (api.orders.snapshot.market_snapshot)", "market_snapshot",
     "/api/orders/snapshot.py"),
    ("the pool's checkout ping and reset ROLLBACK", "", "/sqlalchemy/pool/"),
)
_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


@dataclass
class Profile:
    samples: int
    groups: Counter[str]
    spans: Counter[str]


def read_profile(paths: list[Path]) -> Profile:
    """py-spy's raw (collapsed) stacks, `frame;frame;... count`, root first."""
    groups: Counter[str] = Counter()
    spans: Counter[str] = Counter()
    samples = 0
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, weight = line.rpartition(" ")
            if not stack or not weight.isdigit():
                continue
            frames = []
            for text_ in stack.split(";"):
                match = _FRAME.match(text_)
                if match:
                    frames.append((match["name"], "/" + match["file"].lstrip("/")))
            n = int(weight)
            samples += n
            groups[_group_of(frames)] += n
            for label, name, pattern in PROFILE_SPANS:
                if any(pattern in file and (not name or func.rpartition(".")[2] == name)
                       for func, file in frames):  # py-spy names methods Class.method
                    spans[label] += n
    return Profile(samples, groups, spans)


def _group_of(frames: list[tuple[str, str]]) -> str:
    for _, file in reversed(frames):
        if PROFILE_PASS_THROUGH in file:
            continue  # asyncio's streams write for their caller (the Redis client)
        for group, patterns in PROFILE_GROUPS:
            if any(pattern in file for pattern in patterns):
                return group
    return OTHER_GROUP


@contextmanager
def profiled(py_spy: str, pids: list[int], seconds: int, folder: Path,
             label: str) -> Iterator[list[Path]]:
    """py-spy records each pid for `seconds` while the body runs: 100 samples/s, without
    pausing the process, of the thread holding the GIL only (without `--gil`, threads blocked
    in a socket read or waiting for the GIL count as busy: most samples were PyMySQL "reading"
    while another thread ran). Yields the files it writes, complete once the body returned."""
    outputs = [folder / f"py-spy-{label}-{pid}.txt" for pid in pids]
    recorders = [subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--rate", str(PROFILE_HZ), "--duration",
         str(seconds),
         "--gil", "--format", "raw", "--full-filenames", "--nonblocking", "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for pid, out in zip(pids, outputs, strict=True)]
    try:
        yield outputs
    finally:
        for recorder in recorders:
            try:
                recorder.wait(timeout=seconds + 30)
            except subprocess.TimeoutExpired:
                recorder.kill()
                recorder.wait()


# --- setup --------------------------------------------------------------------------------------


@contextmanager
def bench_database(server_url: str) -> Iterator[str]:
    """A new database `stocking_bench_<random>` on the server, migrated; dropped afterwards."""
    server = make_url(server_url)
    name = f"stocking_bench_{secrets.token_hex(6)}"
    admin = create_engine(server.set(database=server.database or None))
    try:
        with admin.begin() as connection:
            connection.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        try:
            url = server.set(database=name).render_as_string(hide_password=False)
            upgrade(url, configure_logging=False)
            yield url
        finally:
            with admin.begin() as connection:
                connection.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
    finally:
        admin.dispose()


def add_users(engine: Engine, how_many: int) -> list[tuple[int, str]]:
    """Users with no usable password (`!` is no argon2 hash); (id, email) by id."""
    emails = [f"bench-{serial:05d}@stocking.local" for serial in range(how_many)]
    with engine.begin() as sql:
        sql.execute(insert(User), [{"email": email, "password_hash": "!",
                                    "role": Role.USER.value} for email in emails])
        return [(row.id, row.email) for row in sql.execute(
            select(User.id, User.email).order_by(User.id))]


def server_facts(engine: Engine) -> str:
    with engine.connect() as sql:
        version = sql.execute(text("SELECT VERSION()")).scalar()
        flush = sql.execute(text("SELECT @@innodb_flush_log_at_trx_commit")).scalar()
        pool = int(sql.execute(text("SELECT @@innodb_buffer_pool_size")).scalar() or 0)
        isolation = sql.execute(text("SELECT @@tx_isolation")).scalar()
    return (f"MariaDB/MySQL {version} (innodb_flush_log_at_trx_commit={flush}, buffer pool "
            f"{pool // 2**20} MiB, {isolation})")


# --- the run ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """Everything the report needs (with --floor-only, only the floors and the checks)."""

    facts: str
    load_before: tuple[float, float, float]
    users: int
    first: FirstOrders | None
    warmups: list[MarketRun]
    runs: list[MarketRun]
    limits: LimitResult | None
    fills_retries: int
    problems: list[str]
    errors: Counter[str]  # exception lines in the logs
    floors: list[FloorRun] = field(default_factory=list)
    profiles: list[tuple[MarketRun, Profile]] = field(default_factory=list)


def open_floor_accounts(engine: Engine, users: list[tuple[int, str]]) -> None:
    """For --floor-only: what the API and the first orders leave before the market runs, each
    user's cash account (opened by the API's own function, with its DEPOSIT row and event) and
    an empty position in the user's code."""
    with Session(engine) as session, session.begin():
        for user_id, code in users:
            open_account(session, user_id, INITIAL_CASH)
            session.add(Position(user_id=user_id, code=code, quantity=0, held_quantity=0,
                                 cost_basis=0, purchase_value=0, realized_pnl=0))


def floor_runs(options: argparse.Namespace, database_url: str, engine: Engine,
               users: list[tuple[int, str]], connection_counts: list[int],
               server_pids: Callable[[], list[int]]) -> list[FloorRun]:
    runs = []
    for connections in connection_counts:
        for variant in FLOOR_VARIANTS:
            print(f"floor, {connections} connections: {variant} ...", flush=True)
            runs.append(floor_run(database_url, engine, users, variant=variant,
                                  connections=connections, warmup_s=options.floor_warmup,
                                  duration_s=options.duration, server_pids=server_pids))
    return runs


def run_floor_only(options: argparse.Namespace, connection_counts: list[int]) -> Outcome:
    load_before = os.getloadavg()
    with ExitStack() as stack:
        database_url = stack.enter_context(bench_database(options.mysql_url))
        engine = create_engine(database_url, isolation_level="AUTOCOMMIT", pool_size=2)
        stack.callback(engine.dispose)
        facts = server_facts(engine)
        users = [(user_id, MARKET_CODES[index % len(MARKET_CODES)])
                 for index, (user_id, _) in enumerate(add_users(engine, options.users))]
        open_floor_accounts(engine, users)
        floors = floor_runs(options, database_url, engine, users, connection_counts,
                            server_pids_of(engine))
        committed = sum(floor.committed for floor in floors)
        problems = check_database(engine, committed, 0)
    return Outcome(facts, load_before, len(users), None, [], [], None, 0, problems, Counter(),
                   floors)


def run(options: argparse.Namespace) -> Outcome:
    if options.users % 2:
        raise BenchError("--users must be even (each of the 2 wrk threads takes half)")
    connection_counts = [int(c) for c in options.connections.split(",")]
    if max(connection_counts) * 2 > options.users:
        raise BenchError("--users must be at least twice the connections, so that no user "
                         "is asked twice at once")
    if options.floor_only:
        return run_floor_only(options, connection_counts)
    if shutil.which("wrk") is None:
        raise BenchError("wrk not found: apt-get install wrk")
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise BenchError("redis-server not found: apt-get install redis-server")
    if options.workers < 1:
        raise BenchError("--workers must be at least 1")
    python = sys.executable
    load_before = os.getloadavg()
    warmups: list[MarketRun] = []
    runs: list[MarketRun] = []
    profiles: list[tuple[MarketRun, Profile]] = []
    floors: list[FloorRun] = []
    with tempfile.TemporaryDirectory(prefix="stocking-bench-orders-") as tmp, \
            ExitStack() as stack:
        folder = Path(tmp)
        database_url = stack.enter_context(bench_database(options.mysql_url))
        engine = create_engine(database_url, isolation_level="AUTOCOMMIT", pool_size=2)
        stack.callback(engine.dispose)
        facts = server_facts(engine)
        server_pids = server_pids_of(engine)
        users = add_users(engine, options.users)
        redis_port, api_port = free_port(), free_port()
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url,
               "JWT_SECRET_KEY": JWT_KEY, "PORT": str(api_port),
               "WEB_CONCURRENCY": str(options.workers), "LOG_LEVEL": "WARNING",
               "INITIAL_CASH": str(INITIAL_CASH)}
        env.update(dict(setting.split("=", 1) for setting in options.api_env))
        redis_child = stack.enter_context(process(
            [redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp], env, folder / "redis.log"))
        client = redis.Redis.from_url(redis_url)
        stack.callback(client.close)
        wait_until(client.ping, "redis-server")
        ticks = TickWriter(client)
        # Quotes first: the fills worker then starts on a stream that exists.
        ticks.publish(*(ticks.quote(code, PRICE, 10) for code in (*MARKET_CODES, LIMIT_CODE)))
        fills_log, api_log = folder / "fills.log", folder / "gunicorn.log"
        fills_child = stack.enter_context(process([python, "-m", "api.fills"], env, fills_log))
        api_child = stack.enter_context(process(
            [python, "-m", "gunicorn", "-c", "gunicorn.conf.py", "api.main:app"], env,
            api_log))
        base = f"http://127.0.0.1:{api_port}"
        wait_until(lambda: httpx.get(f"{base}/health").status_code == 200, "gunicorn")
        wait_until(lambda: count(engine, "SELECT COUNT(*) FROM accounts") == options.users,
                   "cash accounts of the users")
        tokens = [issue(Principal(user_id, email, Role.USER), TokenType.ACCESS, JWT_KEY, 3600)
                  for user_id, email in users]
        meter = CpuMeter({
            "api": lambda: process_group(api_child.pid),
            "mariadb": server_pids,
            "redis": lambda: [redis_child.pid],
            "fills": lambda: process_group(fills_child.pid),
        })
        profile_files: list[Path] = []

        try:
            with fresh_quotes(ticks, MARKET_CODES):
                print(f"first orders: one market buy per user, {connection_counts[0]} at a "
                      "time ...", flush=True)
                first = first_orders(base, tokens, api_log, connection_counts[0])
                answered_2xx = len(users)  # each user's first order, sent again if it failed
                in_flight_max = 0
                for connections in connection_counts:
                    print(f"market orders, {connections} connections: warm-up ...", flush=True)
                    warm = market_run(base, tokens, meter, engine, api_log, name="warm-up",
                                      mixed=False, connections=connections, duration_s=2)
                    warmups.append(warm)
                    for name, mixed in (("BUY", False), ("BUY/SELL alternating", True)):
                        print(f"market orders, {connections} connections: {name} ...",
                              flush=True)
                        runs.append(market_run(base, tokens, meter, engine, api_log, name=name,
                                               mixed=mixed, connections=connections,
                                               duration_s=options.duration))
                    if options.py_spy:
                        print(f"market orders, {connections} connections: BUY under py-spy "
                              "...", flush=True)
                        workers = [pid for pid in process_group(api_child.pid)
                                   if pid != api_child.pid]
                        with profiled(options.py_spy, workers, options.duration, folder,
                                      str(connections)) as files:
                            profiled_run = market_run(
                                base, tokens, meter, engine, api_log, name="BUY (py-spy)",
                                mixed=False, connections=connections,
                                duration_s=options.duration)
                        warmups.append(profiled_run)  # counted, but not a measured run
                        profiles.append((profiled_run, read_profile(files)))
                        profile_files += files
                for done in (*warmups, *runs):
                    answered_2xx += done.result.requests - done.result.non_2xx
                    in_flight_max += done.connections

            print(f"limit orders: placing {options.limit_orders} ...", flush=True)
            ids = place_limit_orders(base, tokens, options.limit_orders)
            print("limit orders: filling ...", flush=True)
            limits = limit_fills(engine, ticks, ids, poll_s=options.poll_ms / 1000)
            if not options.no_floor:
                floor_users = [(user_id, MARKET_CODES[index % len(MARKET_CODES)])
                               for index, (user_id, _) in enumerate(users)]
                floors = floor_runs(options, database_url, engine, floor_users,
                                    connection_counts, server_pids)
            problems = check_database(
                engine, answered_2xx + sum(floor.committed for floor in floors), in_flight_max)
            for child, what in ((api_child, "gunicorn"), (fills_child, "the fills worker")):
                if child.poll() is not None:
                    problems.append(f"{what} exited ({child.returncode})")
            errors = Counter(line for log in (api_log, fills_log)
                             for line in log_lines(log, ERROR_LINE))
            fills_retries = len(log_lines(fills_log, RETRY_LINE))
        finally:
            if options.logs:
                Path(options.logs).mkdir(parents=True, exist_ok=True)
                for log in (api_log, fills_log, *profile_files):
                    if log.exists():
                        shutil.copy(log, Path(options.logs) / log.name)
    return Outcome(facts, load_before, len(users), first, warmups, runs, limits,
                   fills_retries, problems, errors, floors, profiles)


def report_floors(options: argparse.Namespace, outcome: Outcome) -> bool:
    """The floor table, and each API BUY run's orders/s as a share of the floors; True if a
    floor failed."""
    failed = False
    print()
    print(f"floor: a market BUY's statements from a lean client (PyMySQL, no web framework; "
          f"each connection its own users; {FLOOR_PROCESSES} client processes; "
          f"{options.floor_warmup:g} s warm-up, {options.duration} s):")
    for variant, what in FLOOR_VARIANTS.items():
        print(f"  {variant}: {what}")
    print(f"{'floor':<8} {'conns':>5} {'orders/s':>9} {'p50 ms':>7} {'p90 ms':>7} "
          f"{'p99 ms':>7} {'errors':>6} {'stmts':>6}  CPU % of a core: mariadb / clients / "
          "other; per order: mariadb, clients")
    for floor in outcome.floors:
        times = floor.latencies_ms or [0.0]
        cpu = floor.cpu
        orders = max(len(floor.latencies_ms), 1)
        print(f"{floor.variant:<8} {floor.connections:>5} {floor.orders_per_s:>9,.0f} "
              f"{percentile(times, 0.5):>7.2f} {percentile(times, 0.9):>7.2f} "
              f"{percentile(times, 0.99):>7.2f} {len(floor.errors):>6} "
              f"{floor.server['Questions'] / orders:>6.1f}  {cpu['mariadb']:.0f} / "
              f"{cpu['clients']:.0f} / {cpu['other']:.0f}; {floor.per_order_us('mariadb'):,.0f} "
              f"us, {floor.per_order_us('clients'):,.0f} us")
        for error in Counter(floor.errors).most_common(3):
            print(f"    error ({error[1]}x): {error[0][:300]}")
        failed = failed or bool(floor.errors)
    by_key = {(floor.variant, floor.connections): floor for floor in outcome.floors}
    for run_ in outcome.runs:
        if run_.name != "BUY":
            continue
        shares = [f"{run_.orders_per_s / base.orders_per_s:.0%} of the {variant} floor "
                  f"({base.orders_per_s:,.0f}/s)"
                  for variant in FLOOR_VARIANTS
                  if (base := by_key.get((variant, run_.connections))) and base.orders_per_s]
        if shares:
            print(f"API BUY, {run_.connections} connections: {run_.orders_per_s:,.0f} orders/s"
                  f" = {', '.join(shares)}")
    noisy = max((floor.cpu["other"] for floor in outcome.floors), default=0.0)
    if noisy > 10:
        print(f"WARNING: up to {noisy:.0f}% of a core went to other processes during the "
              "floors: the numbers are not clean")
    return failed


def report_profiles(outcome: Outcome) -> None:
    """Each group's share of the samples, and that share of the workers' CPU per order. The
    samples' own time can exceed the CPU: on a busy machine a thread preempted while holding
    the GIL is still sampled."""
    for run_, profile in outcome.profiles:
        cpu_per_order = run_.cpu["api"] / 100 / max(run_.orders_per_s, 1) * 1e6
        sampled_per_order = profile.samples / PROFILE_HZ * 1e6 / max(run_.result.requests, 1)
        total = max(profile.samples, 1)
        print()
        print(f"py-spy, both workers, {run_.connections} connections, BUY "
              f"({run_.orders_per_s:,.0f} orders/s while profiled, {cpu_per_order:,.0f} us of "
              f"the workers' CPU per order): {profile.samples} samples holding the GIL "
              f"({sampled_per_order:,.0f} us per order)")
        for group, samples in profile.groups.most_common():
            print(f"  {group:<55} {samples / total:>6.1%}  "
                  f"{samples / total * cpu_per_order:>6,.0f} us of CPU per order")
        print("  inclusive:")
        for label, *_ in PROFILE_SPANS:
            samples = profile.spans[label]
            print(f"  {label:<66} {samples / total:>6.1%}  "
                  f"{samples / total * cpu_per_order:>6,.0f} us")


def report(options: argparse.Namespace, outcome: Outcome) -> int:
    failed = bool(outcome.problems or outcome.errors)
    load = outcome.load_before
    print()
    print(f"machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} at the start; "
          f"{outcome.facts}")
    first = outcome.first
    if first is not None:
        failed = report_api(options, outcome, first) or failed
    if outcome.floors:
        failed = report_floors(options, outcome) or failed
    report_profiles(outcome)
    print()
    for line, times in outcome.errors.most_common(10):
        print(f"log ({times}x): {line[:300]}")
    for problem in outcome.problems:
        print(f"CHECK FAILED: {problem}")
    if not outcome.problems:
        print("checks: every 2xx answer (and floor order) is a market order in SQL, all FILLED; "
              "limit orders FILLED; cash = ledger, holds = live orders, positions and filled "
              "quantities = fills")
    print("FAILED" if failed else "OK")
    return 1 if failed else 0


def report_api(options: argparse.Namespace, outcome: Outcome, first: FirstOrders) -> bool:
    """The API runs' tables; True if something failed."""
    failed = False
    print(f"Gunicorn {options.workers} Uvicorn workers; {outcome.users} users; "
          f"wrk -t2 (-t1 for 1 connection) -d{options.duration}s after a 2 s warm-up; "
          "quotes re-published every 1 s"
          + "".join(f"; {setting}" for setting in options.api_env))
    print()
    print(f"first orders (one market BUY per user, {options.connections.split(',')[0]} at a "
          f"time, each opening a position): {sum(first.statuses.values())} in "
          f"{first.seconds:.1f} s, answers {dict(sorted(first.statuses.items()))}, "
          f"{first.retries} deadlock retries")
    for status, sample in first.samples.items():
        print(f"    non-2xx: {status} {sample}")
        failed = True
    print()
    print(f"{'market orders (MARKET, 1 share)':<30} {'conns':>5} {'orders/s':>9} "
          f"{'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'non-2xx':>7} {'sockerr':>7} "
          f"{'retries':>7}  CPU % of a core: api / mariadb / redis / fills / wrk / other")
    for run_ in (*outcome.warmups, *outcome.runs):
        r, cpu = run_.result, run_.cpu
        print(f"{run_.name:<30} {run_.connections:>5} {r.requests_per_s:>9,.0f} "
              f"{r.p50_ms:>7.2f} {r.p90_ms:>7.2f} {r.p99_ms:>7.2f} {r.non_2xx:>7} "
              f"{r.socket_errors:>7} {run_.retries:>7}  {cpu['api']:.0f} / "
              f"{cpu['mariadb']:.0f} / {cpu['redis']:.0f} / {cpu['fills']:.0f} / "
              f"{cpu['wrk']:.0f} / {cpu['other']:.0f}")
        for sample in run_.bad_samples:
            print(f"    non-2xx: {sample}")
        if r.non_2xx or r.socket_errors:
            failed = True
    print("per order: CPU time, and MariaDB statements and new connections (server-wide "
          "counters)")
    for run_ in outcome.runs:
        per = {part: run_.cpu[part] / 100 / max(run_.orders_per_s, 1) * 1e6
               for part in ("api", "mariadb", "wrk")}
        orders = max(run_.result.requests, 1)
        print(f"  {run_.name:<22} {run_.connections:>3} connections: api {per['api']:,.0f} us, "
              f"mariadb {per['mariadb']:,.0f} us, wrk {per['wrk']:,.0f} us CPU; "
              f"{run_.server['Questions'] / orders:.1f} statements, "
              f"{run_.server['Connections'] / orders:.2f} connections")
    noisy = max((run_.cpu["other"] for run_ in outcome.runs), default=0.0)
    if noisy > 10:
        print(f"WARNING: up to {noisy:.0f}% of a core went to other processes during the runs: "
              "the numbers are not clean")
    print()
    for run_ in outcome.runs:
        verdict = "target met" if run_.meets_target else "target NOT met"
        print(f"target (>= {TARGET_RPS} orders/s with p99 < {TARGET_P99_MS:.0f} ms), "
              f"{run_.name}, {run_.connections} connections: {verdict}")
    limits = outcome.limits
    if limits is not None:
        print()
        one = limits.one_by_one_ms
        print(f"limit orders (LIMIT BUY GTC, 1 share @ {LIMIT_PRICE:,}; ticks @ "
              f"{LIMIT_PRICE:,}); fills seen by polling SQL, {options.poll_ms:g} ms between "
              f"polls (a poll took {limits.poll_cost_ms:.2f} ms on average)")
        print(f"  one tick at a time, tick write -> order FILLED: n={len(one)}, "
              f"p50 {percentile(one, 0.5):.2f} ms, p90 {percentile(one, 0.9):.2f} ms, "
              f"p99 {percentile(one, 0.99):.2f} ms, max {max(one):.2f} ms")
        each = limits.burst_each_ms
        span = limits.burst_last_ms - limits.burst_first_ms
        rate = (limits.burst_orders - 1) / (span / 1000) if span > 0 else float("inf")
        print(f"  one tick for {limits.burst_orders} orders: first fill after "
              f"{limits.burst_first_ms:.2f} ms, last after {limits.burst_last_ms:.2f} ms "
              f"({rate:,.0f} fills/s in between); per order p50 {percentile(each, 0.5):.2f} "
              f"ms, p99 {percentile(each, 0.99):.2f} ms")
        print(f"  fills worker deadlock retries: {outcome.fills_retries}")
    return failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10,
                        help="seconds per wrk run and per floor run (10)")
    parser.add_argument("--connections", default="20",
                        help="wrk connections, comma-separated for several runs (20); the "
                             "floors run with as many connections")
    parser.add_argument("--workers", type=int, default=2, help="Gunicorn workers (2)")
    parser.add_argument("--users", type=int, default=200, help="users placing orders (200)")
    parser.add_argument("--limit-orders", type=int, default=200,
                        help="resting limit orders to fill (200; half one tick at a time)")
    parser.add_argument("--poll-ms", type=float, default=1.0,
                        help="pause between SQL polls for fills (1 ms)")
    parser.add_argument("--mysql-url", default="mysql+pymysql://root@127.0.0.1:3306/",
                        help="the MariaDB/MySQL server (a database is created on it)")
    parser.add_argument("--api-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for Gunicorn and the fills worker (repeatable), e.g. "
                             "DATABASE_POOL_SIZE=40")
    parser.add_argument("--logs", help="copy the Gunicorn and fills worker logs (and py-spy's "
                                       "stacks) to this folder")
    parser.add_argument("--no-floor", action="store_true",
                        help="skip the floors that follow the API runs")
    parser.add_argument("--floor-only", action="store_true",
                        help="only the floors: no Gunicorn, no Redis, no wrk")
    parser.add_argument("--floor-warmup", type=float, default=2.0,
                        help="seconds of each floor run before the measured window (2)")
    parser.add_argument("--py-spy", metavar="PATH",
                        help="py-spy binary: after each connection count's runs, one more BUY "
                             "run with both workers recorded, and the profile grouped")
    options = parser.parse_args()
    if options.limit_orders < 2:  # one filled alone, then a burst of the rest
        parser.error("--limit-orders must be at least 2")
    if options.floor_only and options.no_floor:
        parser.error("--floor-only and --no-floor exclude each other")
    try:
        return report(options, run(options))
    except (BenchError, subprocess.CalledProcessError, threading.BrokenBarrierError) as exc:
        print(f"bench_orders: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
