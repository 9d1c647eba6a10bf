"""Benchmark the fills worker: how fast one tick that crosses many resting limit orders fills
them (issue 16), in process, on MariaDB (or SQLite), with the worker's own code and nothing
else running.

What runs (torn down at the end): a private `redis-server` on a free port, and a fresh MariaDB
database `stocking_bench_<random>` on the server at --mysql-url (migrated, dropped at the
end), or with --sqlite a migrated SQLite file. The worker is `api.fills.worker.FillsWorker` as
`python -m api.fills` builds it (a 2-connection pool, the user-event publisher), stepped in
this process.

Shapes (--shapes, `ORDERSxUSERS`): ORDERS resting `LIMIT BUY GTC` orders of --quantity shares
at 69,900, spread round-robin over USERS users (so `25x1` is one user's 25 orders, `25x25`
one order each of 25 users), inserted with SQL as `api.orders.store.place` leaves them (cash
held, resting after the last stream entry, already checked by the worker). Then one tick at
69,900 with the volume of them all is written with the relayer's script, and the time of the
worker's step that reads and processes it is taken (`time.perf_counter()`; the order's rows
are committed before). Then the same users sell those shares with resting `LIMIT SELL GTC`
orders at 70,100 and one tick at 70,100 fills them (a sale: taxes, realized P&L). Each shape
runs --rounds times; the report gives the median and best fills/s per side, the statements
per fill (a cursor-execute listener on the engine), and the CPU per fill of this process and
of the database server (mariadbd, from /proc; 0 with SQLite).

Checks after the runs (SQL): every order FILLED with one fill, the fills count what was
ordered, every account's cash equals the sum of its ledger rows and its held cash is 0, every
position is back to 0 shares held, each fill has its two user events. Exits 1 if a check
failed, 2 if the benchmark could not run.

    .venv/bin/python scripts/bench_fills.py [--shapes 25x25,25x1,100x100,1x1] [--rounds 5]
        [--quantity 10] [--sqlite] [--profile SHAPE] [--mysql-url mysql+pymysql://root@127.0.0.1:3306/]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import secrets
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis

# Sibling scripts (scripts/ is on sys.path when this runs as a script); bench_support also puts
# the repository root on sys.path for the imports below.
from bench_orders import bench_database
from bench_support import BenchError, RedisProcess, cpu_seconds, free_port, pids_named
from sqlalchemy import Engine, event, func, insert, select, update
from sqlalchemy.orm import Session

from api.db import Database, make_engine
from api.fills.worker import FillsWorker
from api.ledger.service import open_account
from api.market.rules import Costs
from api.migrate import upgrade
from api.models import (
    Account,
    Fill,
    LedgerEntry,
    Order,
    OrderStatus,
    OrderType,
    Position,
    Role,
    Side,
    TimeInForce,
    User,
    UserEvent,
)
from api.streams.events import EventPublisher
from relayer.bus import STREAM_QUOTE_FIELD, BusNames, Quote, format_utc
from relayer.publisher import WRITE_TICKS

NAMES = BusNames()
CODE = "A005930"
BASE, BUY_PRICE, SELL_PRICE = 70_000, 69_900, 70_100
INITIAL_CASH = 10**12
COSTS = Costs(Decimal("0.00015"))
TARGET_FILLS_PER_S = 2_000


# --- the world: users, resting orders, ticks ----------------------------------------------------


class Ticks:
    """Writes ticks with the relayer's own script, as the relayer does."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.seq = 0

    def write(self, price: int, volume: int) -> None:
        self.seq += 1
        now = datetime.now(UTC)
        quote = Quote(code=CODE, price=price, base=BASE, change=price - BASE,
                      change_rate=f"{(price - BASE) / BASE * 100:.2f}", change_type="FLAT",
                      volume=volume, cum_volume=1_234_567, cum_amount=87_900_000_000,
                      trade_type="BUY", trading_strength="100.00", open=BASE, high=SELL_PRICE,
                      low=BUY_PRICE, session="REGULAR", exchange="KRX", currency="KRW",
                      ts=format_utc(now), received_at=format_utc(now, millis=True),
                      seq=self.seq)
        keys = [NAMES.tick_stream, NAMES.quote(CODE)]
        args: list[Any] = [str(3600), str(100_000), STREAM_QUOTE_FIELD,
                           str(len(NAMES.quote(""))), NAMES.tick_channel(""), quote.to_json()]
        self.client.eval(WRITE_TICKS, len(keys), *keys, *args)

    def last_id(self) -> str:
        newest: Any = self.client.xrevrange(NAMES.tick_stream, count=1)
        return newest[0][0].decode() if newest else "0-0"


def add_users(db: Database, count: int) -> list[int]:
    tag = secrets.token_hex(4)

    def work(session: Session) -> list[int]:
        ids = []
        for number in range(count):
            user_id = session.scalar(insert(User).values(
                email=f"fills-{tag}-{number}@bench.example", password_hash="!",
                role=Role.USER.value).returning(User.id))
            assert user_id is not None
            open_account(session, user_id, INITIAL_CASH)
            ids.append(user_id)
        return ids

    return db.call(work)


def place_resting(db: Database, users: list[int], orders: int, side: Side, quantity: int,
                  rests_after: str) -> list[int]:
    """`orders` resting limit orders, round-robin over `users`, holding what `place` holds."""
    price = BUY_PRICE if side is Side.BUY else SELL_PRICE

    def work(session: Session) -> list[int]:
        ids = []
        for number in range(orders):
            user_id = users[number % len(users)]
            hold = (COSTS.buy_reservation(quantity, price, first_fill_pending=True)
                    if side is Side.BUY else 0)
            order = Order(user_id=user_id, code=CODE, market="KOSPI", security_kind="STOCK",
                          side=side.value, type=OrderType.LIMIT.value,
                          time_in_force=TimeInForce.GTC.value, quantity=quantity, price=price,
                          status=OrderStatus.OPEN.value, filled_quantity=0, filled_value=0,
                          held_cash=hold, rests_after=rests_after, checked_upto=rests_after,
                          market_session="CONTINUOUS")
            session.add(order)
            if side is Side.BUY:
                session.execute(update(Account).where(Account.user_id == user_id)
                                .values(held_cash=Account.held_cash + hold))
            else:
                session.execute(update(Position).where(Position.user_id == user_id,
                                                       Position.code == CODE)
                                .values(held_quantity=Position.held_quantity + quantity))
            session.flush()
            ids.append(order.id)
        return ids

    return db.call(work)


# --- measuring -----------------------------------------------------------------------------------


class Statements:
    """Counts the statements the engine sends (each cursor execute; an executemany once)."""

    def __init__(self, engine: Engine) -> None:
        self.count = 0
        event.listen(engine, "before_cursor_execute", self._one)

    def _one(self, *_: Any) -> None:
        self.count += 1


@dataclass
class Side_Result:
    fills_per_s: list[float] = field(default_factory=list)
    statements: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)  # this process, per fill
    db_cpu_ms: list[float] = field(default_factory=list)  # the database server, per fill


def db_cpu() -> float:
    return sum(cpu_seconds(pid) for pid in pids_named("mariadbd"))


def measure_tick(worker: FillsWorker, ticks: Ticks, statements: Statements, price: int,
                 volume: int, expected: int, result: Side_Result,
                 profile: cProfile.Profile | None) -> None:
    before_fills = worker.fills_total
    ticks.write(price, volume)
    counted, cpu, server = statements.count, time.process_time(), db_cpu()
    started = time.perf_counter()
    if profile is not None:
        profile.enable()
    worker.step()
    if profile is not None:
        profile.disable()
    elapsed = time.perf_counter() - started
    cpu, server = time.process_time() - cpu, db_cpu() - server
    filled = worker.fills_total - before_fills
    if filled != expected:
        raise BenchError(f"the tick filled {filled} orders, not {expected}")
    result.fills_per_s.append(filled / elapsed)
    result.statements.append((statements.count - counted) / filled)
    result.cpu_ms.append(cpu * 1000 / filled)
    result.db_cpu_ms.append(server * 1000 / filled)


def run_shape(worker: FillsWorker, db: Database, ticks: Ticks, statements: Statements,
              orders: int, users: int, quantity: int, rounds: int,
              profile: cProfile.Profile | None) -> dict[Side, Side_Result]:
    results = {Side.BUY: Side_Result(), Side.SELL: Side_Result()}
    owners = add_users(db, users)
    for _ in range(rounds):
        for side, price in ((Side.BUY, BUY_PRICE), (Side.SELL, SELL_PRICE)):
            place_resting(db, owners, orders, side, quantity, ticks.last_id())
            measure_tick(worker, ticks, statements, price, orders * quantity, orders,
                         results[side], profile)
    return results


# --- checks --------------------------------------------------------------------------------------


def check(db: Database) -> list[str]:
    def work(session: Session) -> list[str]:
        problems = []
        not_filled = session.scalar(select(func.count()).select_from(Order)
                                    .where(Order.status != OrderStatus.FILLED.value))
        if not_filled:
            problems.append(f"{not_filled} order(s) not FILLED")
        orders = session.scalar(select(func.count()).select_from(Order))
        fills = session.scalar(select(func.count()).select_from(Fill))
        if orders != fills:
            problems.append(f"{fills} fills for {orders} orders (one each expected)")
        ledger = dict(session.execute(select(LedgerEntry.user_id, func.sum(LedgerEntry.amount))
                                      .group_by(LedgerEntry.user_id)).all())
        for account in session.scalars(select(Account)):
            if account.cash != ledger.get(account.user_id, 0):
                problems.append(f"user {account.user_id}: cash {account.cash} != ledger "
                                f"{ledger.get(account.user_id)}")
            if account.held_cash != 0:
                problems.append(f"user {account.user_id}: {account.held_cash} KRW still held")
        held = session.scalar(select(func.sum(Position.held_quantity)))
        if held:
            problems.append(f"{held} shares still held")
        events = session.scalar(select(func.count()).select_from(UserEvent)
                                .where(UserEvent.type.in_(("fill", "order"))))
        if events != 2 * (fills or 0):
            problems.append(f"{events} fill and order events for {fills} fills (2 each)")
        return problems

    return db.call(work)


# --- the run -------------------------------------------------------------------------------------


@contextmanager
def redis_server(folder: str) -> Any:
    server = RedisProcess(folder, free_port())
    server.start()
    try:
        client = redis.Redis(port=server.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise BenchError("redis-server did not start") from None
                time.sleep(0.02)
        yield client
    finally:
        server.kill()


def parse_shapes(text_: str) -> list[tuple[int, int]]:
    shapes = []
    for item in text_.split(","):
        orders, _, users = item.partition("x")
        shapes.append((int(orders), int(users)))
    return shapes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="25x25,25x1,100x100,1x1",
                        help="ORDERSxUSERS, comma-separated (25x25,25x1,100x100,1x1)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quantity", type=int, default=10)
    parser.add_argument("--sqlite", action="store_true", help="a SQLite file, not MariaDB")
    parser.add_argument("--profile", metavar="SHAPE", default=None,
                        help="cProfile the worker's steps of this shape (e.g. 25x25)")
    parser.add_argument("--mysql-url", default="mysql+pymysql://root@127.0.0.1:3306/")
    options = parser.parse_args()
    shapes = parse_shapes(options.shapes)
    try:
        with ExitStack() as stack:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-fills-"))
            if options.sqlite:
                url = f"sqlite:///{Path(folder) / 'stocking.db'}"
                upgrade(url, configure_logging=False)
            else:
                url = stack.enter_context(bench_database(options.mysql_url))
            client = stack.enter_context(redis_server(folder))
            publisher = EventPublisher(redis.Redis(port=client.connection_pool
                                                   .connection_kwargs["port"]), NAMES)
            engine = make_engine(url, pool_size=2)
            db = Database(engine, commit_listener=publisher)
            stack.callback(db.dispose)
            statements = Statements(engine)
            worker = FillsWorker(db, client, NAMES, COSTS, group="fills", batch_size=100,
                                 block_ms=10, idempotency_ttl_s=86_400)
            worker.ensure_group()
            ticks = Ticks(client)
            ticks.write(BASE, 1)  # a first entry for the orders to rest after
            worker.step()
            print(f"fills worker, one tick crossing resting orders; "
                  f"{'SQLite' if options.sqlite else 'MariaDB'}, {options.rounds} rounds, "
                  f"{options.quantity} shares an order")
            print(f"{'shape (orders x users)':<24}{'side':<6}{'fills/s median':>16}"
                  f"{'best':>8}{'statements/fill':>17}{'CPU ms/fill':>13}{'DB CPU ms/fill':>16}")
            for orders, users in shapes:
                shape = f"{orders}x{users}"
                profile = cProfile.Profile() if options.profile == shape else None
                results = run_shape(worker, db, ticks, statements, orders, users,
                                    options.quantity, options.rounds, profile)
                for side, result in results.items():
                    print(f"{shape:<24}{side.value:<6}"
                          f"{statistics.median(result.fills_per_s):>16,.0f}"
                          f"{max(result.fills_per_s):>8,.0f}"
                          f"{statistics.median(result.statements):>17.2f}"
                          f"{statistics.median(result.cpu_ms):>13.3f}"
                          f"{statistics.median(result.db_cpu_ms):>16.3f}")
                if profile is not None:
                    out = io.StringIO()
                    order = os.environ.get("BENCH_SORT", "tottime")  # or cumulative
                    pstats.Stats(profile, stream=out).sort_stats(order).print_stats(30)
                    print(out.getvalue())
            problems = check(db)
    except BenchError as exc:
        print(f"benchmark could not run: {exc}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"CHECK FAILED: {problem}")
    if not problems:
        print("checks passed: every order FILLED once, cash = ledger, nothing held, "
              "two events per fill")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
