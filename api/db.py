"""The SQL database: engine, sessions, and one transaction per unit of work.

The driver is synchronous (pymysql, or sqlite3 for a quick start), and the routes are async. So
SQL work is a plain function `fn(session, ...)` that `Database.run` executes in a worker thread
inside one transaction: committed when it returns, rolled back when it raises. A request does
its SQL in one `run` call, so it is one transaction, and no transaction stays open while the
request waits on Redis or the relayer.

`run_retrying` is for work that locks rows (the ledger): MySQL resolves a deadlock or a lock
wait timeout by failing one transaction, which is then safe to run again from the start.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

# MySQL/MariaDB error numbers after which the whole transaction may simply be run again.
ER_LOCK_DEADLOCK = 1213
ER_LOCK_WAIT_TIMEOUT = 1205
RETRYABLE_MYSQL_ERRORS = frozenset({ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT})


def is_retryable(exc: BaseException) -> bool:
    """A deadlock or lock wait timeout: the database rolled the transaction back."""
    if not isinstance(exc, OperationalError):
        return False
    args: tuple[object, ...] = getattr(exc.orig, "args", ())
    return len(args) > 0 and args[0] in RETRYABLE_MYSQL_ERRORS


def retry_delays(attempts: int, base_s: float = 0.01, cap_s: float = 0.2) -> Iterator[float]:
    """Pauses before each retry: exponential with full jitter, capped."""
    for attempt in range(attempts):
        yield random.uniform(0, min(cap_s, base_s * 2 ** attempt))


def make_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False,
                                                             "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
            cursor.close()

        return engine
    # READ COMMITTED, not InnoDB's REPEATABLE READ: correctness rests on row locks (SELECT ...
    # FOR UPDATE in a fixed order), not on snapshots, and REPEATABLE READ's gap locks make two
    # users' first orders in one instrument deadlock (each locks the gap where the other's new
    # position row goes). Measured with scripts/bench_orders.py: 8-23% of concurrent first
    # orders failed under REPEATABLE READ despite the retries.
    return create_engine(url, echo=echo, pool_size=pool_size, max_overflow=pool_size,
                         pool_pre_ping=True, pool_recycle=1800,
                         isolation_level="READ COMMITTED")


class Database:
    def __init__(self, engine: Engine, *, deadlock_retries: int = 3) -> None:
        self.engine = engine
        self.deadlock_retries = deadlock_retries
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    def call(self, fn: Callable[Concatenate[Session, P], T], *args: P.args,
             **kwargs: P.kwargs) -> T:
        """Run `fn(session, ...)` in one transaction, in this thread."""
        with self.transaction() as session:
            return fn(session, *args, **kwargs)

    async def run(self, fn: Callable[Concatenate[Session, P], T], *args: P.args,
                  **kwargs: P.kwargs) -> T:
        """Run `fn(session, ...)` in one transaction, in a worker thread."""
        return await run_in_threadpool(partial(self.call, fn, *args, **kwargs))

    def call_retrying(self, fn: Callable[Concatenate[Session, P], T], *args: P.args,
                      **kwargs: P.kwargs) -> T:
        """`call`, run again (a bounded number of times) after a deadlock or lock wait timeout.
        `fn` must have no effect outside its transaction, since it may run more than once."""
        for delay in retry_delays(self.deadlock_retries):
            try:
                return self.call(fn, *args, **kwargs)
            except OperationalError as exc:
                if not is_retryable(exc):
                    raise
                logger.warning("%s: %s; retrying in %.3f s", getattr(fn, "__name__", fn),
                               exc.orig, delay)
                time.sleep(delay)
        return self.call(fn, *args, **kwargs)

    async def run_retrying(self, fn: Callable[Concatenate[Session, P], T], *args: P.args,
                           **kwargs: P.kwargs) -> T:
        """`run`, retried after a deadlock or lock wait timeout (see `call_retrying`)."""
        return await run_in_threadpool(partial(self.call_retrying, fn, *args, **kwargs))

    def dispose(self) -> None:
        self.engine.dispose()
