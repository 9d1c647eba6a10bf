"""Readiness: can this API process serve requests now? (`GET /ready`)

Ready means Redis and the SQL database both answer within `READY_TIMEOUT_S`, and the relayer's
desired set holds the SQL subscriptions (after Redis loses its data, this worker restores them
within SUBSCRIPTIONS_RESTORE_INTERVAL_S; until then it is not ready). The relayer's
state and the fills worker's heartbeat are reported but do not decide readiness: accounts,
orders and payments work without live prices, and a load balancer that took every API host out
of service because the relayer is reconnecting would turn a degraded platform into a dead one.
Nor does the age of the relayer's last tick: while the market calendar says nothing prints
(closed, an auction collecting orders) hours without a tick are expected, and the relayer's
check says so (`market_session`, `ticks_expected`) so that a reader does not take them for a fault.

Anyone may ask, and learns only ready or not (`ReadinessStatus`): a load balancer needs no
more. An admin's token gets the checks (`Readiness`). Even those name what failed (exception
type, or a timeout) but never the exception's text, which can carry host names and
credentials; the full error is logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.orm import Session

from api.quotes.schemas import DaemonHealthOut
from api.quotes.service import relayer_health, seconds_since
from api.resources import Resources
from api.subscriptions.restore import desired_set_restored
from relayer.bus import FillsHealth
from relayer.market_calendar import Session as MarketSession

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Check(BaseModel):
    ok: bool
    latency_ms: float = Field(description="how long the check took")
    error: str | None = Field(None, description="what failed: an exception type or a timeout")


class RelayerCheck(BaseModel):
    alive: bool = Field(description="the relayer refreshed its health hash within "
                                     "RELAYER_HEALTH_MAX_AGE_S")
    latency_ms: float
    state: str | None = Field(None, examples=["connected"])
    upstream: str | None = None
    updated_age_s: float | None = None
    last_tick_age_s: float | None = None
    subscriptions: int | None = None
    market_session: str = Field(description="the session in force now by the market calendar "
                                            "(CLOSED, OPENING_AUCTION, CONTINUOUS, "
                                            "CLOSING_AUCTION)", examples=["CONTINUOUS"])
    ticks_expected: bool = Field(description="the market prints continuously now: only then "
                                             "does a growing last_tick_age_s mean missing "
                                             "ticks")
    error: str | None = Field(None, description="why the relayer's health could not be read")


class FillsCheck(BaseModel):
    alive: bool = Field(description="the fills worker refreshed its heartbeat within "
                                     "RELAYER_HEALTH_MAX_AGE_S; resting orders fill only then")
    updated_age_s: float | None = None
    caught_up: bool | None = Field(None, description="its last read found no backlog")
    fills_total: int | None = None
    error: str | None = None


class ReadinessStatus(BaseModel):
    """The whole answer for anyone but an admin."""

    status: Literal["ready", "not_ready"]


class Readiness(BaseModel):
    """The answer with every check, for admins."""

    status: Literal["ready", "not_ready"]
    redis: Check
    database: Check
    desired_set: Check = Field(description="the relayer's desired set holds the SQL "
                                           "subscriptions (restored within a second after "
                                           "Redis loses it)")
    relayer: RelayerCheck
    fills: FillsCheck

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    def failures(self) -> str:
        """One line naming what failed, for the problem detail."""
        failed = [f"{name} ({check.error})" for name, check in
                  (("Redis", self.redis), ("the database", self.database)) if not check.ok]
        if failed:
            return "not ready: " + " and ".join(failed) + " unreachable"
        return f"not ready: the desired subscriptions are {self.desired_set.error}"


async def check_readiness(resources: Resources) -> Readiness:
    """Run the three checks concurrently; none raises (a failure is part of the answer)."""
    limit_s = resources.settings.ready_timeout_s
    redis, database, desired, relayer, fills = await asyncio.gather(
        _timed("Redis", lambda: resources.redis.ping(), limit_s),
        _timed("database", lambda: resources.db.read(_select_one), limit_s),
        _timed("desired set", lambda: desired_set_restored(resources), limit_s),
        _timed("relayer health", lambda: relayer_health(resources), limit_s),
        _timed("fills worker health", lambda: _fills_health(resources), limit_s),
    )
    redis_check = Check(ok=redis.error is None, latency_ms=redis.latency_ms, error=redis.error)
    database_check = Check(ok=database.error is None, latency_ms=database.latency_ms,
                           error=database.error)
    health: DaemonHealthOut | None = relayer.result
    session = resources.calendar.session_at(resources.clock())
    relayer_check = RelayerCheck(
        alive=health is not None and health.alive,
        latency_ms=relayer.latency_ms,
        market_session=session.value,
        ticks_expected=session is MarketSession.CONTINUOUS,
        error=relayer.error,
        **({} if health is None else health.model_dump(
            include={"state", "upstream", "updated_age_s", "last_tick_age_s", "subscriptions"})),
    )
    # Redis lost the desired set and it is not restored yet: the relayer keeps what it has, but
    # admin subscriptions are missing from it (api.subscriptions.restore).
    desired_set_check = Check(
        ok=desired.result is True, latency_ms=desired.latency_ms,
        error=desired.error or (None if desired.result else "not restored from SQL yet"))
    ready = redis_check.ok and database_check.ok and desired_set_check.ok
    return Readiness(status="ready" if ready else "not_ready", redis=redis_check,
                     database=database_check, desired_set=desired_set_check,
                     relayer=relayer_check,
                     fills=fills.result or FillsCheck(alive=False, error=fills.error))


async def _fills_health(resources: Resources) -> FillsCheck:
    health = FillsHealth.from_hash(await resources.redis.hgetall(resources.names.fills_health))
    age = seconds_since(health.updated_at, time.time())
    return FillsCheck(
        alive=age is not None and age <= resources.settings.relayer_health_max_age_s,
        updated_age_s=None if age is None else round(age, 3),
        caught_up=health.caught_up, fills_total=health.fills_total)


def _select_one(session: Session) -> None:
    session.execute(text("SELECT 1"))


@dataclass(frozen=True, slots=True)
class _Outcome(Generic[T]):
    result: T | None
    error: str | None  # None: the check answered
    latency_ms: float


async def _timed(what: str, check: Callable[[], Awaitable[T]], limit_s: float) -> _Outcome[T]:
    """The outcome of one check, given `limit_s` seconds.

    The check runs as a task that is abandoned, not cancelled, at the deadline: SQL runs in a
    worker thread, which cancellation would wait for (a connect to a silent MySQL host takes
    its full connect timeout). An abandoned check finishes in the background, and its outcome
    is dropped.
    """
    started = time.perf_counter()
    task = asyncio.ensure_future(check())
    done, _ = await asyncio.wait({task}, timeout=limit_s)
    elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
    if not done:
        _abandoned.add(task)
        task.add_done_callback(_drop_outcome)
        logger.warning("readiness: %s did not answer within %.1fs", what, limit_s)
        return _Outcome(None, f"timed out after {limit_s:g}s", elapsed_ms)
    # A request boundary of sorts: whatever the dependency raised means "not reachable".
    exc = task.exception()
    if exc is not None:
        logger.warning("readiness: %s check failed: %s: %s", what, type(exc).__name__, exc)
        return _Outcome(None, type(exc).__name__, elapsed_ms)
    return _Outcome(task.result(), None, elapsed_ms)


# Abandoned checks, held until they finish (the event loop keeps only weak references to tasks).
_abandoned: set[asyncio.Future[Any]] = set()


def _drop_outcome(task: asyncio.Future[Any]) -> None:
    _abandoned.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log "never retrieved"
