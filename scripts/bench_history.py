"""Benchmark the performance history and the trading statistics (issue 15) on real Gunicorn
workers and MariaDB: GET /api/v1/portfolio/history (period=1Y and all) and GET /api/v1/stats
(period=1Y) for many users who each have a year of daily snapshots and a few hundred fills.

What runs (all on this machine, all torn down at the end):
- a fresh database, migrated with `api.migrate.upgrade` and dropped at the end: by default
  `stocking_bench_<random>` on the MariaDB server at --mysql-url (as scripts/bench_orders.py
  makes it), or a SQLite file with `--database sqlite` (the smoke test's tiny run);
- a private `redis-server` on a free port, holding one quote per instrument traded (the open
  positions are valued at them, as GET /api/v1/portfolio values them);
- Gunicorn with `gunicorn.conf.py` (WEB_CONCURRENCY Uvicorn workers, 2) serving `api.main:app`,
  as start_services.sh runs it, with the market calendar of --calendar (MARKET_CALENDAR; krx
  by default) and LOG_LEVEL WARNING. No fills worker: the snapshots are the seeded ones and
  nothing adds to them.

The data (--users, --days, --fills), inserted with SQLAlchemy Core executemany before Gunicorn
starts, 50 users per transaction. The days are the last --days trading days of the KRX
calendar (relayer.market_calendar, XKRX; the API runs with MARKET_CALENDAR=krx) before the
trading day now belongs to; 245 is about a year. `--calendar always_open` takes every calendar
day instead, for both, and spares each process the KRX calendar's build (seconds): the smoke
test's choice. Ten KOSPI codes follow random walks of closing prices (the same for every user). Each
user opens with a 10,000,000 KRW deposit the day before the first day, then makes --fills
market fills on random days: a buy of 5-25% of the cash in a random code, or a sale of all or
half of a position held, with the KRX costs (commission 0.015%, sale taxes 0.05% + 0.15%,
rounded down) and the realized P&L of docs/api/STATS.md. Every fill has its order (FILLED) and
its ledger rows (BUY or SELL, FEE, TAX), so the account's cash is the sum of its ledger, the
positions are the sum of their fills, and each day's `account_snapshots` row is the account
valued at that day's closes (equity, base equity, the opening deposit as the first day's
flows, cumulative realized P&L, the day's fees and taxes, `ledger_upto`): what the snapshot job
would have written.

Checks before the load: one user's history (1Y and all) has a point per seeded day in the
period plus the live point, with the seeded equity at the last close; its statistics count the
sales seeded in the period.

The load: N HTTP/1.1 keep-alive connections from this process (asyncio on uvloop, requests
prepared in advance, each connection sends its next request when the answer has been read: a
closed loop), each request for the next user round-robin over all of them (in a shuffled
order), with each user's own access token (minted with `api.auth.tokens.issue` and the
workers' key, as the other benchmarks do). No wrk: it is not installed by scripts/bootstrap.sh,
and the smoke test must run wherever the suite does. For each N of --connections (2: little
queueing; 20: the workers saturated) and each endpoint: --warmup s, then --duration s
measured: answers/s, latency p50/p90/p99/max (exact, from every request), answers other than
200, and the CPU each process used (from /proc: the workers, MariaDB's whole server, Redis,
this load generator, and *other*: the machine's busy time none of them used), the workers'
CPU per answer, and on MariaDB the statements per answer (the server's `Questions` counter).

The breakdown (--breakdown N users, after the load, one request at a time, in this process,
on the same database and Redis through `api.resources.Resources`): where a request's time goes
in the service, SQL against Python: the history's SQL reads (`daily_points` and
`since_last_snapshot`, each in a read transaction), the whole history service call
(`api.performance.service.history`: those reads, the valuation, the arithmetic, the answer
models) and the answer's JSON; the statistics' SQL read (`api.stats.service.trading_history`),
the figures computed from it (`TradingFigures.of`), and the whole service call (which also
computes the same period's history, for its return and drawdown).

Exits 1 if anything failed (an answer other than 200, a connection error, an exception in the
log, a failed check), 2 if the benchmark could not run.

    .venv/bin/python scripts/bench_history.py [--users 1000] [--days 245] [--fills 200]
        [--duration 10] [--warmup 2] [--connections 2,20] [--workers 2] [--breakdown 100]
        [--database mariadb|sqlite] [--mysql-url mysql+pymysql://root@127.0.0.1:3306/]
        [--calendar krx|always_open] [--json PATH] [--logs DIR]
    .venv/bin/python scripts/bench_history.py --database sqlite --calendar always_open \\
        --users 3 --days 10 --duration 1 --warmup 0 --breakdown 3   # the smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import redis
import uvloop

# Sibling scripts (scripts/ is on sys.path when this runs as a script); bench_support also puts
# the repository root on sys.path for the imports below.
from bench_orders import (
    ERROR_LINE,
    TickWriter,
    bench_database,
    log_lines,
    server_counters,
    server_facts,
)
from bench_support import (
    JWT_KEY,
    BenchError,
    CpuMeter,
    free_port,
    percentile,
    pids_named,
    process,
    process_group,
    wait_until,
)
from sqlalchemy import Engine, create_engine, func, insert, select

from api.auth.tokens import Principal, TokenType, issue
from api.migrate import upgrade
from api.models import (
    Account,
    AccountSnapshot,
    Base,
    Fill,
    FillRule,
    LedgerEntry,
    LedgerType,
    Order,
    OrderStatus,
    OrderType,
    Position,
    Role,
    Side,
    TimeInForce,
    User,
)
from api.performance.service import (
    Timeframe,
    daily_points,
    history,
    period_start,
    since_last_snapshot,
)
from api.resources import Resources
from api.settings import ApiSettings
from api.stats.figures import TradingFigures
from api.stats.periods import PERIOD_DAYS, Period
from api.stats.service import stats, trading_history
from relayer.market_calendar import KST, CalendarKind, TradingDay, market_calendar
from relayer.shared_settings import SharedSettings

OPENING_DEPOSIT = 10_000_000
# Ten KOSPI stocks and a plausible starting close for each (KRW).
CODES = {"A005930": 70_000, "A000660": 180_000, "A035420": 190_000, "A051910": 380_000,
         "A005380": 240_000, "A035720": 45_000, "A068270": 175_000, "A105560": 80_000,
         "A055550": 50_000, "A012330": 230_000}
# KRX costs of 2026 (docs/api/STATS.md's example): commission 0.015% of each fill, and on a
# KOSPI sale 0.05% securities transaction tax plus 0.15% rural special tax, each rounded down.
COMMISSION_PER_100K, STT_PER_10K, RURAL_PER_10K = 15, 5, 15
USERS_PER_TRANSACTION = 50
ENDPOINTS = {
    "history 1Y": "/api/v1/portfolio/history?period=1Y",
    "history all": "/api/v1/portfolio/history?period=all",
    "stats 1Y": "/api/v1/stats?period=1Y",
}


# --- the seeded data -----------------------------------------------------------------------------


def seeded_days(count: int, kind: CalendarKind) -> tuple[list[TradingDay], date]:
    """The last `count` trading days of the calendar before the one now belongs to (the API's
    "today"), oldest first, and that today."""
    calendar = market_calendar(SharedSettings(market_calendar=kind))
    today = calendar.day_of(datetime.now(UTC)).date
    span = timedelta(days=count * 7 // 5 + 60)  # weekends and holidays
    days = [day for day in calendar.days(today - span, today) if day.date < today]
    while len(days) < count:
        span *= 2
        days = [day for day in calendar.days(today - span, today) if day.date < today]
    return days[-count:], today


def closing_prices(days: int, rng: random.Random) -> dict[str, list[int]]:
    """A random walk of daily closes per code (1.8% daily volatility, a little drift),
    rounded to 100 KRW."""
    closes = {}
    for code, start in CODES.items():
        price, walk = float(start), []
        for _ in range(days):
            price *= 1 + rng.gauss(0.0003, 0.018)
            walk.append(max(100, round(price / 100) * 100))
        closes[code] = walk
    return closes


@dataclass
class Ids:
    """The next id of each table (the database is new: ids are given, not read back)."""

    order: int = 1
    fill: int = 1
    ledger: int = 1
    snapshot: int = 1


@dataclass
class Rows:
    """Rows to insert, by table, in foreign key order."""

    users: list[dict[str, Any]] = field(default_factory=list)
    accounts: list[dict[str, Any]] = field(default_factory=list)
    orders: list[dict[str, Any]] = field(default_factory=list)
    fills: list[dict[str, Any]] = field(default_factory=list)
    ledger_entries: list[dict[str, Any]] = field(default_factory=list)
    positions: list[dict[str, Any]] = field(default_factory=list)
    account_snapshots: list[dict[str, Any]] = field(default_factory=list)


# The tables, in foreign key order (the fields of Rows are named after them).
TABLES = tuple(model.__tablename__ for model in (User, Account, Order, Fill, LedgerEntry,
                                                 Position, AccountSnapshot))


@dataclass
class Holding:
    quantity: int = 0
    cost_basis: int = 0
    purchase_value: int = 0
    realized_pnl: int = 0
    updated_at: datetime | None = None


@dataclass
class SeededUser:
    """What the checks compare the answers with."""

    user_id: int
    email: str
    sale_days: list[date]
    last_equity: int


def simulate_user(user_id: int, days: list[TradingDay], closes: dict[str, list[int]],
                  fills: int, rng: random.Random, ids: Ids, rows: Rows) -> SeededUser:
    """One user's year: the opening deposit, `fills` market fills with their orders and ledger
    rows, the positions they leave, and a snapshot at every day's close."""
    email = f"bench-{user_id:05d}@stocking.local"
    opened_at = (days[0].auction_start - timedelta(days=1)).astimezone(UTC)
    rows.users.append({"id": user_id, "email": email, "password_hash": "!",
                       "role": Role.USER.value, "created_at": opened_at})
    cash = fees_paid = taxes_paid = 0
    ledger_upto = 0

    def post(type_: LedgerType, amount: int, reference: str, at: datetime) -> None:
        nonlocal cash, ledger_upto
        rows.ledger_entries.append({
            "id": ids.ledger, "user_id": user_id, "type": type_.value, "amount": amount,
            "balance_before": cash, "balance_after": cash + amount, "reference": reference,
            "created_at": at})
        cash += amount
        ledger_upto = ids.ledger
        ids.ledger += 1

    post(LedgerType.DEPOSIT, OPENING_DEPOSIT, f"opening:{user_id}", opened_at)
    holdings: dict[str, Holding] = {}
    fills_on: Counter[int] = Counter(rng.randrange(len(days)) for _ in range(fills))
    sale_days: list[date] = []
    base_equity, flows = 0, OPENING_DEPOSIT  # the first snapshot counts the opening deposit
    for index, day in enumerate(days):
        day_fees = day_taxes = 0
        minutes = sorted(rng.randrange(2, 380) for _ in range(fills_on[index]))
        for minute in minutes:
            at = (day.open + timedelta(minutes=minute, seconds=rng.randrange(60))).astimezone(UTC)
            held = [code for code, h in holdings.items() if h.quantity > 0]
            code = rng.choice(list(CODES))
            price = max(100, round(closes[code][index] * rng.uniform(0.99, 1.01) / 100) * 100)
            quantity = int(cash * rng.uniform(0.05, 0.25)) // (price + price // 5000 + 1)
            if held and (quantity == 0 or rng.random() < 0.45):
                side = Side.SELL
                code = rng.choice(held)
                price = max(100, round(closes[code][index] * rng.uniform(0.99, 1.01) / 100) * 100)
                owned = holdings[code].quantity
                quantity = owned if owned == 1 or rng.random() < 0.6 else owned // 2
            elif quantity > 0:
                side = Side.BUY
            else:
                continue  # no cash and nothing to sell: a fill fewer
            value = quantity * price
            commission = value * COMMISSION_PER_100K // 100_000
            stt = value * STT_PER_10K // 10_000 if side is Side.SELL else 0
            rural = value * RURAL_PER_10K // 10_000 if side is Side.SELL else 0
            holding = holdings.setdefault(code, Holding())
            cost_basis_sold = realized = None
            if side is Side.SELL:
                whole = quantity == holding.quantity
                cost_basis_sold = (holding.cost_basis if whole
                                   else holding.cost_basis * quantity // holding.quantity)
                purchase_sold = (holding.purchase_value if whole
                                 else holding.purchase_value * quantity // holding.quantity)
                realized = value - commission - stt - rural - cost_basis_sold
                holding.quantity -= quantity
                holding.cost_basis -= cost_basis_sold
                holding.purchase_value -= purchase_sold
                holding.realized_pnl += realized
                sale_days.append(at.astimezone(KST).date())  # the statistics' day
            else:
                holding.quantity += quantity
                holding.cost_basis += value + commission
                holding.purchase_value += value
            holding.updated_at = at
            order_id, fill_id = ids.order, ids.fill
            ids.order += 1
            ids.fill += 1
            rows.orders.append({
                "id": order_id, "user_id": user_id, "client_order_id": None, "code": code,
                "market": "KOSPI", "security_kind": "STOCK", "side": side.value,
                "type": OrderType.MARKET.value, "time_in_force": TimeInForce.DAY.value,
                "quantity": quantity, "price": None, "status": OrderStatus.FILLED.value,
                "reason": None, "filled_quantity": quantity, "filled_value": value,
                "held_cash": 0, "rests_after": None, "checked_upto": None, "expires_at": None,
                "activates_at": None, "session": "CONTINUOUS", "created_at": at,
                "updated_at": at})
            tick_id = f"bench-{fill_id}"
            rows.fills.append({
                "id": fill_id, "order_id": order_id, "user_id": user_id, "code": code,
                "side": side.value, "quantity": quantity, "price": price, "value": value,
                "commission": commission, "tax": stt + rural, "securities_transaction_tax": stt,
                "rural_special_tax": rural, "tick_id": tick_id, "tick_seq": None,
                "tick_ts": None, "rule": FillRule.MARKET_ORDER_LAST_TRADE.value,
                "cost_basis_sold": cost_basis_sold, "realized_pnl": realized, "created_at": at})
            reference = f"{order_id}@{tick_id}"  # as api.orders.execution writes it
            if side is Side.SELL:
                post(LedgerType.SELL, value, reference, at)
            else:
                post(LedgerType.BUY, -value, reference, at)
            if commission:
                post(LedgerType.FEE, -commission, reference, at)
            if stt + rural:
                post(LedgerType.TAX, -(stt + rural), reference, at)
            day_fees += commission
            day_taxes += stt + rural
        fees_paid += day_fees
        taxes_paid += day_taxes
        market_value = sum(h.quantity * closes[code][index] for code, h in holdings.items())
        equity = cash + market_value
        rows.account_snapshots.append({
            "id": ids.snapshot, "user_id": user_id, "day": day.date, "cash": cash,
            "market_value": market_value, "equity": equity, "base_equity": base_equity,
            "net_flows": flows, "realized_pnl": sum(h.realized_pnl for h in holdings.values()),
            "fees": day_fees, "taxes": day_taxes, "ledger_upto": ledger_upto,
            "unpriced_positions": 0,
            "priced_at": (day.close + timedelta(seconds=61)).astimezone(UTC), "late": False})
        ids.snapshot += 1
        base_equity, flows = equity, 0
    last_at = (days[-1].close).astimezone(UTC)
    rows.accounts.append({"user_id": user_id, "cash": cash, "held_cash": 0, "clawback_due": 0,
                          "fees_paid": fees_paid, "taxes_paid": taxes_paid,
                          "created_at": opened_at, "updated_at": last_at})
    for code, holding in sorted(holdings.items()):
        rows.positions.append({
            "user_id": user_id, "code": code, "quantity": holding.quantity, "held_quantity": 0,
            "cost_basis": holding.cost_basis, "purchase_value": holding.purchase_value,
            "realized_pnl": holding.realized_pnl, "updated_at": holding.updated_at})
    return SeededUser(user_id, email, sale_days, base_equity)


@dataclass
class Seeded:
    users: list[SeededUser]
    rows: dict[str, int]  # rows inserted, by table
    seconds: float
    days: list[date]
    today: date
    last_closes: dict[str, int]


def seed(engine: Engine, users: int, day_count: int, fills: int,
         calendar: CalendarKind) -> Seeded:
    started = time.perf_counter()
    days, today = seeded_days(day_count, calendar)
    rng = random.Random(15)  # the same data on every run
    closes = closing_prices(len(days), rng)
    ids, counts, seeded = Ids(), Counter[str](), []
    for first in range(1, users + 1, USERS_PER_TRANSACTION):
        rows = Rows()
        for user_id in range(first, min(first + USERS_PER_TRANSACTION, users + 1)):
            seeded.append(simulate_user(user_id, days, closes, fills, rng, ids, rows))
        with engine.begin() as sql:
            for table in TABLES:
                batch = getattr(rows, table)
                if batch:
                    sql.execute(insert(Base.metadata.tables[table]), batch)  # executemany
                    counts[table] += len(batch)
        print(f"  seeded {len(seeded)}/{users} users", end="\r", flush=True)
    print()
    return Seeded(seeded, dict(counts), time.perf_counter() - started,
                  [day.date for day in days], today,
                  {code: walk[-1] for code, walk in closes.items()})


def publish_quotes(client: redis.Redis, last_closes: dict[str, int]) -> None:
    """A quote per code at its last close, written as the relayer writes them."""
    ticks = TickWriter(client)
    ticks.publish(*(ticks.quote(code, price, 10) for code, price in last_closes.items()))


# --- checks --------------------------------------------------------------------------------------


def check_answers(base: str, token: str, user: SeededUser, seeded: Seeded) -> list[str]:
    """One user's answers against what was seeded (empty: they agree)."""
    problems = []
    headers = {"Authorization": f"Bearer {token}"}
    year_start = period_start(Period.YEAR, seeded.today)
    assert year_start is not None
    expected_points = {
        "history 1Y": sum(day > year_start for day in seeded.days) + 1,  # + the live point
        "history all": len(seeded.days) + 1,
    }
    with httpx.Client(base_url=base, timeout=60, headers=headers) as http:
        for name, points in expected_points.items():
            answer = http.get(ENDPOINTS[name])
            if answer.status_code != 200:
                problems.append(f"{name}: {answer.status_code} {answer.text[:300]}")
                continue
            body = answer.json()
            if len(body["points"]) != points:
                problems.append(f"{name}: {len(body['points'])} points, {points} expected")
            closes = [p for p in body["points"] if not p["live"]]
            if closes and closes[-1]["equity"] != user.last_equity:
                problems.append(f"{name}: last close's equity {closes[-1]['equity']}, "
                                f"{user.last_equity} seeded")
        answer = http.get(ENDPOINTS["stats 1Y"])
        first_day = seeded.today - timedelta(days=PERIOD_DAYS[Period.YEAR] - 1)
        sales = sum(day >= first_day for day in user.sale_days)
        if answer.status_code != 200:
            problems.append(f"stats 1Y: {answer.status_code} {answer.text[:300]}")
        elif answer.json()["trades"]["count"] != sales:
            problems.append(f"stats 1Y: {answer.json()['trades']['count']} trades, {sales} "
                            "sales seeded in the period")
    return problems


# --- the load ------------------------------------------------------------------------------------


@dataclass
class LoadRun:
    endpoint: str
    connections: int
    seconds: float
    latencies_ms: list[float]
    statuses: Counter[int]
    samples: dict[int, str]  # the first body of each status other than 200
    errors: Counter[str]  # connections that failed, by exception
    body_bytes: int
    cpu: dict[str, float] = field(default_factory=dict)
    statements: int | None = None  # MariaDB's Questions over the run (server-wide)

    @property
    def answers_per_s(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, Any]:
        lat = self.latencies_ms
        return {"endpoint": self.endpoint, "connections": self.connections,
                "seconds": round(self.seconds, 3), "answers": len(lat),
                "answers_per_s": round(self.answers_per_s, 1),
                "latency_ms": {"p50": percentile(lat, 0.5), "p90": percentile(lat, 0.9),
                               "p99": percentile(lat, 0.99), "max": max(lat)} if lat else {},
                "statuses": {str(k): v for k, v in self.statuses.items()},
                "samples": {str(k): v for k, v in self.samples.items()},
                "errors": dict(self.errors),
                "bytes_per_answer": self.body_bytes // max(1, len(lat)),
                "statements_per_answer": (round(self.statements / len(lat), 1)
                                          if self.statements is not None and lat else None),
                "cpu_pct": {k: round(v, 1) for k, v in self.cpu.items()}}


class HeadError(Exception):
    pass


async def drive(port: int, requests: list[bytes], connections: int,
                duration_s: float) -> LoadRun:
    """`connections` keep-alive connections, each sending its next request (the next of
    `requests`, round-robin over all of them) as soon as the answer has been read, until
    `duration_s` has passed."""
    run = LoadRun("", connections, 0.0, [], Counter(), {}, Counter(), 0)
    serial = itertools.count()
    started = time.perf_counter()
    deadline = started + duration_s

    async def client() -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while time.perf_counter() < deadline:
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port,
                                                                   limit=2**22)
                assert reader is not None
                request = requests[next(serial) % len(requests)]
                sent = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = None
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if length is None:
                    raise HeadError(f"no content-length: {head[:200]!r}")
                body = await reader.readexactly(length)
                run.latencies_ms.append((time.perf_counter() - sent) * 1000)
                run.statuses[status] += 1
                run.body_bytes += length
                if status != 200:
                    run.samples.setdefault(status, body[:300].decode(errors="replace"))
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    HeadError) as exc:
                run.errors[type(exc).__name__] += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    await asyncio.gather(*(client() for _ in range(connections)))
    run.seconds = time.perf_counter() - started
    return run


def endpoint_requests(path: str, port: int, tokens: list[str]) -> list[bytes]:
    return [(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
             f"Authorization: Bearer {token}\r\n\r\n").encode() for token in tokens]


# --- the breakdown: where a request's time goes, in this process ---------------------------------


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else 0.0


@dataclass
class Breakdown:
    users: int
    ms: dict[str, list[float]] = field(default_factory=dict)

    def add(self, what: str, started: float) -> float:
        now = time.perf_counter()
        self.ms.setdefault(what, []).append((now - started) * 1000)
        return now

    def summary(self) -> dict[str, dict[str, float]]:
        return {what: {"mean": round(_mean(v), 3), "p50": percentile(v, 0.5),
                       "p99": percentile(v, 0.99)} for what, v in self.ms.items()}


async def breakdown(settings: ApiSettings, user_ids: list[int]) -> Breakdown:
    """Each piece of the two services timed for each user in turn (no concurrency): the cost
    of one request without queueing or HTTP."""
    resources = Resources.open(settings)
    result = Breakdown(len(user_ids))
    try:
        await resources.instruments.snapshot()  # the catalog loaded once, as in a worker
        for user_id in user_ids:
            today = resources.calendar.day_of(resources.clock()).date
            after = period_start(Period.YEAR, today)
            at = time.perf_counter()
            resources.db.call_read(daily_points, user_id, after)
            resources.db.call_read(since_last_snapshot, user_id)
            at = result.add("history 1Y: SQL reads (snapshots, last snapshot, ledger since)",
                            at)
            answer = await history(resources, user_id, Period.YEAR, Timeframe.DAY)
            at = result.add("history 1Y: whole service call", at)
            answer.model_dump_json()
            at = result.add("history 1Y: answer to JSON", at)
            trading = resources.db.call_read(trading_history, user_id, Period.YEAR,
                                             resources.clock())
            at = result.add("stats 1Y: SQL read (account, every fill, orders placed)", at)
            TradingFigures.of(trading.fills, trading.window)
            at = result.add("stats 1Y: figures from the fills", at)
            out = await stats(resources, user_id, Period.YEAR)
            at = result.add("stats 1Y: whole service call (with the 1Y history)", at)
            out.model_dump_json()
            result.add("stats 1Y: answer to JSON", at)
    finally:
        await resources.close()
    return result


# --- the run -------------------------------------------------------------------------------------


@dataclass
class Outcome:
    facts: str
    load_before: tuple[float, float, float]
    seeded: Seeded
    runs: list[LoadRun]
    warmups: list[LoadRun]
    breakdown: Breakdown | None
    problems: list[str]
    errors: Counter[str]


@contextmanager
def sqlite_database(folder: Path) -> Iterator[str]:
    url = f"sqlite:///{folder / 'bench.db'}"
    upgrade(url, configure_logging=False)
    yield url


def run(options: argparse.Namespace) -> Outcome:
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise BenchError("redis-server not found: apt-get install redis-server")
    python = sys.executable
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="stocking-bench-history-") as tmp, \
            ExitStack() as stack:
        folder = Path(tmp)
        mariadb = options.database == "mariadb"
        database_url = stack.enter_context(
            bench_database(options.mysql_url) if mariadb else sqlite_database(folder))
        engine = create_engine(database_url)
        stack.callback(engine.dispose)
        facts = server_facts(engine) if mariadb else "SQLite (a file in a temporary folder)"
        print(f"seeding {options.users} users x {options.days} trading days, {options.fills} "
              "fills each ...", flush=True)
        seeded = seed(engine, options.users, options.days, options.fills, options.calendar)
        with engine.connect() as sql:
            stored = sql.scalar(select(func.count()).select_from(AccountSnapshot))
        if stored != seeded.rows["account_snapshots"]:
            raise BenchError(f"{stored} snapshots stored, {seeded.rows} inserted")

        redis_port, api_port = free_port(), free_port()
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url,
               "JWT_SECRET_KEY": JWT_KEY, "PORT": str(api_port),
               "WEB_CONCURRENCY": str(options.workers), "LOG_LEVEL": "WARNING",
               "MARKET_CALENDAR": options.calendar.value}
        redis_child = stack.enter_context(process(
            [redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp], env, folder / "redis.log"))
        client = redis.Redis.from_url(redis_url)
        stack.callback(client.close)
        wait_until(client.ping, "redis-server")
        publish_quotes(client, seeded.last_closes)
        api_log = folder / "gunicorn.log"
        api_child = stack.enter_context(process(
            [python, "-m", "gunicorn", "-c", "gunicorn.conf.py", "api.main:app"], env,
            api_log))
        base = f"http://127.0.0.1:{api_port}"
        try:
            wait_until(lambda: httpx.get(f"{base}/health").status_code == 200, "gunicorn",
                       timeout_s=60)
            tokens = [issue(Principal(user.user_id, user.email, Role.USER), TokenType.ACCESS,
                            JWT_KEY, 7200) for user in seeded.users]
            problems = check_answers(base, tokens[0], seeded.users[0], seeded)
            order = list(range(len(tokens)))
            random.Random(1).shuffle(order)  # consecutive requests for users far apart
            spread = [tokens[i] for i in order]
            meter = CpuMeter({
                "api": lambda: process_group(api_child.pid),
                "mariadb": lambda: (pids_named("mariadbd") or pids_named("mysqld")
                                    if mariadb else []),
                "redis": lambda: [redis_child.pid],
            })
            print(f"gunicorn ready (process group {api_child.pid}); checks passed"
                  if not problems else f"gunicorn ready; checks FAILED: {problems}", flush=True)
            warmups, runs = [], []
            for connections in options.connections:
                for name, path in ENDPOINTS.items():
                    requests = endpoint_requests(path, api_port, spread)
                    if options.warmup > 0:
                        print(f"{name}, {connections} connections: warm-up "
                              f"{options.warmup:g} s ...", flush=True)
                        warm = uvloop.run(drive(api_port, requests, connections,
                                                options.warmup))
                        warm.endpoint = f"{name} (warm-up)"
                        warmups.append(warm)
                    print(f"{name}, {connections} connections: {options.duration:g} s ...",
                          flush=True)
                    questions = server_counters(engine)["Questions"] if mariadb else 0
                    before = meter.sample()
                    measured = uvloop.run(drive(api_port, requests, connections,
                                                options.duration))
                    measured.cpu = CpuMeter.window(before, meter.sample())
                    if mariadb:
                        measured.statements = server_counters(engine)["Questions"] - questions
                    measured.cpu.pop("wrk", None)  # no child does the load here
                    measured.cpu["load"] = measured.cpu.pop("bench")
                    measured.endpoint = name
                    runs.append(measured)
            found = None
            if options.breakdown > 0:
                print(f"breakdown: {options.breakdown} users, one request at a time ...",
                      flush=True)
                settings = ApiSettings(database_url=database_url, redis_url=redis_url,
                                       jwt_secret_key=JWT_KEY,
                                       market_calendar=options.calendar, log_level="WARNING")
                sample = random.Random(2).sample([u.user_id for u in seeded.users],
                                                 min(options.breakdown, len(seeded.users)))
                found = uvloop.run(breakdown(settings, sample))
            if api_child.poll() is not None:
                problems.append(f"gunicorn exited ({api_child.returncode})")
            errors = Counter(log_lines(api_log, ERROR_LINE))
        finally:
            if options.logs:
                Path(options.logs).mkdir(parents=True, exist_ok=True)
                shutil.copy(api_log, Path(options.logs) / api_log.name)
    return Outcome(facts, load_before, seeded, runs, warmups, found, problems, errors)


def report(options: argparse.Namespace, outcome: Outcome) -> int:
    failed = bool(outcome.problems or outcome.errors)
    seeded = outcome.seeded
    load = outcome.load_before
    print()
    print(f"machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} at the start; "
          f"{outcome.facts}")
    print(f"Gunicorn {options.workers} Uvicorn workers; keep-alive connections from this "
          f"process, closed loop, {options.duration:g} s per endpoint after "
          f"{options.warmup:g} s of warm-up")
    print(f"seeded in {seeded.seconds:.1f} s: {len(seeded.users)} users x {len(seeded.days)} "
          f"trading days ({seeded.days[0]} to {seeded.days[-1]}, today {seeded.today}); rows: "
          + ", ".join(f"{table} {count:,}" for table, count in seeded.rows.items()))
    print()
    print(f"{'endpoint':<22} {'conns':>5} {'answers':>7} {'per s':>6} {'p50 ms':>7} "
          f"{'p90 ms':>7} {'p99 ms':>7} {'max ms':>7} {'non-200':>7} {'errors':>6} {'KB':>4} "
          f"{'api CPU ms':>10} {'SQL':>4}  CPU % of a core: api / mariadb / redis / load / "
          "other")
    for run_ in (*outcome.warmups, *outcome.runs):
        lat, cpu = run_.latencies_ms, run_.cpu
        bad = sum(n for status, n in run_.statuses.items() if status != 200)
        errors = sum(run_.errors.values())
        if not lat:
            print(f"{run_.endpoint:<22} {run_.connections:>5} no answers; errors "
                  f"{dict(run_.errors)}")
            failed = True
            continue
        cpu_text = per_answer = statements = ""
        if cpu:  # measured runs: the CPU of each part, and the workers' per answer
            cpu_text = (f"{cpu['api']:.0f} / {cpu['mariadb']:.0f} / {cpu['redis']:.0f} / "
                        f"{cpu['load']:.0f} / {cpu['other']:.0f}")
            per_answer = f"{cpu['api'] * 10 / max(run_.answers_per_s, 1e-9):.1f}"
        if run_.statements is not None:
            statements = f"{run_.statements / len(lat):.1f}"
        print(f"{run_.endpoint:<22} {run_.connections:>5} {len(lat):>7} "
              f"{run_.answers_per_s:>6.1f} {percentile(lat, 0.5):>7.1f} "
              f"{percentile(lat, 0.9):>7.1f} {percentile(lat, 0.99):>7.1f} {max(lat):>7.1f} "
              f"{bad:>7} {errors:>6} {run_.body_bytes / len(lat) / 1024:>4.0f} "
              f"{per_answer:>10} {statements:>4}  {cpu_text}")
        for status, sample in run_.samples.items():
            print(f"    {status}: {sample}")
        if bad or errors:
            failed = True
    noisy = max((run_.cpu["other"] for run_ in outcome.runs), default=0.0)
    if noisy > 10:
        print(f"WARNING: up to {noisy:.0f}% of a core went to other processes during the runs: "
              "the numbers are not clean")
    if outcome.breakdown is not None:
        print()
        print(f"breakdown, in this process, one request at a time, {outcome.breakdown.users} "
              "users (ms):")
        print(f"  {'':<62} {'mean':>7} {'p50':>7} {'p99':>7}")
        for what, figures in outcome.breakdown.summary().items():
            print(f"  {what:<62} {figures['mean']:>7.2f} {figures['p50']:>7.2f} "
                  f"{figures['p99']:>7.2f}")
    print()
    for line, times in outcome.errors.most_common(10):
        print(f"log ({times}x): {line[:300]}")
    for problem in outcome.problems:
        print(f"CHECK FAILED: {problem}")
    if not outcome.problems:
        print("checks: one user's history (1Y, all) has a point per seeded day plus the live "
              "point, ending at the seeded equity; its statistics count the seeded sales")
    print("FAILED" if failed else "OK")
    if options.json:
        Path(options.json).write_text(json.dumps({
            "facts": outcome.facts, "seeded_rows": seeded.rows,
            "seed_seconds": round(seeded.seconds, 1), "users": len(seeded.users),
            "days": len(seeded.days), "runs": [r.summary() for r in outcome.runs],
            "breakdown": outcome.breakdown.summary() if outcome.breakdown else None,
            "problems": outcome.problems, "log_errors": dict(outcome.errors),
            "failed": failed}, indent=2, default=str))
    return 1 if failed else 0


def connection_counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",")]
    if not counts or min(counts) < 1:
        raise ValueError(text)
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000, help="users seeded (1000)")
    parser.add_argument("--days", type=int, default=245,
                        help="trading days of snapshots per user (245: about a year)")
    parser.add_argument("--fills", type=int, default=200, help="fills per user (200)")
    parser.add_argument("--duration", type=float, default=10,
                        help="seconds measured per endpoint (10)")
    parser.add_argument("--warmup", type=float, default=2,
                        help="seconds of warm-up per endpoint (2)")
    parser.add_argument("--connections", type=connection_counts, default=[2, 20],
                        help="concurrent keep-alive connections, comma-separated for several "
                             "runs of every endpoint (2,20)")
    parser.add_argument("--workers", type=int, default=2, help="Gunicorn workers (2)")
    parser.add_argument("--breakdown", type=int, default=100,
                        help="users whose requests are timed piece by piece in process (100; "
                             "0: none)")
    parser.add_argument("--database", choices=("mariadb", "sqlite"), default="mariadb",
                        help="a new database on the MariaDB server, or a SQLite file")
    parser.add_argument("--mysql-url", default="mysql+pymysql://root@127.0.0.1:3306/",
                        help="the MariaDB/MySQL server (a database is created on it)")
    parser.add_argument("--calendar", type=CalendarKind, choices=list(CalendarKind),
                        default=CalendarKind.KRX,
                        help="the market calendar of the seeded days and of the API (krx; "
                             "always_open: every calendar day, and no KRX calendar to build, "
                             "which costs seconds per process: the smoke test's)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--logs", help="copy the Gunicorn log to this folder")
    options = parser.parse_args()
    if options.users < 1 or options.days < 1 or options.fills < 0:
        parser.error("--users and --days must be at least 1, --fills at least 0")
    if options.duration <= 0:
        parser.error("--duration must be positive")
    try:
        return report(options, run(options))
    except (BenchError, subprocess.CalledProcessError) as exc:
        print(f"bench_history: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
