"""The SQL database: engine, sessions, and one transaction per unit of work.

The driver is synchronous (pymysql, or sqlite3 for a quick start), and the routes are async. So
SQL work is a plain function `fn(session, ...)` that `Database.run` executes in a worker thread
inside one transaction: committed when it returns, rolled back when it raises. A request does
its SQL in one `run` call, so it is one transaction, and no transaction stays open while the
request waits on Redis or the relayer.

`run_retrying` is for work that locks rows (the ledger): MySQL resolves a deadlock or a lock
wait timeout by failing one transaction, which is then safe to run again from the start. A unit
of work may also ask for that itself by raising `RunAgain` (a race it lost, which a fresh run
resolves: api.idempotency).

Serialisation is the same on both databases. On MySQL/MariaDB a unit of work that changes money
locks the rows it reads (`SELECT ... FOR UPDATE`, api.ledger.service.take_user_lock). SQLite has
no row locks (FOR UPDATE is ignored), so there every unit of work begins with `BEGIN IMMEDIATE`:
it takes the database's single write lock before its first read, and the units of work run one
after another across threads and Gunicorn workers alike (see `_sqlite_engine`).

`read` / `call_read` are for units of work that only read. On SQLite they begin a deferred
transaction instead (a consistent WAL snapshot that never waits for, nor blocks, a writer) and
the connection is `query_only` for the duration, so a "read" that tries to write fails loudly
instead of racing. On MySQL/MariaDB they are ordinary transactions. Why not BEGIN IMMEDIATE for
reads too (simpler, equally correct): every GET would then queue for the one write lock behind
the writers. Measured through two Gunicorn workers on SQLite (scripts/bench_sqlite.py), 8
clients reading the portfolio while 8 deposit: 99-102 reads/s, p99 1.0-1.1 s with IMMEDIATE
reads; 481-642 reads/s, p99 46-81 ms with deferred ones (docs/OPERATIONS.md, "SQLite"). `run`
stays the default, so a unit of work not known to be read-only is serialised.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from relayer.backoff import Backoff, Jitter

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

# MySQL/MariaDB error numbers after which the whole transaction may simply be run again.
ER_LOCK_DEADLOCK = 1213
ER_LOCK_WAIT_TIMEOUT = 1205
RETRYABLE_MYSQL_ERRORS = frozenset({ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT})


class RunAgain(Exception):
    """Raised by a unit of work that lost a race which running it again from the start resolves
    (another transaction committed first what this one was about to write). `call_retrying`
    rolls back and runs it again; with plain `call` it propagates."""


def is_retryable(exc: BaseException) -> bool:
    """A deadlock or lock wait timeout (the database rolled the transaction back), or a unit
    of work that asked to run again."""
    if isinstance(exc, RunAgain):
        return True
    if not isinstance(exc, OperationalError):
        return False
    args: tuple[object, ...] = getattr(exc.orig, "args", ())
    return len(args) > 0 and args[0] in RETRYABLE_MYSQL_ERRORS


class DatabaseUnavailable(Exception):
    """The database did not do the work in time; the API answers 503 database_unavailable."""


class DatabaseDeadlineExceeded(DatabaseUnavailable):
    """A request's SQL work took longer than its deadline (`Database(deadline_s=...)`)."""


# Client-side MySQL error numbers (and server ones) that mean "the server is not there, not
# answering, or too busy": the same request may well succeed in a moment. Deadlock and lock
# wait timeout reach here only after `call_retrying` gave up on them.
UNAVAILABLE_MYSQL_ERRORS = frozenset({
    2002, 2003,  # cannot connect (socket, TCP)
    2006, 2013, 2055,  # server has gone away, lost connection (or read timeout) mid-query
    1040,  # too many connections
    1053,  # server shutdown in progress
    1927,  # connection killed
    4031,  # disconnected by the server for inactivity
    ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT,
})


def is_unavailable(exc: BaseException) -> bool:
    """The database is down, frozen, unreachable or overloaded (a 503, not a bug): no answer
    within a deadline or timeout, a connection refused or lost, no pooled connection free, or
    SQLite's write lock not obtained within its busy timeout."""
    if isinstance(exc, DatabaseUnavailable | PoolTimeout):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:  # SQLAlchemy saw a disconnect
        return True
    orig = exc.orig
    if getattr(orig, "sqlite_errorname", None) == "SQLITE_BUSY":  # "database is locked"
        return True
    args: tuple[object, ...] = getattr(orig, "args", ())
    return len(args) > 0 and args[0] in UNAVAILABLE_MYSQL_ERRORS


# Pauses before each retry of `call_retrying` (relayer.backoff): 10 ms doubling up to 200 ms,
# with full jitter, so that the transactions that collided do not collide again.
RETRY_INITIAL_S = 0.01
RETRY_MAX_S = 0.2
_retry_jitter = random.Random()  # one for all threads: uniform() is a single C call


def _retry_backoff() -> Backoff:
    return Backoff(initial_s=RETRY_INITIAL_S, max_s=RETRY_MAX_S, rng=_retry_jitter,
                   jitter=Jitter.FULL)


# The execution option that marks a read-only unit of work (`Database.read`).
READ_ONLY = "stocking_read_only"
# How long a SQLite unit of work waits for the write lock (BEGIN IMMEDIATE) before it fails with
# "database is locked" (a 503). Each writer holds it for milliseconds, but SQLite's busy handler
# polls with growing sleeps, so waits are uneven: 8 writers and 8 readers through two Gunicorn
# workers saw deposit latency p99 up to 2.1 s (docs/OPERATIONS.md, "SQLite"). 10 s leaves room
# for that, and only a stuck writer makes anyone wait it out.
SQLITE_BUSY_TIMEOUT_S = 10.0


def _sqlite_engine(url: str, *, echo: bool, busy_timeout_s: float) -> Engine:
    """SQLite, serialising every unit of work that may write. pysqlite's own transaction
    handling BEGINs (deferred) only just before the first INSERT/UPDATE/DELETE, so the SELECTs
    a unit of work decides on ran outside any transaction, and two requests both read the same
    cash and both wrote their result (lost updates: 8 concurrent 30% withdrawals gave 5 or 7
    successes). So pysqlite's handling is turned off and the transaction is begun here: the
    SQLAlchemy recipe "Serializable isolation / Savepoints / Transactional DDL" (pysqlite)."""
    engine = create_engine(url, echo=echo, hide_parameters=True,
                           connect_args={"check_same_thread": False, "timeout": busy_timeout_s})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # pysqlite emits no BEGIN/COMMIT of its own
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        # WAL: a reader never blocks the writer nor waits for it (it reads a snapshot).
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        read_only = bool(connection.get_execution_options().get(READ_ONLY, False))
        if connection.info.get(READ_ONLY, False) != read_only:
            connection.exec_driver_sql(f"PRAGMA query_only={int(read_only)}")
            connection.info[READ_ONLY] = read_only
        # IMMEDIATE takes the write lock now, before the unit of work reads what it decides on:
        # it waits (up to the busy timeout) for the writer before it, never reads stale cash.
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def make_engine(url: str, *, pool_size: int = 10, echo: bool = False,
                busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S, connect_timeout_s: float = 2.0,
                read_timeout_s: float = 10.0, lock_wait_timeout_s: int = 5) -> Engine:
    """The engine for `url`. Both backends: `hide_parameters`, so that an error (and its logged
    traceback) shows the SQL but never the values bound to it (emails, password hashes).

    MySQL/MariaDB: every wait is bounded, so that a dead or frozen server costs a request a
    503, not a hang. `connect_timeout_s` bounds a TCP connect and, as the pool's timeout, the
    wait for a free pooled connection; `read_timeout_s` bounds each read and write on a
    connection (PyMySQL has none by default: a frozen server held a thread for the whole
    outage); `lock_wait_timeout_s` is InnoDB's row-lock wait for this session (50 s by default),
    kept below the read timeout so a lock wait ends as a clean, retryable 1205 rather than a
    cut connection whose server-side transaction would keep its locks until the wait ended.
    """
    if url.startswith("sqlite"):
        return _sqlite_engine(url, echo=echo, busy_timeout_s=busy_timeout_s)
    # READ COMMITTED, not InnoDB's REPEATABLE READ: correctness rests on row locks (SELECT ...
    # FOR UPDATE in a fixed order), not on snapshots, and REPEATABLE READ's gap locks make two
    # users' first orders in one instrument deadlock (each locks the gap where the other's new
    # position row goes). Measured with scripts/bench_orders.py: 8-23% of concurrent first
    # orders failed under REPEATABLE READ despite the retries.
    return create_engine(url, echo=echo, hide_parameters=True, pool_size=pool_size,
                         max_overflow=pool_size, pool_timeout=connect_timeout_s,
                         pool_pre_ping=True, pool_recycle=1800,
                         isolation_level="READ COMMITTED",
                         connect_args={
                             "connect_timeout": connect_timeout_s,
                             "read_timeout": read_timeout_s,
                             "write_timeout": read_timeout_s,
                             "init_command": "SET SESSION innodb_lock_wait_timeout = "
                                             f"{max(1, int(lock_wait_timeout_s))}",
                         })


class CommitListener(Protocol):
    """Told of every write transaction's end, in the thread that ran it (the per-user event
    notification, api.streams.events.EventPublisher). It must not raise, nor block on I/O:
    `after_commit` runs when the change is already committed, and a request waits for it."""

    def after_commit(self, session: Session) -> None: ...

    def after_rollback(self, session: Session) -> None: ...

    def close(self) -> None: ...


class _Attempt:
    """One request's SQL work under a deadline: the agreement between the request, which stops
    waiting at the deadline, and the worker thread doing the work, which cannot be cancelled.

    Whichever comes first wins, under a lock: if the request gives up first (`abandon`), the
    thread may not commit (the client was told 503, so nothing may have happened) and starts no
    new transaction; if the thread reached its COMMIT first (`claim_commit`), the request waits
    for the commit's outcome (bounded by the driver's read timeout), so a 503 never hides a
    committed change.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._abandoned = False
        self._committing = False

    @property
    def abandoned(self) -> bool:
        return self._abandoned

    def abandon(self) -> bool:
        """The request gives up; False if the thread is already committing."""
        with self._lock:
            if not self._committing:
                self._abandoned = True
            return self._abandoned

    def claim_commit(self) -> bool:
        """The thread is about to COMMIT; False if the request already gave up."""
        with self._lock:
            if not self._abandoned:
                self._committing = True
            return self._committing


# The attempt whose work this worker thread is doing (None outside `Database.run` and friends).
_attempt: contextvars.ContextVar[_Attempt | None] = contextvars.ContextVar("db_attempt",
                                                                           default=None)
# Work abandoned at its deadline, held until its thread finishes (the event loop keeps only
# weak references to tasks).
_abandoned: set[asyncio.Future[Any]] = set()


def _too_late(deadline_s: float | None) -> DatabaseDeadlineExceeded:
    return DatabaseDeadlineExceeded(f"no answer from the database within {deadline_s:g} s")


def _forget(task: asyncio.Future[Any]) -> None:
    _abandoned.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log "never retrieved"


class Database:
    """`deadline_s`: how long `run`, `read` and `run_retrying` wait for their work before
    raising `DatabaseDeadlineExceeded` (None: no limit). The work itself is not interrupted (a
    thread cannot be cancelled); it is refused its COMMIT, and the driver's read timeout ends
    whatever statement it is stuck in (see `_Attempt`, `make_engine`)."""

    def __init__(self, engine: Engine, *, deadlock_retries: int = 3,
                 deadline_s: float | None = None,
                 commit_listener: CommitListener | None = None) -> None:
        self.engine = engine
        self.commit_listener = commit_listener
        self.deadlock_retries = deadlock_retries
        self.deadline_s = deadline_s
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(engine.execution_options(**{READ_ONLY: True}),
                                           expire_on_commit=False)
        for sessions in (self._sessions, self._read_sessions):
            event.listen(sessions, "after_begin", self._refuse_begin_after_deadline)
            event.listen(sessions, "before_commit", self._refuse_commit_after_deadline)
        if commit_listener is not None:  # read-only units of work record nothing
            event.listen(self._sessions, "after_commit", commit_listener.after_commit)
            event.listen(self._sessions, "after_soft_rollback",
                         lambda session, _transaction: commit_listener.after_rollback(session))

    def _refuse_begin_after_deadline(self, *_: Any) -> None:
        attempt = _attempt.get()
        if attempt is not None and attempt.abandoned:
            raise _too_late(self.deadline_s)

    def _refuse_commit_after_deadline(self, _session: Session) -> None:
        attempt = _attempt.get()
        if attempt is not None and not attempt.claim_commit():
            raise _too_late(self.deadline_s)

    async def _in_thread(self, work: Callable[[], T]) -> T:
        """`work()` in a worker thread, given `deadline_s` (the wait for a free thread and a
        pooled connection included).

        Why not `asyncio.wait_for` alone: it would cancel the await, but the thread runs on,
        and could commit after the client was told 503. Why not driver timeouts alone: they
        bound each read, not the request (a connect, a ping and several statements add up), and
        must stay longer than the slowest legitimate statement. So both: the request stops
        waiting at its deadline and the thread is refused its COMMIT (`_Attempt`); the read
        timeout makes the thread itself end soon after, however the server misbehaves."""
        if self.deadline_s is None:
            return await run_in_threadpool(work)
        attempt = _Attempt()

        def attempted() -> T:
            if attempt.abandoned:  # it waited for a thread past the deadline: do nothing
                raise _too_late(self.deadline_s)
            _attempt.set(attempt)  # this thread's own context (anyio copies it per call)
            return work()

        task = asyncio.ensure_future(run_in_threadpool(attempted))
        done, _ = await asyncio.wait({task}, timeout=self.deadline_s)
        if not done and attempt.abandon():
            _abandoned.add(task)
            task.add_done_callback(_forget)
            raise _too_late(self.deadline_s)
        return await task  # done, or committing: its outcome is the answer

    @contextmanager
    def transaction(self, *, read_only: bool = False) -> Iterator[Session]:
        sessions = self._read_sessions if read_only else self._sessions
        with sessions() as session, session.begin():
            yield session

    def call(self, fn: Callable[Concatenate[Session, P], T], *args: P.args,
             **kwargs: P.kwargs) -> T:
        """Run `fn(session, ...)` in one transaction, in this thread."""
        with self.transaction() as session:
            return fn(session, *args, **kwargs)

    async def run(self, fn: Callable[Concatenate[Session, P], T], *args: P.args,
                  **kwargs: P.kwargs) -> T:
        """Run `fn(session, ...)` in one transaction, in a worker thread."""
        return await self._in_thread(partial(self.call, fn, *args, **kwargs))

    def call_read(self, fn: Callable[Concatenate[Session, P], T], *args: P.args,
                  **kwargs: P.kwargs) -> T:
        """Run `fn(session, ...)`, which only reads, in one transaction, in this thread. On
        SQLite it neither waits for nor blocks the writers, and may not write (module doc)."""
        with self.transaction(read_only=True) as session:
            return fn(session, *args, **kwargs)

    async def read(self, fn: Callable[Concatenate[Session, P], T], *args: P.args,
                   **kwargs: P.kwargs) -> T:
        """`call_read` in a worker thread."""
        return await self._in_thread(partial(self.call_read, fn, *args, **kwargs))

    def call_retrying(self, fn: Callable[Concatenate[Session, P], T], *args: P.args,
                      **kwargs: P.kwargs) -> T:
        """`call`, run again (a bounded number of times) after a deadlock or lock wait timeout,
        or when `fn` raises `RunAgain`. `fn` must have no effect outside its transaction, since
        it may run more than once. (A loop rather than tenacity: see relayer.backoff.)"""
        backoff = _retry_backoff()
        for _ in range(self.deadlock_retries):
            try:
                return self.call(fn, *args, **kwargs)
            except (OperationalError, RunAgain) as exc:
                if not is_retryable(exc):
                    raise
                delay = backoff.next_delay()
                logger.warning("%s: %s; retrying in %.3f s", getattr(fn, "__name__", fn),
                               getattr(exc, "orig", exc), delay)
                time.sleep(delay)
        return self.call(fn, *args, **kwargs)

    async def run_retrying(self, fn: Callable[Concatenate[Session, P], T], *args: P.args,
                           **kwargs: P.kwargs) -> T:
        """`run`, retried after a deadlock or lock wait timeout (see `call_retrying`)."""
        return await self._in_thread(partial(self.call_retrying, fn, *args, **kwargs))

    def dispose(self) -> None:
        if self.commit_listener is not None:
            self.commit_listener.close()
        self.engine.dispose()
