"""The `orders` channel's event log: each user's own events (an order's change, a fill, a cash
movement), each with an offset, kept so that a client resumes after a disconnect with no gap and
no duplicate. The stream server (api.streams) reads it; nothing here touches a socket.

Recording. `record_order`, `record_fill` and `record_cash` (through `record`) add one
`user_events` row inside the transaction that makes the change, so a committed fill always has
its event and a refused or rolled-back request never has one. The row's `data` is the event as
the stream sends it, built from the rows after the change: an order as `GET /api/v1/orders/{id}`
answers it, a fill as that answer lists it plus its `order_id`, a cash movement as
`GET /api/v1/transactions` lists its ledger row. Where:

    api.orders.store.place            order created | reserved
    api.orders.store.modify           order modified (before a trade on arrival)
    api.orders.store.activate         order activated
    api.orders.store._end             order cancelled | expired (user, ioc_remainder,
                                      fok_not_fillable, session_close, outside_price_limits)
    api.orders.execution.apply_fill   fill executed, then order partially_filled | filled
                                      (market orders, aggressors, the fills worker, auctions)
    api.ledger.service.post           cash deposit | withdraw | payment | refund (the BUY,
                                      SELL, FEE and TAX rows of a fill are its fill event)

Why offsets increase per user in commit order. The offset is the row's autoincrement id, given
at INSERT. Every transaction that records an event of user U holds U's write lock from before
its first INSERT until its end: the account row, `SELECT ... FOR UPDATE`
(api.ledger.service.take_user_lock), taken first by every unit of work above: placing
(api.orders.service._place), cancelling, modifying, expiring, activating and the GTC band check
(api.orders.store), a fill from the stream (api.fills.store.fill_from_tick), a deposit or
withdrawal (api.ledger.service), a payment granted or refunded (api.payments.sync.grant and
take_back lock the account before `post`). The one exception is the opening credit
(api.ledger.service.open_account), whose transaction inserts the account row itself: no other
transaction can lock (or even see) that row before it commits. (On SQLite every writer holds
the database's write lock from BEGIN IMMEDIATE to its end.) So the transactions recording U's
events run one after another, each allocates its ids after the previous one committed, and the
counter only grows: U's offsets increase in commit order, and once a reader sees U's offset N,
every event of U below N is committed (a transaction still holding smaller ids would still hold
U's lock). A rolled-back transaction leaves a hole in the ids, never an event out of order.
Ids are never reused: AUTOINCREMENT on SQLite (otherwise SQLite reuses the highest id after a
delete), and the purge never deletes the table's newest row (a MySQL before 8.0 recomputes its
counter from the highest id at restart).

Notification. A client's stream must learn of new events without polling SQL. Each row
recorded is remembered in its session's `info`; `EventPublisher` is given to `api.db.Database`
(`commit_listener`, in api.resources and the fills worker's entry point), which calls it after
every write transaction commits, in the committing thread. It merges the users' new highest
offsets into a pending map and wakes its own thread, which publishes one message per user on
`BusNames.user_events(user_id)` (`{ns}:events:{user_id}`), the decimal offset, with a sync
Redis client of its own. So a commit never waits for Redis, a burst for one user is coalesced
into one message, and a Redis outage costs only notifications (logged; the committed change and
its event stay): the stream re-reads SQL from its client's last offset on the next message or
on its periodic re-check, so a lost notification delays delivery, never loses an event.

Retention. Events are kept at least USER_EVENTS_RETENTION_S (at least 24 h); the fills worker
deletes older ones in batches (`purge`) and records, per user, the highest id it deleted
(`user_event_watermarks`). A client resuming from below that watermark has missed events and is
told `reset` (`is_expired`): it refetches over REST and continues live.

Never here: awaiting anything, committing, or publishing before the commit.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

from pydantic import BaseModel
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import Table, delete, func, insert, inspect, select
from sqlalchemy.orm import Session

from api.errors import Unprocessable
from api.ledger.schemas import LedgerEntryOut
from api.models import (
    Fill,
    LedgerEntry,
    LedgerType,
    Order,
    OrderStatus,
    UserEvent,
    UserEventWatermark,
    utc_now,
)
from api.orders.schemas import FillOut, OrderDetailOut
from api.streams import metrics
from relayer.bus import BusNames

logger = logging.getLogger(__name__)

CHANNEL = "orders"
# `session.info` key of the rows recorded in the session's transaction (for the notification).
RECORDED = "stocking_user_events"
# `session.info` key of the (user id, offset) of events inserted in bulk (`record_many`).
RECORDED_OFFSETS = "stocking_user_event_offsets"
# Offsets are ids of a BIGINT column.
MAX_OFFSET = 2**63 - 1
MAX_REPLAY = 1000
PURGE_BATCH = 1000


class EventType(StrEnum):
    """The `type` of an `orders` channel message."""

    ORDER = "order"
    FILL = "fill"
    CASH = "cash"


class OrderEvent(StrEnum):
    """What happened to an order (the message's `event`); a system cancellation says why in
    the order's `reason` (ioc_remainder, fok_not_fillable, outside_price_limits)."""

    CREATED = "created"
    RESERVED = "reserved"
    ACTIVATED = "activated"
    MODIFIED = "modified"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


FILL_EXECUTED = "executed"
# The ledger rows that are cash events (their `event` is the type in lower case). A fill's BUY,
# SELL, FEE and TAX rows are not: its fill event carries its value, commission and taxes.
CASH_EVENT_TYPES = frozenset({LedgerType.DEPOSIT, LedgerType.WITHDRAW, LedgerType.PAYMENT,
                              LedgerType.REFUND, LedgerType.RESET})
_STATUS_EVENTS = {OrderStatus.CANCELLED.value: OrderEvent.CANCELLED,
            OrderStatus.EXPIRED.value: OrderEvent.EXPIRED,
            OrderStatus.FILLED.value: OrderEvent.FILLED,
            OrderStatus.PARTIALLY_FILLED.value: OrderEvent.PARTIALLY_FILLED}


class FillEventOut(FillOut):
    """A fill event's data: the fill as the order detail lists it, and its order."""

    order_id: int


# --- recording (inside the unit of work that makes the change) ---------------------------------


def record(session: Session, user_id: int, type: EventType, event: str,
           data: BaseModel) -> UserEvent:
    """Add one event of `user_id` to the session's transaction. The caller holds the user's
    account lock (module docstring: that is what orders the offsets)."""
    row = UserEvent(user_id=user_id, type=type.value, event=event,
                    data=data.model_dump_json(), created_at=utc_now())
    session.add(row)
    session.info.setdefault(RECORDED, []).append(row)
    return row


def record_many(session: Session, events: list[tuple[int, EventType, str, str]]) -> list[int]:
    """Several events (user id, type, event, data JSON) in one multi-row INSERT, in this order:
    the fills worker's batches (api.fills.batch). Their offsets are returned and remembered
    for the notification, like `record`'s rows. The caller holds every user's account lock."""
    if not events:
        return []
    now = utc_now()
    table = cast(Table, UserEvent.__table__)
    rows = session.execute(insert(table).returning(table.c.id), [
        {"user_id": user_id, "type": type.value, "event": event, "data": data,
         "created_at": now} for user_id, type, event, data in events])
    # Both engines give a multi-row INSERT's ids in the order of its rows; only the order in
    # which RETURNING lists them is not promised (asking for it costs one INSERT per row).
    offsets = sorted(int(offset) for offset in rows.scalars())
    session.info.setdefault(RECORDED_OFFSETS, []).extend(
        (user_id, offset) for (user_id, *_), offset in zip(events, offsets, strict=True))
    return offsets


def record_order(session: Session, order: Order, event: OrderEvent,
                 fills: list[Fill] | None = None) -> UserEvent:
    """The order as `GET /api/v1/orders/{id}` answers it now (`fills`: its fills when the
    caller knows them, else read here). Flushed first: `updated_at` is stamped at the flush."""
    session.flush()
    if fills is None:
        fills = list(session.scalars(select(Fill).where(Fill.order_id == order.id)
                                     .order_by(Fill.id)))
    return record(session, order.user_id, EventType.ORDER, event.value,
                  OrderDetailOut.with_fills(order, fills))


def record_order_fill(session: Session, order: Order, fill: Fill) -> None:
    """A fill, then its order's new state (partially filled or filled)."""
    session.flush()  # the fill's id and time
    record(session, fill.user_id, EventType.FILL, FILL_EXECUTED,
           FillEventOut.model_validate(fill))
    record_order(session, order, _STATUS_EVENTS[order.status])


def record_order_end(session: Session, order: Order) -> None:
    """A live order stopped for good: cancelled or expired (its `reason` says why)."""
    record_order(session, order, _STATUS_EVENTS[order.status])


def record_cash(session: Session, entry: LedgerEntry) -> None:
    """A ledger row that is a cash event (CASH_EVENT_TYPES); nothing for a fill's rows."""
    if LedgerType(entry.type) not in CASH_EVENT_TYPES:
        return
    session.flush()  # the row's id and time
    record(session, entry.user_id, EventType.CASH, entry.type.lower(),
           LedgerEntryOut.model_validate(entry))


# --- the notification after commit --------------------------------------------------------------


def committed_offsets(session: Session) -> dict[int, int]:
    """User id -> highest offset of the events the session's transaction recorded, taken off
    the session. Rows that were rolled back (no identity) are skipped; the identity is read
    without loading anything, so this may run after the commit."""
    rows: list[UserEvent] = session.info.pop(RECORDED, [])
    highest: dict[int, int] = {}
    for row in rows:
        identity = inspect(row).identity
        if identity is None:
            continue
        offset = int(identity[0])
        if offset > highest.get(row.user_id, 0):
            highest[row.user_id] = offset
    for user_id, offset in session.info.pop(RECORDED_OFFSETS, []):
        if offset > highest.get(user_id, 0):
            highest[user_id] = offset
    return highest


class EventPublisher:
    """After commit, tells the stream servers which users have new events: one message per
    user on `{ns}:events:{user_id}` carrying the highest offset. `after_commit` is called by
    `api.db.Database` in the committing thread and never blocks on Redis: a thread of this
    object's own publishes, coalescing what piled up meanwhile. Best effort: a failed publish
    is logged and dropped (the streams re-read SQL; module docstring)."""

    def __init__(self, redis: Redis, names: BusNames) -> None:
        self.redis = redis
        self.names = names
        self._pending: dict[int, int] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._failing = False

    @classmethod
    def connect(cls, url: str, names: BusNames, *, timeout_s: float) -> EventPublisher:
        """A publisher with a Redis client of its own: short timeouts, since nothing waits on
        it and a Redis that is down should cost one quick failure per batch."""
        return cls(Redis.from_url(url, socket_timeout=timeout_s,
                                  socket_connect_timeout=timeout_s), names)

    # api.db.CommitListener
    def after_commit(self, session: Session) -> None:
        offsets = committed_offsets(session)
        if offsets:
            self.notify(offsets)

    def after_rollback(self, session: Session) -> None:
        session.info.pop(RECORDED, None)
        session.info.pop(RECORDED_OFFSETS, None)

    def notify(self, offsets: Mapping[int, int]) -> None:
        """Queue these users' new highest offsets for publishing (thread-safe)."""
        with self._lock:
            if self._closing:
                return
            for user_id, offset in offsets.items():
                if offset > self._pending.get(user_id, 0):
                    self._pending[user_id] = offset
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="user-event-publisher",
                                                daemon=True)
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                pending, self._pending = self._pending, {}
                closing = self._closing
            if pending:
                self.publish(pending)
            if closing:
                return

    def publish(self, offsets: Mapping[int, int]) -> bool:
        """Publish now, in this thread; False (logged) when Redis did not take it."""
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                for user_id, offset in offsets.items():
                    pipe.publish(self.names.user_events(user_id), str(offset))
                pipe.execute()
        except RedisError as exc:
            metrics.NOTIFICATIONS.labels("failed").inc(len(offsets))
            if not self._failing:  # once per outage, not once per commit
                logger.warning("user event notifications not published (%s): streams will "
                               "catch up on their periodic re-check", type(exc).__name__)
            self._failing = True
            return False
        if self._failing:
            logger.info("user event notifications published again")
        self._failing = False
        metrics.NOTIFICATIONS.labels("published").inc(len(offsets))
        return True

    def close(self) -> None:
        """Publish what is pending, then stop the thread and close the client."""
        with self._lock:
            self._closing = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join(timeout=5)
        self.redis.close()


# --- reading, for the stream ---------------------------------------------------------------------


class InvalidOffset(Unprocessable):
    """A `since` (or `Last-Event-ID`) that is not an offset this API hands out."""

    code = "invalid_offset"


def parse_offset(text: str) -> int:
    """An offset as clients send it back: the decimal digits of a non-negative id ("0": from
    the start of what is kept). 422 `invalid_offset` for anything else."""
    if not (0 < len(text) <= 19 and text.isascii() and text.isdigit()) or int(text) > MAX_OFFSET:
        raise InvalidOffset(f"{text[:32]!r} is not an offset of the orders channel: send back "
                            "the `offset` of the last event received")
    return int(text)


def format_offset(offset: int) -> str:
    return str(offset)


@dataclass(frozen=True, slots=True)
class UserEventOut:
    """One event as the stream sends it. `data_json` is the stored JSON, spliced into the
    message as it is (no decode and encode per client)."""

    offset: str
    type: EventType
    event: str
    data_json: str
    created_at: datetime

    @property
    def data(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.data_json)
        return data

    def message(self, portfolio_id: int | None = None) -> str:
        """`{"channel":"orders","type":...,"event":...,"offset":...,"data":{...}}`, with
        `"portfolio_id"` after the offset when the client named the portfolio it follows."""
        fields: dict[str, Any] = {"channel": CHANNEL, "type": self.type.value,
                                  "event": self.event, "offset": self.offset}
        if portfolio_id is not None:
            fields["portfolio_id"] = portfolio_id
        head = json.dumps(fields, separators=(",", ":"))
        return f'{head[:-1]},"data":{self.data_json}}}'

    @classmethod
    def of(cls, row: UserEvent) -> UserEventOut:
        return cls(format_offset(row.id), EventType(row.type), row.event, row.data,
                   row.created_at)


def events_after(session: Session, user_id: int, offset: int | None,
                 limit: int = MAX_REPLAY) -> list[UserEventOut]:
    """The user's events after `offset`, oldest first, at most `limit` (1-1000); None: nothing
    (the client starts live). Check `is_expired` after this, in the same transaction (`replay`
    does both)."""
    if not 0 < limit <= MAX_REPLAY:
        raise ValueError(f"limit must be 1-{MAX_REPLAY}, not {limit}")
    if offset is None:
        return []
    rows = session.scalars(select(UserEvent).where(UserEvent.user_id == user_id,
                                                   UserEvent.id > offset)
                           .order_by(UserEvent.id).limit(limit))
    return [UserEventOut.of(row) for row in rows]


def _watermark(session: Session, user_id: int) -> int:
    return session.scalar(select(UserEventWatermark.purged_upto)
                          .where(UserEventWatermark.user_id == user_id)) or 0


def latest_offset(session: Session, user_id: int) -> int | None:
    """The user's highest offset so far, purged events included (a client starting live
    resumes from it); None if the user never had an event."""
    newest = session.scalar(select(func.max(UserEvent.id)).where(UserEvent.user_id == user_id))
    highest = max(newest or 0, _watermark(session, user_id))
    return highest or None


def is_expired(session: Session, user_id: int, offset: int) -> bool:
    """Whether a client resuming after `offset` must be told `reset`: events of the user after
    it were purged (it is below the user's watermark), or it is beyond every offset the user
    ever had (not one of theirs: from another user, or a database restored from a backup), so
    resuming from it would silently skip what comes next. Read after `events_after`: a purge
    committing between the two then costs a needless reset, never a gap."""
    purged = _watermark(session, user_id)
    if offset < purged:
        return True
    latest = latest_offset(session, user_id) or 0
    return offset > latest


@dataclass(frozen=True, slots=True)
class Replay:
    """What a client resuming from an offset gets: the events after it, or `reset`."""

    events: list[UserEventOut]
    reset: bool


def replay(session: Session, user_id: int, offset: int, limit: int = MAX_REPLAY) -> Replay:
    """`events_after` then `is_expired`, in that order (a read-only unit of work)."""
    events = events_after(session, user_id, offset, limit)
    if is_expired(session, user_id, offset):
        return Replay([], reset=True)
    return Replay(events, reset=False)


# --- retention (the fills worker) ----------------------------------------------------------------


def purge(session: Session, before: datetime, batch: int = PURGE_BATCH) -> int:
    """Delete one batch (the oldest first) of events created before `before`, raising each
    user's watermark to the highest id deleted; the number deleted (a full batch: call again).
    The table's newest row is kept whatever its age, so that no database recomputes its
    counter below an offset already handed out."""
    newest = session.scalar(select(func.max(UserEvent.id)))
    if newest is None:
        return 0
    rows = session.execute(select(UserEvent.id, UserEvent.user_id)
                           .where(UserEvent.created_at < before, UserEvent.id < newest)
                           .order_by(UserEvent.id).limit(batch)).all()
    if not rows:
        return 0
    highest: dict[int, int] = {}
    for row in rows:
        highest[row.user_id] = max(row.id, highest.get(row.user_id, 0))
    # Only the fills worker writes watermarks (one per namespace), so read-then-write is safe.
    marks = {mark.user_id: mark for mark in session.scalars(
        select(UserEventWatermark).where(UserEventWatermark.user_id.in_(highest)))}
    for user_id, purged in highest.items():
        mark = marks.get(user_id)
        if mark is None:
            session.add(UserEventWatermark(user_id=user_id, purged_upto=purged))
        else:
            mark.purged_upto = max(mark.purged_upto, purged)
    session.execute(delete(UserEvent).where(UserEvent.id.in_([row.id for row in rows])))
    return len(rows)
