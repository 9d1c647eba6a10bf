"""The per-worker hub of the live stream: one Redis pub/sub connection for every client of
this API worker, and the buffers it fills for each client.

    Hub.run (one task per worker, started in the app's lifespan; api.app)
      +-- _read           the pub/sub connection: reference-counted channels, one
      |                   `NS:ticks:{code}` per code any client watches and one `NS:events:{user}`
      |                   per account (a portfolio's) with an orders subscription; each
      |                   message handed to the watching clients' buffers; reconnects (then a
      |                   `gap` for every code, and every orders subscription re-reads SQL)
      +-- _watch_relayer  the relayer's health hash: a new `reconnects` count or `instance`
      |                   means prints may have been missed upstream, a `gap`
      +-- _watch_market   the calendar's session at the clock: a `market` message on change

A tick's update is made once for all the worker's clients: its message and its WebSocket
frame. A WebSocket client whose server offers direct writes (api.streams.frames) and that is
keeping up gets the frame written to its socket at once, by the hub, with no task switch. Any
other client, or one with something else to send first, gets it in its buffer.

A client's buffer (`StreamClient`) never grows with the tick rate: it holds the latest quote
per code (a newer one replaces the older, unsent one: coalescing), the accounts whose "orders
are to be read from SQL", and a bounded queue of control messages (snapshots, errors, pongs).
A client whose queue overflows, or whose socket blocks a send beyond STREAM_SEND_TIMEOUT_S, is
closed as slow (api.streams.session) instead of being buffered for.

The hub never writes a key, and never holds a message for a client that left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.maint_notifications import MaintNotificationsConfig

from api.cancellation import honour_cancellation
from api.market.clock import market_clock
from api.quotes.service import epoch_s, latest_quotes, quote_context
from api.resources import Resources
from api.streams import metrics, protocol
from api.streams.frames import DirectFrames, text_frame
from relayer.backoff import Backoff
from relayer.bus import MalformedQuote, as_text, decode_quote, stream_id_key

logger = logging.getLogger(__name__)

# Messages taken from the pub/sub connection at once, at most, when Redis has sent more than
# one (the hub is behind): each code's latest is fanned out, the older ones skipped.
HUB_BATCH = 1000

# A print's place in time (its stream entry id as a sortable pair); (0, 0) when unknown.
TickKey = tuple[int, int]
NO_TICK: TickKey = (0, 0)


def tick_key(quote: dict[str, Any]) -> TickKey:
    tick_id = quote.get("tick_id")
    if not isinstance(tick_id, str):
        return NO_TICK
    try:
        return stream_id_key(tick_id)
    except ValueError:
        return NO_TICK


@dataclass(slots=True)
class PendingQuote:
    message: bytes
    frame: bytes  # the message as a WebSocket frame (api.streams.frames.text_frame)
    key: TickKey
    received: float | None  # the relayer's `received_at`, epoch seconds: fan-out latency


@dataclass(eq=False)
class StreamClient:
    """One connection's pending output: filled by the hub and the connection's own handler,
    drained by its sender (api.streams.session). Identity is the object (eq=False)."""

    user_id: int
    max_control: int
    codes: set[str] = field(default_factory=set)  # codes whose updates are delivered
    priming: set[str] = field(default_factory=set)  # subscribed, snapshot not yet queued
    quotes: dict[str, PendingQuote] = field(default_factory=dict)
    # Per code, the newest print this client has been given (its snapshot's, then each
    # update's): an update at or before it is dropped. The relayer writes a quote and then
    # publishes it, so a snapshot read in between already holds the print whose update
    # arrives next.
    given: dict[str, TickKey] = field(default_factory=dict)
    # (message, its orders offset or None), in the order they must be sent.
    control: deque[tuple[bytes, str | None]] = field(default_factory=deque)
    market: bool = False
    # The accounts (users ids: one per portfolio followed) of its orders subscriptions, and
    # those with events to read from SQL (notified, or re-checked).
    orders: set[int] = field(default_factory=set)
    orders_due: set[int] = field(default_factory=set)
    overflowed: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    frames: DirectFrames | None = None  # direct writes to its socket, when offered
    sending: bool = False  # the sender is in a send: nothing may overtake its message

    def push(self, message: bytes) -> None:
        """Queue a control message; past `max_control` pending the client is too slow."""
        self.push_event(message, None)

    def push_event(self, message: bytes, offset: str | None) -> None:
        if len(self.control) >= self.max_control:
            self.overflowed = True
        else:
            self.control.append((message, offset))
        self.wake.set()

    def offer_tick(self, code: str, pending: PendingQuote) -> bool:
        """Deliver an update: written to the socket now when that keeps the order (nothing of
        this client's waiting before it, its snapshot sent) and the socket is not backed up;
        True if it was. Else kept as the code's pending update, which it replaces if newer."""
        key = pending.key
        if key != NO_TICK:
            if key <= self.given.get(code, NO_TICK):
                return False
            self.given[code] = key
        frames = self.frames
        if (frames is not None and not self.sending and not self.control
                and code not in self.quotes and code not in self.priming
                and not frames.paused):
            return frames.write(pending.frame)
        old = self.quotes.get(code)
        if old is None or pending.key >= old.key:
            self.quotes[code] = pending
            if code not in self.priming:
                self.wake.set()
        return False

    def primed(self, code: str, snapshot: bytes, key: TickKey) -> None:
        """The snapshot of `code` is queued: an update it already contains is dropped, so that
        a client never sees a quote older than the snapshot before it."""
        self.priming.discard(code)
        self.push(snapshot)
        if key != NO_TICK and key > self.given.get(code, NO_TICK):
            self.given[code] = key
        pending = self.quotes.get(code)
        if pending is not None and pending.key <= key and key != NO_TICK:
            del self.quotes[code]

    def notify_orders(self, account_id: int | None = None) -> None:
        """Read the events of `account_id` (None: of every account followed) from SQL."""
        due = self.orders if account_id is None else self.orders & {account_id}
        if due:
            self.orders_due |= due
            self.wake.set()

    def take_quotes(self) -> list[PendingQuote]:
        """The pending updates ready to send (not those still waiting for their snapshot)."""
        ready = [code for code in self.quotes if code not in self.priming]
        return [self.quotes.pop(code) for code in ready]

    def has_output(self) -> bool:
        return bool(self.control or self.orders_due or self.overflowed
                    or any(code not in self.priming for code in self.quotes))


class Hub:
    """The worker's one pub/sub connection and who watches what (see the module docstring)."""

    def __init__(self, resources: Resources, stopping: asyncio.Event | None = None) -> None:
        self.resources = resources
        # Set when the server begins to stop (api.stopping): SSE streams end.
        self.stopping = stopping if stopping is not None else asyncio.Event()
        settings = resources.settings
        # Its own client: a blocking read (no socket timeout) and no silent reconnect inside
        # redis-py, which would resubscribe without telling us that messages were lost.
        self._redis = Redis.from_url(
            settings.redis_url, socket_timeout=None,
            socket_connect_timeout=settings.api_redis_timeout_s,
            retry=Retry(NoBackoff(), 0),
            maint_notifications_config=MaintNotificationsConfig(enabled=False))
        self._pubsub: PubSub | None = None
        self._refs: dict[str, int] = {}  # channel -> watchers
        self._by_code: dict[str, set[StreamClient]] = {}
        self._by_account: dict[int, set[StreamClient]] = {}  # orders watchers per account
        self._clients: set[StreamClient] = set()
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        self._lock = asyncio.Lock()  # one subscription change (or reconnect) at a time
        self._snapshot_slots = asyncio.Semaphore(settings.stream_snapshot_concurrency)
        self._tick_prefix = resources.names.tick_channel("")
        self._market: dict[str, Any] | None = None
        self._account_of_channel: dict[str, int] = {}
        self._channel_of_account: dict[int, str] = {}

    # --- Clients ------------------------------------------------------------------------------

    def add(self, client: StreamClient) -> None:
        self._clients.add(client)
        metrics.CLIENTS.inc()

    async def remove(self, client: StreamClient) -> None:
        """Forget a client that left: every channel it alone needed is unsubscribed."""
        if client not in self._clients:
            return
        self._clients.discard(client)
        metrics.CLIENTS.dec()
        await self.unwatch_codes(client, list(client.codes | client.priming))
        for account_id in list(client.orders):
            await self.unwatch_orders(client, account_id)

    async def watch_codes(self, client: StreamClient, codes: Iterable[str]) -> list[str]:
        """Start delivering `codes` to `client`: the codes new to it, in order, subscribed on
        Redis (confirmed) before this returns, so a snapshot read now misses no tick."""
        new = [code for code in codes if code not in client.codes and code not in client.priming]
        for code in new:
            client.priming.add(code)
            self._by_code.setdefault(code, set()).add(client)
        metrics.SUBSCRIPTIONS.labels("quotes").inc(len(new))
        await self._want([self.resources.names.tick_channel(code) for code in new])
        client.codes.update(new)
        return new

    async def unwatch_codes(self, client: StreamClient, codes: Iterable[str]) -> list[str]:
        gone = [code for code in codes if code in client.codes or code in client.priming]
        for code in gone:
            client.codes.discard(code)
            client.priming.discard(code)
            client.quotes.pop(code, None)
            client.given.pop(code, None)
            watchers = self._by_code.get(code)
            if watchers is not None:
                watchers.discard(client)
                if not watchers:
                    del self._by_code[code]
        metrics.SUBSCRIPTIONS.labels("quotes").dec(len(gone))
        await self._unwant([self.resources.names.tick_channel(code) for code in gone])
        return gone

    async def watch_orders(self, client: StreamClient, account_id: int, channel: str) -> None:
        """Notify `client` of the new events of `account_id` (the user's own, or one of his
        portfolios'; `channel`: that account's events channel). Once per client and account: a
        second call changes nothing, so that one unwatch undoes it."""
        if account_id in client.orders:
            return
        self._by_account.setdefault(account_id, set()).add(client)
        self._account_of_channel[channel] = account_id
        self._channel_of_account[account_id] = channel
        client.orders.add(account_id)
        metrics.SUBSCRIPTIONS.labels("orders").inc()
        await self._want([channel])

    async def unwatch_orders(self, client: StreamClient, account_id: int) -> None:
        client.orders.discard(account_id)
        client.orders_due.discard(account_id)
        watchers = self._by_account.get(account_id)
        if watchers is None or client not in watchers:
            return
        watchers.discard(client)
        metrics.SUBSCRIPTIONS.labels("orders").dec()
        channel = self._channel_of_account[account_id]
        if not watchers:
            del self._by_account[account_id]
            del self._channel_of_account[account_id]
            del self._account_of_channel[channel]
        await self._unwant([channel])

    def watch_market(self, client: StreamClient) -> dict[str, Any]:
        """The market's session now; `client` gets every change from here on."""
        client.market = True
        if self._market is None:
            self._market = self._market_now()
        return self._market

    # --- The pub/sub connection ---------------------------------------------------------------

    async def _want(self, channels: list[str]) -> None:
        async with self._lock:
            new = [ch for ch in channels if self._refs.get(ch, 0) == 0]
            for channel in channels:
                self._refs[channel] = self._refs.get(channel, 0) + 1
            metrics.REDIS_CHANNELS.set(len(self._refs))
            if not new or self._pubsub is None:
                return  # while disconnected, the reconnect subscribes everything wanted
            loop = asyncio.get_running_loop()
            waits = [self._confirmations.setdefault(ch, loop.create_future()) for ch in new]
            try:
                await self._pubsub.subscribe(*new)
                # Bounded: the reader confirms within a round trip; a Redis that went away
                # is the reader's to repair (it resubscribes and sends a gap).
                async with asyncio.timeout(self.resources.settings.stream_subscribe_timeout_s):
                    await asyncio.gather(*waits)
            except (RedisError, TimeoutError, OSError) as exc:
                logger.warning("stream: subscribing %d channel(s) failed (%s); the reconnect "
                               "will", len(new), exc)
            finally:
                for channel in new:
                    self._confirmations.pop(channel, None)

    async def _unwant(self, channels: list[str]) -> None:
        async with self._lock:
            gone = []
            for channel in channels:
                count = self._refs.get(channel, 0) - 1
                if count <= 0:
                    self._refs.pop(channel, None)
                    gone.append(channel)
                else:
                    self._refs[channel] = count
            metrics.REDIS_CHANNELS.set(len(self._refs))
            if gone and self._pubsub is not None:
                try:
                    await self._pubsub.unsubscribe(*gone)
                except (RedisError, OSError) as exc:
                    logger.warning("stream: unsubscribing failed (%s)", exc)

    async def run(self) -> None:
        """The hub's tasks, until cancelled (the app's shutdown)."""
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._read(), name="stream-hub-read")
                tasks.create_task(self._watch_relayer(), name="stream-hub-relayer")
                tasks.create_task(self._watch_market(), name="stream-hub-market")
                tasks.create_task(self._recheck_orders(), name="stream-hub-orders")
        finally:
            await self._redis.aclose()

    async def _read(self) -> None:
        settings = self.resources.settings
        pauses = Backoff(0.05, settings.stream_redis_retry_max_s)
        connected_before = False
        while True:
            pubsub = self._redis.pubsub()
            try:
                async with self._lock:
                    await pubsub.connect()  # type: ignore[no-untyped-call]
                    channels = list(self._refs)
                    if channels:
                        await pubsub.subscribe(*channels)
                    self._pubsub = pubsub
                if connected_before:
                    logger.info("stream: Redis pub/sub connected again (%d channels); telling "
                                "clients about the gap", len(channels))
                    await self._gap_everything("redis")
                connected_before = True
                pauses.reset()
                await self._read_messages(pubsub)
            except (RedisError, OSError, TimeoutError) as exc:
                logger.warning("stream: Redis pub/sub lost (%s: %s); reconnecting",
                               type(exc).__name__, exc)
            finally:
                self._pubsub = None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(pauses.next_delay())

    async def _read_messages(self, pubsub: PubSub) -> None:
        """Until the connection fails. A PING every STREAM_REDIS_PING_S: a connection that
        answers nothing for three of them is taken for dead (a frozen or unplugged Redis
        sends no reset)."""
        ping_s = self.resources.settings.stream_redis_ping_s
        heard = pinged = time.monotonic()
        while True:
            message = await pubsub.get_message(timeout=min(1.0, ping_s))
            now = time.monotonic()
            if message is not None:
                heard = now
                batch = [message]
                while len(batch) < HUB_BATCH:  # what Redis has sent already, without waiting
                    more = await pubsub.get_message(timeout=0)
                    if more is None:
                        break
                    batch.append(more)
                await self._dispatch_batch(batch)
            if now - pinged >= ping_s:
                pinged = now
                await pubsub.ping()
            if now - heard > 3 * ping_s:
                raise TimeoutError(f"no answer from Redis for {now - heard:.1f}s")

    async def _dispatch_batch(self, batch: list[dict[str, Any]]) -> None:
        """The messages read together: each code's latest tick fanned out (an older one in
        the same batch is superseded: a hub behind catches up instead of replaying, as a
        client behind does), with a turn for the rest of the loop after each, so that a
        backlog never holds the loop (heart-beats, handshakes, senders) for long."""
        latest: dict[str, bytes] = {}
        ticks = 0
        for message in batch:
            kind = message.get("type")
            channel = as_text(message.get("channel") or b"")
            if kind == "subscribe":
                waiter = self._confirmations.get(channel)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            elif kind != "message":
                continue
            elif channel.startswith(self._tick_prefix):
                latest[channel[len(self._tick_prefix):]] = message["data"]
                ticks += 1
            else:
                account_id = self._account_of_channel.get(channel)
                if account_id is not None:
                    for client in self._by_account.get(account_id, ()):
                        client.notify_orders(account_id)
        if ticks > len(latest):
            metrics.TICKS_SUPERSEDED.inc(ticks - len(latest))
        for code, raw in latest.items():
            self._fan_out_tick(code, raw)
            await asyncio.sleep(0)

    def _fan_out_tick(self, code: str, raw: bytes) -> None:
        watchers = self._by_code.get(code)
        if not watchers:
            return
        try:
            quote = decode_quote(raw)
        except MalformedQuote as exc:
            logger.warning("stream: ignoring a malformed tick on %s: %s", code, exc)
            return
        message = protocol.quote("update", self.quote_view(code, quote))
        received = epoch_s(quote.get("received_at"))
        pending = PendingQuote(message, text_frame(message), tick_key(quote), received)
        written = 0
        for client in watchers:
            written += client.offer_tick(code, pending)
        # Counted per tick, not per client: a multiprocess metric costs a pid check and an
        # mmap write on every update.
        if written:
            metrics.QUOTES_SENT.inc(written)
            if received is not None:
                metrics.FANOUT_LATENCY.observe(max(time.time() - received, 0))

    def quote_view(self, code: str, quote: dict[str, Any]) -> dict[str, Any]:
        """The quote as the REST API answers it (api.quotes.service): name, limits, age,
        session, stale. Once per tick, shared by every client."""
        return quote_context(self.resources).view(code, quote)

    async def snapshots(self, codes: list[str]) -> dict[str, tuple[bytes, TickKey]]:
        """The snapshot message of each code (one MGET): the REST quote, or `data: null`.
        At most STREAM_SNAPSHOT_CONCURRENCY at once: thousands of clients subscribing together
        queue here rather than take every connection of the worker's Redis pool."""
        async with self._snapshot_slots:
            quotes = await latest_quotes(self.resources, codes)
        return {code: ((protocol.quote("snapshot", quote), tick_key(quote))
                       if quote is not None else (protocol.quote_missing(code), NO_TICK))
                for code, quote in quotes.items()}

    async def _gap_everything(self, why: str) -> None:
        """Prints may have been missed for every watched code: each client gets a `gap` for its
        codes, then a fresh snapshot of each; every orders subscription re-reads SQL."""
        codes = sorted(self._by_code)
        metrics.GAPS.labels(why).inc()
        snapshots: dict[str, tuple[bytes, TickKey]] = {}
        if codes:
            try:
                snapshots = await self.snapshots(codes)
            except RedisError as exc:
                logger.warning("stream: no snapshots after a gap (%s)", exc)
        for client in list(self._clients):
            mine = sorted(client.codes)
            if mine:
                client.push(protocol.gap(mine))
                for code in mine:
                    if code in snapshots:
                        client.primed(code, *snapshots[code])
            client.notify_orders()

    async def _watch_relayer(self) -> None:
        """A relayer that reconnected upstream (its `reconnects` count moved) or was replaced
        (another `instance`) may have missed prints: a gap. Read from its health hash, which it
        refreshes every second; an absent hash (relayer down) changes nothing until one is back."""
        resources = self.resources
        seen: tuple[str, str] | None = None
        while True:
            await asyncio.sleep(resources.settings.stream_relayer_poll_s)
            try:
                instance, reconnects = await resources.redis.hmget(
                    resources.names.relayer_health, ["instance", "reconnects"])
            except RedisError:
                continue  # the pub/sub reader reports Redis outages
            honour_cancellation()
            if instance is None or reconnects is None:
                continue
            now = (as_text(instance), as_text(reconnects))
            if seen is not None and now != seen:
                logger.info("stream: the relayer reconnected upstream (%s -> %s); gap",
                            seen, now)
                await self._gap_everything("relayer")
            seen = now

    async def _recheck_orders(self) -> None:
        """Every orders subscription re-reads SQL now and then: a notification lost on the way
        (Redis away when the event committed) delays an event by this much at most."""
        while True:
            await asyncio.sleep(self.resources.settings.stream_orders_recheck_s)
            for account_id, watchers in self._by_account.items():
                for client in watchers:
                    client.notify_orders(account_id)

    async def _watch_market(self) -> None:
        while True:
            await asyncio.sleep(self.resources.settings.stream_market_poll_s)
            try:
                now = self._market_now()
            except Exception:  # a calendar bug must not end the hub
                logger.exception("stream: cannot read the market calendar")
                continue
            if self._market is not None and (now["session"], now["trading_day"]) != (
                    self._market["session"], self._market["trading_day"]):
                message = protocol.market_session(now)
                for client in self._clients:
                    if client.market:
                        client.push(message)
            self._market = now

    def _market_now(self) -> dict[str, Any]:
        clock = market_clock(self.resources).model_dump(mode="json")
        data: dict[str, Any] = orjson.loads(orjson.dumps(
            {key: clock[key] for key in ("session", "trading_day", "next_open", "next_close")}))
        return data
