"""One stream connection's work, whatever carries it (api.streams.ws, api.streams.sse): what
each operation does, and the sender that drains the client's buffer onto the socket.

The sender sends, in this order, whatever is ready: control messages (snapshots, errors,
pongs, gaps, market changes), the latest update of each code (coalesced by the hub), then the
events from SQL of each portfolio followed, after the last offset sent of that portfolio. So a
client that falls behind gets the newest quote, never a backlog; and the orders channel is read
from SQL on every notification from the last offset sent: a notification lost (Redis away) or
doubled costs nothing, and no event is sent twice or skipped (offsets increase).

The orders channel follows portfolios, each an account with an event log of its own
(api.streams.events): the default portfolio (the user's own account, chosen with no SQL) unless
the client names another with `portfolio_id`, which must be a live portfolio of the user
(api.portfolios.service.account_of; `portfolio_not_found` otherwise). One connection may follow
several, one subscription per portfolio (`OrdersFeed`), each with its own offset, resumed and
reset on its own; the messages of a portfolio named by an id carry that `portfolio_id`, those of
the default portfolio followed without one are exactly what they were before portfolios.

A send that blocks beyond STREAM_SEND_TIMEOUT_S, or a control queue past STREAM_MAX_PENDING,
ends the connection as a slow client (`SlowClient`): its transport closes it (4429).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import jwt
from redis.exceptions import RedisError

from api.auth.tokens import Principal
from api.errors import NotFound
from api.portfolios.service import account_of
from api.resources import Resources
from api.streams import events, metrics, protocol
from api.streams.fanout import Hub, StreamClient
from api.streams.frames import DirectFrames
from api.streams.protocol import Channel, ProtocolError, Subscribe, Unsubscribe

logger = logging.getLogger(__name__)

# send(message, event id): the event id is the orders offset (SSE `id:`), None otherwise.
Send = Callable[[bytes, str | None], Awaitable[None]]

# A failed SQL read of the orders channel is tried again after this long.
ORDERS_RETRY_S = 1.0


class SlowClient(Exception):
    """The client cannot keep up; its connection is closed (CloseCode.SLOW_CLIENT)."""


@dataclass(frozen=True, slots=True)
class OrdersSource:
    """The portfolio an orders subscription follows: its account (whose event log is read) and
    the id the client named it by (None: the default portfolio, named by no id)."""

    account_id: int
    portfolio_id: int | None


async def orders_source(resources: Resources, principal: Principal,
                        portfolio_id: int | None) -> OrdersSource:
    """The default portfolio without an id, with no SQL (every client that knows nothing of
    portfolios); else the user's live portfolio of that id, read as REST's X-Portfolio-Id is
    (api.portfolios.deps). NotFound `portfolio_not_found` for anything else, another user's
    portfolio and a deleted one included."""
    if portfolio_id is None:
        return OrdersSource(principal.user_id, None)
    account_id = await resources.db.read(account_of, principal.user_id, portfolio_id)
    return OrdersSource(account_id, portfolio_id)


@dataclass(eq=False, slots=True)
class OrdersFeed:
    """One orders subscription: a portfolio's events, sent after `offset`. A new subscription to
    the same portfolio is a new feed (the sender drops what it read for the old one)."""

    source: OrdersSource
    offset: int | None = None  # the last event offset queued; None until the first read


class StreamSession:
    def __init__(self, resources: Resources, hub: Hub, principal: Principal,
                 frames: DirectFrames | None = None) -> None:
        self.resources = resources
        self.hub = hub
        self.principal = principal
        settings = resources.settings
        self.client = StreamClient(principal.user_id, settings.stream_max_pending,
                                   frames=frames)
        self.feeds: dict[int, OrdersFeed] = {}  # the orders subscriptions, by account
        self._closed = False

    async def __aenter__(self) -> StreamSession:
        self.hub.add(self.client)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._closed = True
        await self.hub.remove(self.client)

    def push(self, message: bytes) -> None:
        self.client.push(message)

    # --- Operations ---------------------------------------------------------------------------

    async def subscribe(self, op: Subscribe, source: OrdersSource | None = None) -> None:
        """`source`: the orders op's portfolio when the caller has resolved it already (SSE,
        which answers 404 before its stream starts); else it is resolved here."""
        if op.channel is Channel.QUOTES:
            await self.subscribe_quotes(op.codes)
        elif op.channel is Channel.ORDERS:
            await self.subscribe_orders(op.since, op.portfolio_id, source)
        else:
            data = self.hub.watch_market(self.client)
            self.push(protocol.subscribed(Channel.MARKET))
            self.push(protocol.market_session(data))
            metrics.SUBSCRIPTIONS.labels("market").inc()

    async def unsubscribe(self, op: Unsubscribe) -> None:
        if op.channel is Channel.QUOTES:
            codes = op.codes or tuple(sorted(self.client.codes | self.client.priming))
            gone = await self.hub.unwatch_codes(self.client, codes)
            self.push(protocol.unsubscribed(Channel.QUOTES, tuple(gone)))
        elif op.channel is Channel.ORDERS:
            await self.unsubscribe_orders(op.portfolio_id)
        else:
            if self.client.market:
                metrics.SUBSCRIPTIONS.labels("market").dec()
            self.client.market = False
            self.push(protocol.unsubscribed(Channel.MARKET))

    async def subscribe_quotes(self, codes: tuple[str, ...]) -> None:
        limit = self.resources.settings.stream_max_codes
        watched = self.client.codes | self.client.priming
        total = len(watched | set(codes))
        if total > limit:
            raise ProtocolError("too_many_codes",
                                f"{total} codes would be watched; at most {limit} per "
                                "connection", max_codes=limit)
        # Subscribed (confirmed by Redis) before the snapshot is read: a tick published after
        # the read reaches the client as an update; one before it is in the snapshot.
        new = await self.hub.watch_codes(self.client, codes)
        self.push(protocol.subscribed(Channel.QUOTES, codes))
        if not new:
            return
        try:
            snapshots = await self.hub.snapshots(new)
        except RedisError:
            # Updates still flow when Redis is back; the gap then says what was missed.
            for code in new:
                self.client.priming.discard(code)
            raise ProtocolError("redis_unavailable",
                                "no snapshot: Redis is unreachable; updates follow when it "
                                "answers", codes=new) from None
        for code in new:
            if code in self.client.priming:  # not unsubscribed meanwhile
                self.client.primed(code, *snapshots[code])

    async def subscribe_orders(self, since: str | None, portfolio_id: int | None,
                               source: OrdersSource | None = None) -> None:
        try:
            offset = None if since is None else events.parse_offset(since)
        except events.InvalidOffset as exc:
            raise ProtocolError(exc.code, exc.detail) from None
        if source is None:
            source = await self._source(portfolio_id)
        account_id, db = source.account_id, self.resources.db
        # A subscription to a portfolio already followed starts it over from this `since`.
        feed = self.feeds[account_id] = OrdersFeed(source)
        # Listening before reading SQL: an event committed after the read is notified. A
        # notification that arrives before the read has returned finds no offset yet and is
        # dropped by the sender, so SQL is read again once the offset is set; and
        # `subscribed` goes out only then: every event committed after the client has it is
        # delivered.
        await self.hub.watch_orders(self.client, account_id,
                                    self.resources.names.user_events(account_id))
        subscribed = protocol.subscribed(Channel.ORDERS, portfolio_id=source.portfolio_id)
        if offset is None:
            feed.offset = await db.read(events.latest_offset, account_id) or 0
            self.push(subscribed)
            self.client.notify_orders(account_id)
            return
        self.push(subscribed)
        batch = self.resources.settings.stream_orders_batch
        # events_after then is_expired in one snapshot (events.replay): a purge in between
        # costs a needless reset, never a gap.
        replay = await db.read(events.replay, account_id, offset, batch)
        if replay.reset:
            # The client refetches over REST and goes on from now.
            feed.offset = await db.read(events.latest_offset, account_id) or 0
            self.push(protocol.orders_reset(source.portfolio_id))
            self.client.notify_orders(account_id)
            return
        feed.offset = offset
        self._queue_events(feed, replay.events)
        self.client.notify_orders(account_id)  # the rest, if there was more than one batch

    async def unsubscribe_orders(self, portfolio_id: int | None) -> None:
        """Stop following a portfolio: the default one without an id. An id is first looked
        for among the feeds (no SQL, and a portfolio deleted since can still be left), then
        resolved (the default portfolio's id, when it was followed without one)."""
        if portfolio_id is None:
            account_id = self.principal.user_id
        else:
            named = [feed.source.account_id for feed in self.feeds.values()
                     if feed.source.portfolio_id == portfolio_id]
            account_id = named[0] if named else (await self._source(portfolio_id)).account_id
        if self.feeds.pop(account_id, None) is not None:
            await self.hub.unwatch_orders(self.client, account_id)
        self.push(protocol.unsubscribed(Channel.ORDERS, portfolio_id=portfolio_id))

    async def _source(self, portfolio_id: int | None) -> OrdersSource:
        try:
            return await orders_source(self.resources, self.principal, portfolio_id)
        except NotFound as exc:
            raise ProtocolError(exc.code, exc.detail, portfolio_id=portfolio_id) from None

    def _queue_events(self, feed: OrdersFeed, batch: list[events.UserEventOut]) -> None:
        portfolio_id = feed.source.portfolio_id
        for event in batch:
            self.client.push_event(event.message(portfolio_id).encode(), event.offset)
            feed.offset = int(event.offset)

    # --- The sender -------------------------------------------------------------------------

    async def pump(self, send: Send) -> None:
        """Send whatever is ready, forever (until cancelled, or SlowClient)."""
        client = self.client
        timeout = self.resources.settings.stream_send_timeout_s

        async def bounded(message: bytes, event_id: str | None, channel: str) -> None:
            client.sending = True  # the hub's direct writes wait (api.streams.fanout)
            try:
                async with asyncio.timeout(timeout):
                    await send(message, event_id)
            except TimeoutError:
                raise SlowClient(f"a send blocked for {timeout}s") from None
            finally:
                client.sending = False
            metrics.MESSAGES.labels(channel).inc()

        while True:
            await client.wake.wait()
            client.wake.clear()
            while client.has_output():
                if client.overflowed:
                    raise SlowClient(f"more than {client.max_control} messages pending")
                while client.control:
                    message, event_id = client.control.popleft()
                    await bounded(message, event_id,
                                  "control" if event_id is None else "orders")
                for pending in client.take_quotes():
                    await bounded(pending.message, None, "quotes")
                    if pending.received is not None:
                        metrics.FANOUT_LATENCY.observe(max(time.time() - pending.received, 0))
                if client.orders_due:
                    due, client.orders_due = client.orders_due, set()
                    for account_id in sorted(due):
                        await self._send_orders(account_id)

    async def _send_orders(self, account_id: int) -> None:
        """Queue a followed account's events after its last offset queued, a batch at a time:
        the control queue's bound still holds (the pump sends them before reading more)."""
        feed = self.feeds.get(account_id)
        if feed is None or feed.offset is None:
            return
        batch = self.resources.settings.stream_orders_batch
        try:
            found = await self.resources.db.read(
                events.events_after, account_id, feed.offset, batch)
        except Exception as exc:  # the database is away: try again, the offset holds
            logger.warning("stream: cannot read account %d's events (%s); retrying",
                           account_id, type(exc).__name__)
            asyncio.get_running_loop().call_later(ORDERS_RETRY_S, self.client.notify_orders,
                                                  account_id)
            return
        if self.feeds.get(account_id) is feed:  # neither left nor started over meanwhile
            self._queue_events(feed, found)
            if len(found) == batch:
                self.client.notify_orders(account_id)

def verify_token(resources: Resources, token: str) -> tuple[Principal, float]:
    """The principal of a valid access token and when it expires (epoch seconds);
    Unauthorized otherwise. The signature is checked by the process's token cache; `exp` is
    read from the token it has just accepted."""
    principal = resources.access_tokens.verify(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    return principal, float(claims["exp"])
