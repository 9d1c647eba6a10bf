"""One stream connection's work, whatever carries it (api.streams.ws, api.streams.sse): what
each operation does, and the sender that drains the client's buffer onto the socket.

The sender sends, in this order, whatever is ready: control messages (snapshots, errors,
pongs, gaps, market changes), the latest update of each code (coalesced by the hub), then the
user's events from SQL after the last offset sent. So a client that falls behind gets the newest
quote, never a backlog; and the orders channel is read from SQL on every notification from the
last offset sent: a notification lost (Redis away) or doubled costs nothing, and no event is
sent twice or skipped (offsets increase).

A send that blocks beyond STREAM_SEND_TIMEOUT_S, or a control queue past STREAM_MAX_PENDING,
ends the connection as a slow client (`SlowClient`): its transport closes it (4429).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import jwt
from redis.exceptions import RedisError

from api.auth.tokens import Principal
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


class StreamSession:
    def __init__(self, resources: Resources, hub: Hub, principal: Principal,
                 frames: DirectFrames | None = None) -> None:
        self.resources = resources
        self.hub = hub
        self.principal = principal
        settings = resources.settings
        self.client = StreamClient(principal.user_id, settings.stream_max_pending,
                                   frames=frames)
        self.orders_offset: int | None = None  # the last event offset queued
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

    async def subscribe(self, op: Subscribe) -> None:
        if op.channel is Channel.QUOTES:
            await self.subscribe_quotes(op.codes)
        elif op.channel is Channel.ORDERS:
            await self.subscribe_orders(op.since)
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
            await self.hub.unwatch_orders(self.client)
            self.push(protocol.unsubscribed(Channel.ORDERS))
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

    async def subscribe_orders(self, since: str | None) -> None:
        user_id = self.principal.user_id
        db = self.resources.db
        try:
            offset = None if since is None else events.parse_offset(since)
        except events.InvalidOffset as exc:
            raise ProtocolError(exc.code, exc.detail) from None
        # Listening before reading SQL: an event committed after the read is notified. A
        # notification that arrives before the read has returned finds no offset yet and is
        # dropped by the sender, so SQL is read again once the offset is set; and
        # `subscribed` goes out only then: every event committed after the client has it is
        # delivered.
        await self.hub.watch_orders(self.client, self.resources.names.user_events(user_id))
        if offset is None:
            self.orders_offset = await db.read(events.latest_offset, user_id) or 0
            self.push(protocol.subscribed(Channel.ORDERS))
            self.client.notify_orders()
            return
        self.push(protocol.subscribed(Channel.ORDERS))
        batch = self.resources.settings.stream_orders_batch
        # events_after then is_expired in one snapshot (events.replay): a purge in between
        # costs a needless reset, never a gap.
        replay = await db.read(events.replay, user_id, offset, batch)
        if replay.reset:
            # The client refetches over REST and goes on from now.
            self.orders_offset = await db.read(events.latest_offset, user_id) or 0
            self.push(protocol.orders_reset())
            self.client.notify_orders()
            return
        self.orders_offset = offset
        self._queue_events(replay.events)
        self.client.notify_orders()  # the rest, if there was more than one batch

    def _queue_events(self, batch: list[events.UserEventOut]) -> None:
        for event in batch:
            self.client.push_event(event.message().encode(), event.offset)
            self.orders_offset = int(event.offset)

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
                    client.orders_due = False
                    await self._send_orders()

    async def _send_orders(self) -> None:
        """Queue the user's events after the last offset queued, a batch at a time: the
        control queue's bound still holds (the pump sends them before reading more)."""
        if self.orders_offset is None:
            return
        batch = self.resources.settings.stream_orders_batch
        try:
            found = await self.resources.db.read(
                events.events_after, self.principal.user_id, self.orders_offset, batch)
        except Exception as exc:  # the database is away: try again, the offset holds
            logger.warning("stream: cannot read user %d's events (%s); retrying",
                           self.principal.user_id, type(exc).__name__)
            asyncio.get_running_loop().call_later(ORDERS_RETRY_S, self.client.notify_orders)
            return
        if self.client.orders:
            self._queue_events(found)
            if len(found) == batch:
                self.client.notify_orders()

def verify_token(resources: Resources, token: str) -> tuple[Principal, float]:
    """The principal of a valid access token and when it expires (epoch seconds);
    Unauthorized otherwise. The signature is checked by the process's token cache; `exp` is
    read from the token it has just accepted."""
    principal = resources.access_tokens.verify(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    return principal, float(claims["exp"])
