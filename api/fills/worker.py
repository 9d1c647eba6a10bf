"""The fills worker's loop: read the relayer's tick stream through a consumer group, fill
resting limit orders (and, at a call auction's print, every order waiting for its price),
activate reservation orders at their opening auction, expire DAY orders at their trading day's
close, purge old idempotency keys. Which day it is, and when it closes, is the market calendar's
(relayer.market_calendar), the same the API asks.

Why a consumer group: Redis remembers what the group has been delivered, and what a consumer
was delivered but did not acknowledge stays pending for it. A worker that stops (or is killed)
resumes where it left off: at start it first reads its own pending entries again, then new
ones. An entry is acknowledged only after every fill it caused is committed. Processing an
entry twice is harmless: a fill is unique per (order, tick), and what a print has given is
counted on its `trade_prints` row, which orders trading on arrival in the API share
(api.orders.prints).

Orders the worker has not seen yet (placed or re-priced while earlier entries were processed)
are caught up first: the ticks between their `rests_after` and the current batch are read
again with XRANGE and applied to them alone. So no tick after an order's acceptance is missed,
whenever the order becomes visible to the worker.

Run exactly one fills worker per namespace (start_services.sh and compose do): two would split
the stream between them. (A print's volume would still be given once: its `trade_prints` row
counts it, whoever fills.)
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT, FieldT

from api.db import Database, is_unavailable
from api.fills import batch, store
from api.fills.matching import RestingOrder, after, candidates, stream_id_at
from api.fills.store import CLOSING_PRINT_GRACE
from api.idempotency import purge
from api.market.rules import Costs, day_start
from api.models import OrderStatus, Side, utc_now
from api.orders import store as order_store
from api.orders.checks import day_band
from api.orders.execution import Tick
from api.orders.prints import purge_prints
from api.performance.intraday import IntradayJob
from api.performance.snapshots import SnapshotJob
from api.streams import events
from relayer.bus import (
    EMPTY_STREAM_ID,
    BusNames,
    FillsHealth,
    MalformedQuote,
    Quote,
    as_text,
    format_utc,
    stream_entry_quote,
    stream_id_key,
)
from relayer.market_calendar import AlwaysOpen, MarketCalendar

logger = logging.getLogger(__name__)

CONSUMER = "fills-worker"
HEALTH_INTERVAL_S = 1.0
HEALTH_TTL_S = 5
EXPIRY_INTERVAL_S = 1.0
PURGE_INTERVAL_S = 600.0
# Stream entry ids are Redis's clock, a print's row the database's: a margin far wider than any
# skew between them.
PRINT_PURGE_MARGIN = timedelta(hours=1)
# Pauses between attempts while the database is unavailable (doubling up to the maximum).
OUTAGE_PAUSE_INITIAL_S = 0.5
OUTAGE_PAUSE_MAX_S = 4.0
# The most orders one transaction fills from one print (api.fills.batch): bounds the locks it
# holds at once, and the work redone after a failure.
FILL_BATCH_MAX = 100

# Stream entries as redis-py returns them; the fields are None for a pending entry that was
# trimmed from the stream before it was processed again.
Fields = dict[bytes | str, bytes | str]
Entries = list[tuple[bytes | str, Fields | None]]


def parse_tick(entry_id: bytes | str, fields: Fields | None) -> Tick | None:
    """The trade in one stream entry; None (logged) for an entry we cannot read."""
    if fields is None:
        logger.warning("tick %s was trimmed from the stream before it was processed",
                       as_text(entry_id))
        return None
    try:
        quote = stream_entry_quote(fields)
    except MalformedQuote as exc:
        logger.warning("skipping malformed tick %s: %s", as_text(entry_id), exc)
        return None
    if quote.volume <= 0:  # a well-formed print with nothing traded fills nothing
        return None
    return Tick(id=as_text(entry_id), code=quote.code, price=quote.price, volume=quote.volume,
                seq=quote.seq, ts=quote.ts, session=quote.session)


class FillsWorker:
    def __init__(self, db: Database, redis: Redis, names: BusNames, costs: Costs, *,
                 group: str, batch_size: int, block_ms: int, idempotency_ttl_s: int,
                 user_events_retention_s: int = 24 * 3600,
                 calendar: MarketCalendar | None = None,
                 clock: Callable[[], datetime] = utc_now, snapshot_batch_size: int = 200,
                 intraday_sample_interval_s: int = 300, intraday_retention_days: int = 7,
                 ) -> None:
        self.db = db
        self.redis = redis
        self.names = names
        self.stream = names.tick_stream
        self.health_key = names.fills_health
        self.costs = costs
        self.group = group
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.idempotency_ttl = timedelta(seconds=idempotency_ttl_s)
        self.user_events_retention = timedelta(seconds=user_events_retention_s)
        self.stopping = threading.Event()
        # The entry point passes the calendar in force, as the API builds it; without one,
        # every moment trades and days end at 15:30 KST (what StocKing did before).
        self.calendar: MarketCalendar = AlwaysOpen() if calendar is None else calendar
        self.clock = clock
        # Every account at each trading day's close (api.performance.snapshots).
        self.snapshots = SnapshotJob(db, redis, names, batch_size=snapshot_batch_size)
        # Every live account every few minutes of a session (api.performance.intraday).
        self.intraday = IntradayJob(db, redis, names, interval_s=intraday_sample_interval_s,
                                    retention_days=intraday_retention_days,
                                    batch_size=snapshot_batch_size)
        self.fills_total = 0
        self.expired_total = 0
        self.outside_band_total = 0
        self.activated_total = 0
        # The trading day whose band the live GTC orders were last checked against (its start,
        # api.market.rules.day_start); None: not yet since this worker started.
        self.band_checked_day: datetime | None = None
        self.last_entry_id: str | None = None
        self._next_health = 0.0
        self._next_expiry = 0.0
        self._next_purge = 0.0

    # --- the loop ------------------------------------------------------------------------------

    def ensure_group(self) -> None:
        """Create the consumer group at the start of the stream, so a first run also sees the
        ticks already stored (orders only take ticks after their acceptance)."""
        try:
            self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
            logger.info("created consumer group %s on %s", self.group, self.stream)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def run(self) -> None:
        self.ensure_group()
        self.last_entry_id = self._last_delivered()
        logger.info("fills worker reading %s as %s/%s", self.stream, self.group, CONSUMER)
        pause = OUTAGE_PAUSE_INITIAL_S
        try:
            while not self.stopping.is_set():
                try:
                    # Again after an outage: a Redis that restarted empty has no group, and
                    # what was read but not acknowledged is pending.
                    self.ensure_group()
                    self.drain_pending()
                    while not self.stopping.is_set():
                        caught_up = self.step()
                        self.report_health(caught_up)
                        if caught_up:
                            self.housekeeping()
                        pause = OUTAGE_PAUSE_INITIAL_S
                except Exception as exc:
                    # The database down or frozen: wait for it here rather than exit. A crash
                    # would be restarted by the supervisor, but on its backoff (up to 30 s),
                    # not seconds after the database returns. Nothing is lost: the batch in
                    # hand was not acknowledged, and is read again from the pending entries.
                    # Redis too: down, restarted, or our connection killed (`CLIENT KILL`). A
                    # dead connection is replaced on the next command.
                    # A Redis that restarted empty answers NOGROUP until the loop's
                    # ensure_group makes the group again (a command retried on a new
                    # connection can reach it first).
                    redis_lost = (isinstance(exc, RedisConnectionError | RedisTimeoutError)
                                  or (isinstance(exc, ResponseError)
                                      and str(exc).startswith("NOGROUP")))
                    if not (redis_lost or is_unavailable(exc)):
                        raise
                    logger.warning("%s unavailable (%s); trying again in %.1f s",
                                   "Redis" if redis_lost else "database",
                                   type(exc).__name__, pause)
                    self.stopping.wait(pause)
                    pause = min(OUTAGE_PAUSE_MAX_S, pause * 2)
        finally:
            try:
                self.redis.delete(self.health_key)
            except RedisError as exc:  # stopped during a Redis outage: the TTL removes it
                logger.warning("heartbeat not deleted at exit: %s", type(exc).__name__)

    def _last_delivered(self) -> str | None:
        """The group's last delivered entry (where a restarted worker resumes)."""
        groups: Any = self.redis.xinfo_groups(self.stream)
        for group in groups:
            if as_text(group["name"]) == self.group:
                last = as_text(group["last-delivered-id"])
                return None if last == EMPTY_STREAM_ID else last
        return None

    def drain_pending(self) -> None:
        """Process what this consumer was given before a stop and never acknowledged."""
        while not self.stopping.is_set():
            entries = self._read("0", block=False)
            if not entries:
                return
            logger.info("processing %d pending tick(s) again", len(entries))
            self.process(entries)

    def step(self) -> bool:
        """Read and process one batch of new ticks; True if the worker is caught up."""
        entries = self._read(">", block=True)
        if entries:
            self.process(entries)
        else:
            self.catch_up_while_idle()
        return len(entries) < self.batch_size

    def catch_up_while_idle(self) -> None:
        """With no new ticks, still look back for orders placed since the last batch: a tick
        they missed (processed before they committed) must not wait for the next trade."""
        if self.last_entry_id is None:
            return
        unchecked = [order for order in self.db.call(store.resting_orders, set())
                     if not order.checked]
        if unchecked:
            self.catch_up(unchecked, end=self.last_entry_id)
            self.db.call(store.mark_checked, [order.id for order in unchecked],
                         self.last_entry_id)

    def _read(self, start: str, *, block: bool) -> Entries:
        answer: Any = self.redis.xreadgroup(self.group, CONSUMER, {self.stream: start},
                                       count=self.batch_size,
                                       block=self.block_ms if block else None)
        if not answer:
            return []
        entries: Entries = answer[0][1]
        return entries

    # --- one batch -----------------------------------------------------------------------------

    def process(self, entries: Entries) -> None:
        ticks = [tick for tick in (parse_tick(i, f) for i, f in entries) if tick is not None]
        first_id, last_id = as_text(entries[0][0]), as_text(entries[-1][0])
        # Read before any of the batch's fills: the prints' hints are theirs alone.
        resting, volumes = self.db.call(store.batch_start, ticks)
        unchecked = [order for order in resting if not order.checked]
        if unchecked:
            self.catch_up(unchecked, end=f"({first_id}")
        for tick in ticks:
            self.apply(tick, resting, volumes)
        if unchecked:
            self.db.call(store.mark_checked, [order.id for order in unchecked], last_id)
        self.redis.xack(self.stream, self.group, *[entry_id for entry_id, _ in entries])
        self.last_entry_id = last_id

    def catch_up(self, orders: list[RestingOrder], *, end: str) -> None:
        """Apply to newly seen orders the ticks between their acceptance and `end` (an XRANGE
        bound: `(id` excludes the entry, a bare id includes it)."""
        start = min((order.rests_after for order in orders), key=stream_id_key)
        if not after(end.lstrip("("), start):
            return
        entries: Any = self.redis.xrange(self.stream, min=f"({start}", max=end)
        for tick in (parse_tick(i, f) for i, f in entries):
            if tick is not None:
                self.apply(tick, orders)

    def apply(self, tick: Tick, orders: Iterable[RestingOrder],
              volumes: Mapping[tuple[str, Side], int] | None = None) -> None:
        for side in (Side.BUY, Side.SELL):
            matched = candidates(tick, orders, side)
            if not matched:
                continue
            # A hint read without a lock (`volumes`: with the batch's resting orders): each
            # fill takes from the print's locked row, which orders arriving in the API share
            # (api.orders.prints).
            hint = None if volumes is None else volumes.get((tick.id, side))
            volume_left = (self.db.call(store.volume_left, tick, side) if hint is None
                           else hint)
            while matched:
                reached, matched = self.next_batch(matched, volume_left)
                if not reached:
                    break
                volume_left = self.fill_batch(reached, tick, side, volume_left)

    def next_batch(self, matched: list[RestingOrder],
                   volume_left: int) -> tuple[list[RestingOrder], list[RestingOrder]]:
        """The orders (best priority first) the print may reach, as one batch, and the rest:
        every market order waiting for an auction's price (they draw on nothing and come
        first), then limit orders until their unfilled quantities (as last read) cover what
        the print has left; at most FILL_BATCH_MAX."""
        taken, wanted = 0, 0
        for order in matched:
            if taken == FILL_BATCH_MAX:
                break
            if order.price is not None:
                if wanted >= volume_left:
                    break
                wanted += max(order.remaining, 1)
            taken += 1
        return matched[:taken], matched[taken:]

    def fill_batch(self, orders: list[RestingOrder], tick: Tick, side: Side,
                   volume_left: int) -> int:
        """Fill these orders from the tick in one transaction (api.fills.batch); if it fails,
        one transaction per order, so that an order that cannot be filled costs the others
        nothing. What the print has left afterwards (a hint)."""
        try:
            result = self.db.call_retrying(batch.fill_batch, orders, tick, side, self.costs,
                                           volume_left)
        except Exception as exc:
            if is_unavailable(exc):
                raise  # the loop waits for the database: nothing was written
            logger.warning("filling %d order(s) from tick %s in one transaction failed (%s: "
                           "%s); filling them one at a time", len(orders), tick.id,
                           type(exc).__name__, exc)
            return self.fill_each(orders, tick, side, volume_left)
        for filled in result.filled:
            self.fills_total += 1
            logger.info("filled order %d: %d @ %d (tick %s%s)", filled.order_id,
                        filled.quantity, filled.price, tick.id,
                        f", {tick.session}" if tick.is_auction else "")
        return result.volume_left

    def fill_each(self, orders: list[RestingOrder], tick: Tick, side: Side,
                  volume_left: int) -> int:
        """One transaction per order (api.fills.store.fill_from_tick). An order that fails
        does not stop the others; the first failure is raised once they are done (as a
        failed fill always stopped the worker: the entry stays pending and is processed again
        when it restarts, and the fills made now are not made twice)."""
        failure: Exception | None = None
        for order in orders:
            waiting_market = order.price is None  # fills in full, drawing on nothing
            if volume_left <= 0 and not waiting_market:
                break  # (market orders come first in an auction's priority)
            try:
                filled = self.db.call_retrying(store.fill_from_tick, order, tick, self.costs)
            except Exception as exc:
                if is_unavailable(exc):
                    raise
                logger.error("order %d was not filled from tick %s: %s: %s", order.id, tick.id,
                             type(exc).__name__, exc)
                failure = failure or exc
                continue
            if filled:
                self.fills_total += 1
                logger.info("filled order %d: %d @ %d (tick %s%s)", order.id, filled,
                            tick.price if tick.is_auction or waiting_market
                            else order.price, tick.id,
                            f", {tick.session}" if tick.is_auction else "")
            if not waiting_market:
                volume_left -= filled
        if failure is not None:
            raise failure
        return volume_left

    # --- health --------------------------------------------------------------------------------

    def report_health(self, caught_up: bool) -> None:
        """The heartbeat /ready reports (`fills`): a hash that expires when the worker stops
        refreshing it."""
        now = time.monotonic()
        if now < self._next_health:
            return
        self._next_health = now + HEALTH_INTERVAL_S
        health = FillsHealth(
            pid=os.getpid(), updated_at=format_utc(datetime.now(UTC), millis=True),
            last_entry_id=self.last_entry_id, caught_up=caught_up,
            fills_total=self.fills_total, expired_total=self.expired_total)
        # (A copy, typed as redis-py asks: its mapping's key type is invariant.)
        fields: dict[FieldT, EncodableT] = {name: value for name, value in health.to_hash().items()}
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.health_key, mapping=fields)
            pipe.expire(self.health_key, HEALTH_TTL_S)
            pipe.execute()

    # --- housekeeping --------------------------------------------------------------------------

    def housekeeping(self) -> None:
        """Work that must not run ahead of the stream: a DAY order expires, and a GTC order is
        checked against the new day's band, only once the worker has processed the ticks that
        printed before the close. Reservations are activated after expiry ran: one activated
        late (the worker was down past its day) is caught up with its day's ticks by the next
        batch before the next pass expires it."""
        now = time.monotonic()
        if now >= self._next_expiry:
            self._next_expiry = now + EXPIRY_INTERVAL_S
            self.expire_due(self.clock())
            self.activate_due(self.clock())
            self.recheck_gtc_bands(self.clock())
            self.snapshots.take_due(self.calendar, self.clock())
            self.intraday.take_due(self.calendar, self.clock())
        if now >= self._next_purge:
            self._next_purge = now + PURGE_INTERVAL_S
            purged = self.db.call(purge, datetime.now(UTC) - self.idempotency_ttl)
            if purged:
                logger.info("purged %d idempotency key(s)", purged)
            self.purge_trade_prints()
            self.purge_user_events()

    def purge_trade_prints(self) -> int:
        """Delete the volume counts of prints gone from the tick stream (api.orders.prints):
        rows created more than PRINT_PURGE_MARGIN before its oldest entry. None while the
        stream is empty: then nothing says which prints are gone."""
        oldest = self.redis.xrange(self.stream, count=1)
        if not oldest or oldest[0][0] is None:
            return 0
        oldest_ms = int(as_text(oldest[0][0]).split("-")[0])
        cutoff = datetime.fromtimestamp(oldest_ms / 1000, UTC) - PRINT_PURGE_MARGIN
        purged = self.db.call(purge_prints, cutoff)
        if purged:
            logger.info("purged the volume counts of %d print(s) gone from the stream", purged)
        return purged

    def purge_user_events(self) -> int:
        """Delete the users' stream events older than USER_EVENTS_RETENTION_S, a batch per
        transaction (api.streams.events.purge: each raises its users' reset watermarks)."""
        before = datetime.now(UTC) - self.user_events_retention
        purged = 0
        while not self.stopping.is_set():
            batch = self.db.call(events.purge, before)
            purged += batch
            if batch < events.PURGE_BATCH:
                break
        if purged:
            logger.info("purged %d user stream event(s)", purged)
        return purged

    def expire_due(self, now: datetime) -> int:
        """Expire the active orders whose trading day has closed (DAY orders, and market
        orders that waited for an auction's price in vain). Where the day ended with a closing
        auction, they wait CLOSING_PRINT_GRACE more for its print, which may fill them."""
        expired = 0
        for order_id, user_id, expires_at in self.db.call(store.due_for_expiry, now):
            if now < expires_at + CLOSING_PRINT_GRACE and self._closes_by_auction(expires_at):
                continue
            if self.db.call_retrying(order_store.expire, order_id, user_id, now):
                expired += 1
        if expired:
            self.expired_total += expired
            logger.info("expired %d DAY order(s) at the session close", expired)
        return expired

    def _closes_by_auction(self, close: datetime) -> bool:
        """Whether the trading day that closes at `close` ends with a closing auction."""
        day = self.calendar.day_of(close - timedelta(microseconds=1))
        return day.closing_auction_start < day.close

    def activate_due(self, now: datetime) -> int:
        """Activate the reservation orders whose opening auction has come (api.orders.store
        .activate): each rests from its auction's start, so the opening auction's print fills
        it, even when this worker gets to it later (it looks back from there). A limit order
        is checked again against its day's band, whose base is the latest close; outside, it
        is cancelled and its hold released. Idempotent, and safe against users' cancels (each
        activation locks the account and the order and checks it is still reserved)."""
        activated = cancelled = 0
        # One batch a pass (the next pass, a second later, takes the next one).
        due = self.db.call(store.due_for_activation, now)
        quotes = self._quotes({order.code for order in due})
        for order in due:
            quote = quotes.get(order.code)
            # Without a quote there is no newer base to check against: placement checked it.
            band = (None if quote is None or order.price is None
                    else day_band(quote, order.rules, now, self.calendar))
            outcome = self.db.call_retrying(order_store.activate, order.id, order.user_id,
                                            band, stream_id_at(order.activates_at), now)
            if outcome is OrderStatus.OPEN:
                activated += 1
            elif outcome is OrderStatus.CANCELLED:
                cancelled += 1
                logger.info("cancelled reservation order %d: %s KRW is outside the day's "
                            "limits", order.id, order.price)
        if activated:
            self.activated_total += activated
            logger.info("activated %d reservation order(s)", activated)
        return activated + cancelled

    def recheck_gtc_bands(self, now: datetime) -> int:
        """Once per trading day, after its start (the latest close, api.orders.checks): cancel
        every live GTC order whose price lies outside the new day's band around the day's base
        (reason `outside_price_limits`), releasing its hold. Runs like expiry, only when caught
        up with the stream, so a trade printed before the close fills the order first. An order
        without a quote keeps resting (no base to check against) until the next day's pass.
        Idempotent: a pass again (after a restart) cancels only orders still outside the band,
        and each cancel checks its locked row again (the user may have cancelled or re-priced
        it)."""
        day = day_start(self.calendar, now)
        if self.band_checked_day == day:
            return 0
        closed = self.calendar.previous_close(now)
        if now < closed + CLOSING_PRINT_GRACE and self._closes_by_auction(closed):
            return 0  # the closing auction's print, the new day's base, may still come
        cancelled, after_id = 0, 0
        while batch := self.db.call(store.live_gtc_orders, after_id):
            after_id = batch[-1].id
            quotes = self._quotes({order.code for order in batch})
            for order in batch:
                quote = quotes.get(order.code)
                if quote is None:
                    continue
                band = day_band(quote, order.rules, now, self.calendar)
                if order.price in band:
                    continue
                if self.db.call_retrying(order_store.cancel_outside_band, order.id,
                                         order.user_id, band):
                    cancelled += 1
                    logger.info("cancelled GTC order %d: %d KRW is outside the day's limits "
                                "%d-%d", order.id, order.price, band.lower, band.upper)
        self.band_checked_day = day
        self.outside_band_total += cancelled
        return cancelled

    def _quotes(self, codes: set[str]) -> dict[str, Quote]:
        """The latest quote of each code that has a readable one."""
        ordered = sorted(codes)
        raws: Any = self.redis.mget([self.names.quote(code) for code in ordered])
        quotes: dict[str, Quote] = {}
        for code, raw in zip(ordered, raws, strict=True):
            if raw is None:
                continue
            try:
                quotes[code] = Quote.from_json(raw)
            except MalformedQuote as exc:
                logger.warning("ignoring the malformed quote of %s: %s", code, exc)
        return quotes
