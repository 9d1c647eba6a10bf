"""The relayer daemon: one upstream connection, relayed into Redis, for as long as we lead.

Task tree (every task has an owner; a stop cancels from the top):

    Relayer.run
     +-- TickPublisher.run              flushes buffered quotes to Redis
     +-- _report_health                 NS:relayer:health every second, while leading
     +-- _lead                          standby until the lease is ours, then one term:
          +-- Lease.hold                renews; LeadershipLost ends the term
          +-- _listen_for_commands      NS:cmd nudges -> SubscriptionManager.handle
          +-- _reconcile_periodically   repairs lost nudges and a desired set Redis lost
          +-- _keep_upstream            connect, reconcile, read; backoff; reconnect

This module decides *when* things happen; what happens lives in the modules it calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from datetime import UTC, datetime

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from relayer.backoff import Backoff
from relayer.bus import (
    Command,
    CommandResult,
    Quote,
    RelayerState,
    format_utc,
)
from relayer.health import HealthReporter, RelayerStats
from relayer.intake import TickIntake
from relayer.lease import LeadershipLost, Lease
from relayer.publisher import TickPublisher
from relayer.quotes import QuoteBuilder
from relayer.settings import RelayerSettings
from relayer.subscriptions import Pacing, SubscriptionManager
from relayer.upstream import AuthRejected, Connector, UpstreamSession

logger = logging.getLogger(__name__)


class Relayer:
    def __init__(
        self,
        settings: RelayerSettings,
        redis: Redis,
        pubsub_redis: Redis,
        connector: Connector,
        *,
        instance: str | None = None,
    ) -> None:
        self._settings = settings
        self._redis = redis
        self._pubsub_redis = pubsub_redis
        self._connector = connector
        self._names = settings.names
        self._topics = settings.topics
        self._instance = instance or uuid.uuid4().hex[:12]
        self.stats = RelayerStats(upstream=settings.upstream_display, instance=self._instance)
        self._builder = QuoteBuilder()
        self._publisher = TickPublisher(
            redis,
            self._names,
            quote_ttl_s=settings.quote_ttl_s,
            stream_maxlen=settings.tick_stream_maxlen,
            max_batch=settings.relayer_flush_max_batch,
            max_buffered=settings.relayer_buffer_max_ticks,
        )
        self._subscriptions = SubscriptionManager(
            redis,
            self._names,
            self._topics,
            Pacing(
                batch=settings.relayer_subscribe_batch,
                interval_s=settings.relayer_subscribe_batch_interval_s,
                max_subscriptions=settings.relayer_max_subscriptions,
            ),
            seeds=settings.relayer_subscribe,
        )
        self._lease = Lease(
            redis, self._names.relayer_leader, self._instance, settings.relayer_lease_ttl_ms
        )
        self._intake = TickIntake(self._builder, self._publisher, self.stats)
        self._health = HealthReporter(redis, self._names, settings.relayer_health_ttl_s)
        self._leading = False
        self._stopping = False
        self._stop_requested = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    def request_stop(self) -> None:
        """Ask for a graceful stop (SIGTERM): DISCONNECT upstream, release the lease, exit."""
        self._stop_requested.set()

    async def run(self) -> None:
        logger.info("relayer %s starting: upstream %s, namespace %r",
                    self._instance, self.stats.upstream, self._names.ns)
        async with asyncio.TaskGroup() as tasks:
            publishing = tasks.create_task(self._publisher.run(), name="publisher")
            reporting = tasks.create_task(self._report_health(), name="health")
            leading = tasks.create_task(self._lead(), name="lead")
            await self._stop_requested.wait()

            logger.info("stopping")
            self._stopping = True
            self.stats.state = RelayerState.STOPPING
            await self._write_health()
            leading.cancel()  # closes the upstream gracefully and releases the lease
            await asyncio.wait([leading])
            reporting.cancel()
            try:
                async with asyncio.timeout(self._settings.relayer_disconnect_timeout_s):
                    await self._publisher.drain()
            except (TimeoutError, RedisError) as exc:
                logger.warning("%d ticks not written at exit: %r", self._publisher.pending, exc)
            publishing.cancel()
            with contextlib.suppress(RedisError):
                await self._health.delete()
        logger.info("stopped")

    async def _lead(self) -> None:
        while True:
            self.stats.state = RelayerState.STANDBY
            await self._lease.acquire()
            self._leading = True
            try:
                async with asyncio.TaskGroup() as term:
                    term.create_task(self._lease.hold(), name="lease")
                    term.create_task(self._listen_for_commands(), name="commands")
                    term.create_task(self._reconcile_periodically(), name="reconcile")
                    term.create_task(self._keep_upstream(), name="upstream")
            except* LeadershipLost as lost:
                logger.error("lost leadership (%s); upstream disconnected, standing by",
                             lost.exceptions[0])
            finally:
                self._leading = False
                if self._stopping:
                    await self._lease.release()

    # ------------------------------------------------------------------ upstream

    async def _keep_upstream(self) -> None:
        backoff = self._backoff()
        first = True
        with contextlib.suppress(RedisError):
            await self._subscriptions.seed()
        while True:
            self.stats.state = RelayerState.CONNECTING
            try:
                session = await self._connector.open(self._intake)
            except AuthRejected as exc:
                delay = self._settings.relayer_auth_failure_delay_s
                logger.error(
                    "upstream %s refused our credentials: %s. Check the RELAYER_* / KIS_* "
                    "credential settings; retrying in %.0fs", self.stats.upstream, exc, delay)
                await self._pause(delay)
                continue
            except Exception as exc:  # any failure to connect (network, TLS, protocol): retry
                delay = backoff.next_delay()
                logger.warning("cannot connect to %s: %s; retrying in %.1fs",
                               self.stats.upstream, _describe(exc), delay)
                await self._pause(delay)
                continue

            if not first:
                self.stats.reconnects += 1
            first = False
            connected = time.monotonic()
            self.stats.state = RelayerState.CONNECTED
            self.stats.connected_at = format_utc(datetime.now(UTC))
            logger.info("connected to %s", self.stats.upstream)
            try:
                await self._serve(session)
            except Exception as exc:  # the connection ended, whatever the reason: reconnect
                if self._stopping:
                    # A stop raced the connection's end and the error replaced the
                    # cancellation: we were asked to stop, not to reconnect. (Task.cancelling()
                    # cannot tell: a TaskGroup cancels its parent when a child fails.)
                    raise asyncio.CancelledError from exc
                logger.warning("upstream connection ended: %s", _describe(exc))
            finally:
                self._subscriptions.connection_ended(session)
                await session.close(graceful=self._stopping)
                with contextlib.suppress(RedisError):
                    await self._subscriptions.publish_active()
            if time.monotonic() - connected >= self._settings.relayer_healthy_after_s:
                backoff.reset()
            delay = backoff.next_delay()
            logger.info("reconnecting in %.1fs", delay)
            await self._pause(delay)

    async def _serve(self, session: UpstreamSession) -> None:
        self._subscriptions.session = session
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(session.run(), name="read")
                tasks.create_task(self._after_connect(), name="resubscribe")
        except* Exception as group:
            raise group.exceptions[0] from None

    async def _after_connect(self) -> None:
        try:
            await self._seed_day_statistics()
            await self._subscriptions.reconcile()
        except RedisError as exc:
            logger.warning("reconcile after connect failed (%s); the timer retries", exc)

    async def _seed_day_statistics(self) -> None:
        """Resume today's open/high/low from the quotes in Redis (after a restart)."""
        topics = await self._subscriptions.desired_topics()
        codes = [code for topic in topics if (code := self._topics.code(topic))]
        if not codes:
            return
        for raw in await self._redis.mget([self._names.quote(code) for code in codes]):
            if raw:
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    self._builder.seed_day(Quote.from_json(raw))

    # ------------------------------------------------------------------ commands

    async def _listen_for_commands(self) -> None:
        backoff = self._backoff()
        while True:
            pubsub = self._pubsub_redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._names.commands)
                logger.info("listening for commands on %s", self._names.commands)
                backoff.reset()
                # Anything published while we were away is lost: converge to the desired set.
                await self._subscriptions.reconcile()
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is not None and message["type"] == "message":
                        await self._handle_command(message["data"])
            except RedisError as exc:
                delay = backoff.next_delay()
                logger.warning("command channel lost (%s); resubscribing in %.1fs", exc, delay)
                await asyncio.sleep(delay)
            finally:
                with contextlib.suppress(RedisError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _handle_command(self, raw: bytes) -> None:
        try:
            command = Command.from_json(raw)
        except (ValueError, orjson.JSONDecodeError) as exc:
            logger.warning("ignoring an invalid command %r: %s", raw[:200], exc)
            await self._reject_command(raw, str(exc))
            return
        if command.topic is not None:
            try:
                command = Command(command.type, self._topics.topic(command.topic), command.id,
                                  command.ts)
            except ValueError as exc:
                await self._reject_command(raw, str(exc))
                return
        result = await self._subscriptions.handle(command)
        logger.info("command %s %s %s -> %s (%s)", command.id, command.type.value,
                    command.topic or "", "ok" if result.ok else "failed", result.message)

    async def _reject_command(self, raw: bytes, why: str) -> None:
        """Answer a command we cannot apply, if it carries an id to answer to."""
        try:
            command_id = orjson.loads(raw).get("id")
        except (orjson.JSONDecodeError, AttributeError):
            return
        if isinstance(command_id, str) and command_id:
            await self._subscriptions.push_result(CommandResult(
                command_id, False, None, f"invalid command: {why}",
                self._subscriptions.active_count,
            ))

    async def _reconcile_periodically(self) -> None:
        """A full reconcile every RELAYER_RECONCILE_INTERVAL_S repairs lost nudges. In between,
        a look at the desired set's marks every RELAYER_DESIRED_CHECK_INTERVAL_S (one HGETALL)
        notices within a second that Redis lost the set (our seeds are put back at once) or
        that the API restored it, even if its nudge was lost: both change the marks."""
        settings = self._settings
        every = min(settings.relayer_desired_check_interval_s,
                    settings.relayer_reconcile_interval_s)
        reconciled_at = time.monotonic()
        seen: dict[str, str] | None = None
        while True:
            await asyncio.sleep(every)
            try:
                marks = await self._subscriptions.marks()
                due = time.monotonic() - reconciled_at >= settings.relayer_reconcile_interval_s
                if due or marks != seen:
                    await self._subscriptions.reconcile()
                    reconciled_at = time.monotonic()
                seen = marks
            except RedisError as exc:
                logger.warning("periodic reconcile failed: %s", exc)

    # ------------------------------------------------------------------ health

    async def _report_health(self) -> None:
        while True:
            if self._leading:
                await self._write_health()
            await asyncio.sleep(self._settings.relayer_health_interval_s)

    async def _write_health(self) -> None:
        try:
            await self._health.write(
                self.stats,
                subscriptions=self._subscriptions.active_count,
                rejected=list(self._subscriptions.rejected),
                dropped=self._publisher.dropped_total,
                written=self._publisher.ticks_written_total,
                last_write_at=self._publisher.last_write_at,
            )
        except RedisError as exc:
            logger.debug("health write failed: %s", exc)

    # ------------------------------------------------------------------ helpers

    def _backoff(self) -> Backoff:
        s = self._settings
        return Backoff(s.relayer_backoff_initial_s, s.relayer_backoff_max_s,
                       s.relayer_backoff_factor)

    async def _pause(self, delay: float) -> None:
        if self._stopping:  # an error may have replaced the cancellation of a stop
            raise asyncio.CancelledError
        self.stats.state = RelayerState.BACKOFF
        await asyncio.sleep(delay)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

