"""Converging the upstream subscriptions to the desired set in Redis.

The desired set (`NS:subs:desired`, written by the API) is the truth; a command on `NS:cmd` is
only a nudge to converge now. `reconcile()` compares it with what the current connection has,
subscribes what is missing (paced, with receipts), unsubscribes what is extra, and mirrors the
result into `NS:subs:active`. It runs on start, after every upstream or Redis reconnect, on every
command and on a timer, so a lost nudge is repaired without anyone noticing.

A topic the server refuses is remembered as rejected and not retried by the reconcile loop (for a
STOMP server a refused SUBSCRIBE kills the whole connection, so retrying would be a reconnect
loop); a new explicit subscribe command for it tries once more. Rejections are per process.

The desired set has two sources: RELAYER_SUBSCRIBE, seeded here, and the API's SQL table. Each
marks `NS:subs:initialised` in the same transaction that loads its topics. A Redis that comes
back empty (no persistence, FLUSHALL) has lost the marker with the set, so an empty or partial
set is never read as "unsubscribe everything": until every source has marked it, reconcile only
adds. The seed part is put back here, at once; the SQL part by the API (a check every second,
api.subscriptions.restore), which then nudges with a resync.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from redis.asyncio import Redis
from redis.exceptions import RedisError

from relayer.bus import (
    COMMAND_RESULT_TTL_S,
    BusNames,
    Command,
    CommandResult,
    CommandType,
    DesiredSource,
    TopicTemplate,
    as_text,
    format_utc,
)
from relayer.upstream import SessionClosed, SubscribeRejected, UpstreamSession

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Pacing:
    batch: int  # SUBSCRIBEs sent together
    interval_s: float  # pause between batches (only when more remain)
    max_subscriptions: int  # per connection


@dataclass(slots=True)
class ReconcileReport:
    subscribed: list[str] = field(default_factory=list)
    unsubscribed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # topic -> why
    connected: bool = True
    restored: bool = True  # False: unsubscribes were held back (see DesiredState.restored)


@dataclass(frozen=True, slots=True)
class DesiredState:
    topics: set[str]
    marks: dict[str, str]  # DesiredSource value -> when it loaded its topics

    @property
    def missing_sources(self) -> list[str]:
        return [source.value for source in DesiredSource if source.value not in self.marks]

    @property
    def restored(self) -> bool:
        """Every source has loaded its topics since Redis last lost them: only then does a
        topic's absence mean "not desired"."""
        return not self.missing_sources


class SubscriptionManager:
    def __init__(
        self,
        redis: Redis,
        names: BusNames,
        topics: TopicTemplate,
        pacing: Pacing,
        seeds: list[str],
    ) -> None:
        self._redis = redis
        self._names = names
        self._topics = topics
        self._pacing = pacing
        self._seeds = self._valid_seeds(seeds)
        self._restored = True  # as last seen; a change is logged
        self._lock = asyncio.Lock()
        self.session: UpstreamSession | None = None
        self.rejected: dict[str, str] = {}  # topic -> the server's reason
        # Topics that may have caused an ERROR that named no receipt: tried one at a time.
        self._suspects: set[str] = set()

    @property
    def active_count(self) -> int:
        return len(self.session.active) if self.session else 0

    def _valid_seeds(self, codes_or_topics: list[str]) -> list[str]:
        topics = []
        for item in codes_or_topics:
            try:
                topics.append(self._topics.topic(item))
            except ValueError as exc:
                logger.error("RELAYER_SUBSCRIBE: %s", exc)  # skipped, loudly
        return topics

    async def seed(self) -> None:
        """Add RELAYER_SUBSCRIBE to the desired set and mark the seed source loaded, in one
        transaction (the mark never exists without the topics). On every term's start, and
        whenever the mark is missing (Redis lost its data)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            if self._seeds:
                pipe.sadd(self._names.desired_subscriptions, *self._seeds)
            pipe.hset(self._names.desired_initialised, DesiredSource.SEED.value,
                      format_utc(datetime.now(UTC), millis=True))
            await pipe.execute()
        logger.info("seeded the desired set with %d topics", len(self._seeds))

    async def reconcile(self) -> ReconcileReport:
        async with self._lock:
            return await self._reconcile()

    async def _reconcile(self) -> ReconcileReport:
        state = await self.desired_state()
        if DesiredSource.SEED.value not in state.marks:
            await self.seed()  # our part of a set Redis lost: put it back now
            state = await self.desired_state()
        self._note_restored(state)
        desired = state.topics
        session = self.session
        report = ReconcileReport(connected=session is not None, restored=state.restored)
        if session is None:
            return report
        if state.restored:  # else a topic's absence may only mean "not restored yet"
            for topic in sorted(set(session.active) - desired):
                await session.unsubscribe(topic)
                report.unsubscribed.append(topic)
        missing = sorted(desired - set(session.active) - set(self.rejected))
        room = self._pacing.max_subscriptions - len(session.active)
        for topic in missing[max(room, 0):]:
            report.failed[topic] = (
                f"subscription cap reached ({self._pacing.max_subscriptions} per connection)"
            )
        missing = missing[: max(room, 0)]
        # Suspects go first, alone, so that a refusal is pinned on the right topic this time.
        suspects = [topic for topic in missing if topic in self._suspects]
        batches = [[topic] for topic in suspects]
        rest = [topic for topic in missing if topic not in self._suspects]
        batches += [
            rest[i : i + self._pacing.batch] for i in range(0, len(rest), self._pacing.batch)
        ]
        for index, batch in enumerate(batches):
            if index and self._pacing.interval_s:
                await asyncio.sleep(self._pacing.interval_s)
            results = await session.subscribe(batch)
            stop = False
            for topic, error in results.items():
                if error is None:
                    report.subscribed.append(topic)
                    self._suspects.discard(topic)
                    continue
                if isinstance(error, SubscribeRejected):
                    certain = self._note_refusal(error, alone=len(batch) == 1)
                    report.failed[topic] = (f"rejected by upstream: {error.reason}" if certain
                                            else str(error))
                else:
                    report.failed[topic] = str(error)
                # A refusal (STOMP) or a closed connection: the next batches cannot succeed.
                stop = stop or isinstance(error, SubscribeRejected | SessionClosed)
            if stop:
                break  # the connection is going down (with the ERROR, for a refusal)
        if report.subscribed or report.unsubscribed:
            logger.info(
                "reconciled: +%d -%d, %d active, %d failed",
                len(report.subscribed), len(report.unsubscribed), len(session.active),
                len(report.failed),
            )
        await self.publish_active()
        return report

    def connection_ended(self, session: UpstreamSession) -> None:
        """Forget the connection, keeping what it taught: the topics its server refused.

        The refusal is taken from the session rather than from the reconcile that sent the
        SUBSCRIBE: the ERROR that carries it also ends the connection, which cancels a reconcile
        running alongside it (the one after every connect) before it reads the answer. Without
        this, a topic refused at connect is never recorded and every reconnect sends it again.
        """
        if self.session is session:
            self.session = None
        for refusal in session.refused.values():
            self._note_refusal(refusal)

    def _note_refusal(self, refusal: SubscribeRejected, *, alone: bool = False) -> bool:
        """Remember a refused topic; True if the refusal is pinned on it (then never retried
        by the reconcile loop), False if it is only a suspect (tried alone next time)."""
        topic = refusal.topic
        if not (refusal.certain or alone):
            if topic not in self.rejected:
                self._suspects.add(topic)
            return False
        self._suspects.discard(topic)
        if self.rejected.get(topic) != refusal.reason:
            self.rejected[topic] = refusal.reason
            logger.error("upstream rejected %s: %s (not retried)", topic, refusal.reason)
        return True

    def _note_restored(self, state: DesiredState) -> None:
        if state.restored == self._restored:
            return
        self._restored = state.restored
        if state.restored:
            logger.info("the desired set is restored from every source (%d topics): "
                        "unsubscribing what it does not hold again", len(state.topics))
        else:
            logger.warning(
                "the desired set is not restored from %s yet (Redis lost it?): subscribing "
                "what it holds, unsubscribing nothing until it is",
                " and ".join(state.missing_sources))

    async def marks(self) -> dict[str, str]:
        """`NS:subs:initialised`: which sources have loaded their topics, and when."""
        return _decode_marks(await self._redis.hgetall(self._names.desired_initialised))

    async def desired_state(self) -> DesiredState:
        """The desired set and its marks, read together (one transaction)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.smembers(self._names.desired_subscriptions)
            pipe.hgetall(self._names.desired_initialised)
            members, marks = await pipe.execute()
        return DesiredState(self._expand(members), _decode_marks(marks))

    async def desired_topics(self) -> set[str]:
        """The desired set as full topics; a bare code someone added by hand is expanded."""
        return self._expand(await self._redis.smembers(self._names.desired_subscriptions))

    def _expand(self, members: set[bytes | str]) -> set[str]:
        topics = set()
        for member in members:
            text = as_text(member)
            try:
                topics.add(self._topics.topic(text))
            except ValueError as exc:
                if text not in self.rejected:
                    self.rejected[text] = str(exc)
                    logger.error("ignoring desired entry %r: %s", text, exc)
        return topics

    async def publish_active(self) -> None:
        """Mirror the connection's subscriptions into `NS:subs:active` (empty when down)."""
        active = self.session.active if self.session else {}
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._names.active_subscriptions)
            if active:
                pipe.hset(
                    self._names.active_subscriptions,
                    mapping={topic: sub.to_json() for topic, sub in active.items()},
                )
            await pipe.execute()

    async def handle(self, command: Command) -> CommandResult:
        """Apply one command (by reconciling) and push its result for the API."""
        topic = command.topic
        if command.type is CommandType.SUBSCRIBE and topic:
            # An operator asking again is the one way to retry a rejected topic.
            self.rejected.pop(topic, None)
            self._suspects.discard(topic)
        try:
            report = await self.reconcile()
            result = self._result_for(command, report)
        except RedisError as exc:
            result = CommandResult(command.id, False, topic, f"relayer cannot read Redis: {exc}",
                                   self.active_count)
        await self.push_result(result)
        return result

    def _result_for(self, command: Command, report: ReconcileReport) -> CommandResult:
        active = self.session.active if self.session else {}
        topic = command.topic
        ok: bool
        if not report.connected:
            ok, message = False, (
                "upstream not connected; the desired set is kept and applied on reconnect"
            )
        elif command.type is CommandType.RESYNC or not topic:
            ok = not report.failed
            message = (
                f"resynced: +{len(report.subscribed)} -{len(report.unsubscribed)}"
                if ok else "resync incomplete: " + "; ".join(
                    f"{t}: {why}" for t, why in sorted(report.failed.items()))
            )
            if not report.restored:
                message += " (nothing unsubscribed while the desired set is being restored)"
        elif command.type is CommandType.SUBSCRIBE:
            ok = topic in active
            if ok:
                message = "subscribed" if topic in report.subscribed else "already subscribed"
            elif topic in report.failed:
                message = report.failed[topic]
            elif topic in self.rejected:
                message = f"rejected by upstream: {self.rejected[topic]}"
            else:
                message = "topic is not in the desired set"
        else:
            ok = topic not in active
            if topic in report.unsubscribed:
                message = "unsubscribed"
            elif ok:
                message = "not subscribed"
            elif not report.restored:
                message = ("kept for now: the desired set is being restored after Redis lost "
                           "it; the removal is applied once it is")
            else:
                message = "topic is still in the desired set"
        return CommandResult(command.id, ok, topic, message, len(active))

    async def push_result(self, result: CommandResult) -> None:
        key = self._names.command_result(result.id)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.lpush(key, result.to_json())
                pipe.expire(key, COMMAND_RESULT_TTL_S)
                await pipe.execute()
        except RedisError as exc:
            logger.warning("could not push the result of command %s: %s", result.id, exc)


def _decode_marks(raw: dict[bytes | str, bytes | str]) -> dict[str, str]:
    return {as_text(k): as_text(v) for k, v in raw.items()}
