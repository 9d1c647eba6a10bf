"""Keeping the SQL subscriptions in the relayer's desired set when Redis loses it.

SQL is the truth for admin subscriptions; `NS:subs:desired` mirrors it for the relayer, next
to the topics the relayer seeds itself from RELAYER_SUBSCRIBE. A Redis that comes back empty (no
persistence, FLUSHALL) loses both the set and its marks (`NS:subs:initialised`, one field per
source). The relayer then unsubscribes nothing and puts its seeds back at once; the SQL part is
put back here:

- at every worker's start (`restore_desired_subscriptions`, a startup hook), and
- by a background task in every worker (`keep_desired_set_restored`) that looks at the `sql`
  mark every SUBSCRIPTIONS_RESTORE_INTERVAL_S (one HEXISTS) and, when it is missing, restores
  and nudges the relayer with a resync. A periodic check rather than a rebuild request from the
  relayer: it needs no new channel, works whether the relayer or the API noticed first, and
  costs one command a second per worker.

A restore SADDs every stored topic and sets the mark in one transaction, so the mark never
exists without the topics. Several workers restoring at once write the same members and the
same field: idempotent. `POST .../resync` runs the same restore.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.cancellation import honour_cancellation
from api.models import Subscription
from api.resources import Resources
from relayer.bus import Command, CommandType, DesiredSource, format_utc

logger = logging.getLogger(__name__)


def _stored_topics(session: Session) -> list[str]:
    return list(session.scalars(select(Subscription.topic)))


async def restore_from_sql(resources: Resources) -> int:
    """SADD every SQL topic into the desired set and mark the SQL source loaded, in one
    transaction; how many topics were missing. A stored topic that no longer fits
    RELAYER_TOPIC_TEMPLATE (the operator changed it) is left out, loudly."""
    topics = []
    for topic in await resources.db.read(_stored_topics):
        if resources.topics.code(topic) is None:
            logger.warning("stored subscription %s does not fit the topic template %s: not "
                           "restored (subscribe its code again, and delete the old row)", topic,
                           resources.topics.template)
        else:
            topics.append(topic)
    names = resources.names
    async with resources.redis.pipeline(transaction=True) as pipe:
        if topics:
            pipe.sadd(names.desired_subscriptions, *topics)
        pipe.hset(names.desired_initialised, DesiredSource.SQL.value,
                  format_utc(datetime.now(UTC), millis=True))
        results = await pipe.execute()
    return int(results[0]) if topics else 0


async def desired_set_restored(resources: Resources) -> bool:
    """Whether the desired set holds the SQL subscriptions (its `sql` mark exists)."""
    names = resources.names
    return bool(await resources.redis.hexists(names.desired_initialised,
                                              DesiredSource.SQL.value))


async def _restore_and_nudge(resources: Resources) -> None:
    """Restore; if topics were missing, nudge the relayer to converge now rather than at its
    next check (it notices the new `sql` mark by itself within a second anyway)."""
    restored = await restore_from_sql(resources)
    if restored:
        receivers = await resources.redis.publish(resources.names.commands,
                                                  Command(CommandType.RESYNC).to_json())
        logger.info("restored %d subscriptions into the desired set from SQL; resync sent to "
                    "%d relayer(s)", restored, receivers)


async def restore_desired_subscriptions(resources: Resources) -> None:
    """Startup hook (every worker, idempotent): mirror SQL into the desired set. Redis being
    down at start is logged, not fatal: the API still serves SQL routes, and the background
    check restores the set once Redis answers."""
    try:
        await _restore_and_nudge(resources)
    except RedisError as exc:
        logger.warning("could not restore the desired subscriptions into Redis at start: %s "
                       "(retried every %g s)", exc,
                       resources.settings.subscriptions_restore_interval_s)


async def keep_desired_set_restored(resources: Resources) -> None:
    """Background task of every worker: restore the SQL part of the desired set within
    SUBSCRIPTIONS_RESTORE_INTERVAL_S of Redis losing it. Runs until cancelled at shutdown."""
    interval = resources.settings.subscriptions_restore_interval_s
    failing = False
    while True:
        await asyncio.sleep(interval)
        try:
            if not await desired_set_restored(resources):
                logger.warning("the desired set has lost its SQL subscriptions (Redis restarted "
                               "empty or was flushed): restoring it")
                await _restore_and_nudge(resources)
            honour_cancellation()
            if failing:
                logger.info("the desired-set check works again")
            failing = False
        # Whatever failed (Redis or SQL unreachable, a timeout): this task must outlive it and
        # try again next time. Logged once per streak of failures, not every second.
        except Exception as exc:
            if not failing:
                logger.warning("cannot check or restore the desired set (%s: %s); retrying "
                               "every %g s", type(exc).__name__, exc, interval)
            failing = True
