"""The SQL database: engine, sessions, and one transaction per unit of work.

The driver is synchronous (pymysql, or sqlite3 for a quick start), and the routes are async. So
SQL work is a plain function `fn(session, ...)` that `Database.run` executes in a worker thread
inside one transaction: committed when it returns, rolled back when it raises. A request does
its SQL in one `run` call, so it is one transaction, and no transaction stays open while the
request waits on Redis or the relayer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

P = ParamSpec("P")
T = TypeVar("T")


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
    return create_engine(url, echo=echo, pool_size=pool_size, max_overflow=pool_size,
                         pool_pre_ping=True, pool_recycle=1800)


class Database:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
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

    def dispose(self) -> None:
        self.engine.dispose()
