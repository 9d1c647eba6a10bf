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

Exits 1 if anything failed (a non-2xx answer, a socket error, an exception in a log, a failed
check), 2 if the benchmark could not run; a missed target is only reported.

    .venv/bin/python scripts/bench_orders.py [--duration 10] [--connections 20[,50...]]
        [--users 200] [--limit-orders 200] [--workers 2] [--poll-ms 1] [--logs DIR]
        [--api-env NAME=VALUE ...]
        [--mysql-url mysql+pymysql://root@127.0.0.1:3306/]
"""

from __future__ import annotations

import argparse
import itertools
import os
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

from api.auth.tokens import Principal, TokenType, issue
from api.migrate import upgrade
from api.models import Role, User
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
    """Everything the report needs."""

    facts: str
    load_before: tuple[float, float, float]
    users: int
    first: FirstOrders
    warmups: list[MarketRun]
    runs: list[MarketRun]
    limits: LimitResult
    fills_retries: int
    problems: list[str]
    errors: Counter[str]  # exception lines in the logs


def run(options: argparse.Namespace) -> Outcome:
    if shutil.which("wrk") is None:
        raise BenchError("wrk not found: apt-get install wrk")
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise BenchError("redis-server not found: apt-get install redis-server")
    if options.users % 2:
        raise BenchError("--users must be even (each of the 2 wrk threads takes half)")
    if options.workers < 1:
        raise BenchError("--workers must be at least 1")
    connection_counts = [int(c) for c in options.connections.split(",")]
    if max(connection_counts) * 2 > options.users:
        raise BenchError("--users must be at least twice the connections, so that no user "
                         "is asked twice at once")
    python = sys.executable
    load_before = os.getloadavg()
    warmups: list[MarketRun] = []
    runs: list[MarketRun] = []
    with tempfile.TemporaryDirectory(prefix="stocking-bench-orders-") as tmp, \
            ExitStack() as stack:
        folder = Path(tmp)
        database_url = stack.enter_context(bench_database(options.mysql_url))
        engine = create_engine(database_url, isolation_level="AUTOCOMMIT", pool_size=2)
        stack.callback(engine.dispose)
        facts = server_facts(engine)
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
            "mariadb": lambda: pids_named("mariadbd") or pids_named("mysqld"),
            "redis": lambda: [redis_child.pid],
            "fills": lambda: process_group(fills_child.pid),
        })

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
                for done in (*warmups, *runs):
                    answered_2xx += done.result.requests - done.result.non_2xx
                    in_flight_max += done.connections

            print(f"limit orders: placing {options.limit_orders} ...", flush=True)
            ids = place_limit_orders(base, tokens, options.limit_orders)
            print("limit orders: filling ...", flush=True)
            limits = limit_fills(engine, ticks, ids, poll_s=options.poll_ms / 1000)
            problems = check_database(engine, answered_2xx, in_flight_max)
            for child, what in ((api_child, "gunicorn"), (fills_child, "the fills worker")):
                if child.poll() is not None:
                    problems.append(f"{what} exited ({child.returncode})")
            errors = Counter(line for log in (api_log, fills_log)
                             for line in log_lines(log, ERROR_LINE))
            fills_retries = len(log_lines(fills_log, RETRY_LINE))
        finally:
            if options.logs:
                Path(options.logs).mkdir(parents=True, exist_ok=True)
                for log in (api_log, fills_log):
                    shutil.copy(log, Path(options.logs) / log.name)
    return Outcome(facts, load_before, len(users), first, warmups, runs, limits,
                   fills_retries, problems, errors)


def report(options: argparse.Namespace, outcome: Outcome) -> int:
    failed = bool(outcome.problems or outcome.errors)
    load = outcome.load_before
    print()
    print(f"machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} at the start; "
          f"{outcome.facts}")
    print(f"Gunicorn {options.workers} Uvicorn workers; {outcome.users} users; "
          f"wrk -t2 (-t1 for 1 connection) -d{options.duration}s after a 2 s warm-up; "
          "quotes re-published every 1 s"
          + "".join(f"; {setting}" for setting in options.api_env))
    first = outcome.first
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
    print()
    limits = outcome.limits
    one = limits.one_by_one_ms
    print(f"limit orders (LIMIT BUY GTC, 1 share @ {LIMIT_PRICE:,}; ticks @ {LIMIT_PRICE:,}); "
          f"fills seen by polling SQL, {options.poll_ms:g} ms between polls (a poll took "
          f"{limits.poll_cost_ms:.2f} ms on average)")
    print(f"  one tick at a time, tick write -> order FILLED: n={len(one)}, "
          f"p50 {percentile(one, 0.5):.2f} ms, p90 {percentile(one, 0.9):.2f} ms, "
          f"p99 {percentile(one, 0.99):.2f} ms, max {max(one):.2f} ms")
    each = limits.burst_each_ms
    span = limits.burst_last_ms - limits.burst_first_ms
    rate = (limits.burst_orders - 1) / (span / 1000) if span > 0 else float("inf")
    print(f"  one tick for {limits.burst_orders} orders: first fill after "
          f"{limits.burst_first_ms:.2f} ms, last after {limits.burst_last_ms:.2f} ms "
          f"({rate:,.0f} fills/s in between); per order p50 {percentile(each, 0.5):.2f} ms, "
          f"p99 {percentile(each, 0.99):.2f} ms")
    print(f"  fills worker deadlock retries: {outcome.fills_retries}")
    print()
    for line, times in outcome.errors.most_common(10):
        print(f"log ({times}x): {line[:300]}")
    for problem in outcome.problems:
        print(f"CHECK FAILED: {problem}")
    if not outcome.problems:
        print("checks: every 2xx answer is a market order in SQL, all FILLED; limit orders "
              "FILLED; cash = ledger, holds = live orders, positions and filled quantities = "
              "fills")
    print("FAILED" if failed else "OK")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (10)")
    parser.add_argument("--connections", default="20",
                        help="wrk connections, comma-separated for several runs (20)")
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
    parser.add_argument("--logs", help="copy the Gunicorn and fills worker logs to this folder")
    options = parser.parse_args()
    if options.limit_orders < 2:  # one filled alone, then a burst of the rest
        parser.error("--limit-orders must be at least 2")
    try:
        return report(options, run(options))
    except (BenchError, subprocess.CalledProcessError) as exc:
        print(f"bench_orders: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
