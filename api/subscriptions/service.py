"""Admin market-data subscriptions: SQL is the truth, the Redis desired set mirrors it.

Subscribe and unsubscribe change SQL first, then the desired set (`NS:subs:desired`), then nudge
the relayer and report what it answered (api.subscriptions.commands). The desired set may also
hold topics the relayer seeded itself from RELAYER_SUBSCRIBE (no SQL row): they are listed, and
unsubscribing them works.

A Redis that restarts empty loses the desired set. Every API worker puts the SQL part back at
start and within a second at any time after (api.subscriptions.restore), and an admin can
rebuild it at any time with `POST .../resync`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.auth.tokens import Principal
from api.errors import NotFound, Unprocessable
from api.instruments.codes import parse_code
from api.instruments.gate import known_instruments
from api.models import Subscription
from api.quotes.service import relayer_health
from api.resources import Resources
from api.subscriptions.commands import Reply, send_command
from api.subscriptions.restore import restore_from_sql
from api.subscriptions.schemas import (
    RelayerSummary,
    ResyncAnswer,
    SubscriptionList,
    SubscriptionOut,
)
from relayer.bus import ActiveSubscription, Command, CommandType

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Target:
    topic: str
    code: str


def parse_topic(resources: Resources, text: str) -> Target:
    """A bare code (`A000660`, `000660`) expanded with the topic template, or a full topic that
    is the template around a valid code; 422 `invalid_topic` for anything else."""
    try:
        topic = resources.topics.topic(parse_code(text))
    except ValueError:
        try:
            topic = resources.topics.topic(text)
        except ValueError as exc:
            raise Unprocessable(str(exc), code="invalid_topic") from exc
    code = resources.topics.code(topic)
    assert code is not None  # TopicTemplate.topic only returns topics around a valid code
    return Target(topic, code)


# SQL units of work (each runs in one transaction through Database.run).


def _store(session: Session, target: Target, created_by: int) -> bool:
    """Add the row unless it exists; True if added."""
    if session.scalar(select(Subscription.id).where(Subscription.topic == target.topic)):
        return False
    session.add(Subscription(topic=target.topic, code=target.code, created_by=created_by))
    session.flush()
    return True


def _remove(session: Session, topic: str) -> bool:
    """Delete the row if it exists; True if deleted."""
    row = session.scalar(select(Subscription).where(Subscription.topic == topic))
    if row is None:
        return False
    session.delete(row)
    return True


def _stored(session: Session) -> list[Subscription]:
    return list(session.scalars(select(Subscription).order_by(Subscription.topic)))


# Service functions, one per route.


async def subscribe(resources: Resources, topic_text: str, admin: Principal) -> Reply:
    target = parse_topic(resources, topic_text)
    # Only instruments of the master (listed or halted) are relayed: a typo or a delisted code
    # would cost an upstream subscription that never prints (api.instruments.gate).
    await known_instruments(resources, [target.code])
    try:
        added = await resources.db.run(_store, target, admin.user_id)
    except IntegrityError:
        added = False  # a concurrent request stored the same topic first: same end state
    await resources.redis.sadd(resources.names.desired_subscriptions, target.topic)
    logger.info("admin %s subscribes %s (%s)", admin.user_id, target.topic,
                "new" if added else "already stored")
    return await send_command(resources, Command(CommandType.SUBSCRIBE, target.topic),
                              kept="the subscription is stored")


async def unsubscribe(resources: Resources, topic_text: str, admin: Principal) -> Reply:
    target = parse_topic(resources, topic_text)
    names = resources.names
    deleted = await resources.db.run(_remove, target.topic)
    # A bare code someone added by hand names the same subscription (the relayer expands it).
    removed = await resources.redis.srem(names.desired_subscriptions, target.topic, target.code)
    if not deleted and not removed and not await resources.redis.hexists(
        names.active_subscriptions, target.topic
    ):
        raise NotFound(f"{target.topic} is not subscribed (neither stored nor desired nor "
                       "active)", code="subscription_not_found")
    logger.info("admin %s unsubscribes %s", admin.user_id, target.topic)
    return await send_command(resources, Command(CommandType.UNSUBSCRIBE, target.topic),
                              kept="the removal is stored")


async def resync(resources: Resources, admin: Principal) -> Reply:
    """Rebuild the desired set from SQL, then ask the relayer to converge to it."""
    restored = await restore_from_sql(resources)
    desired = await resources.redis.scard(resources.names.desired_subscriptions)
    logger.info("admin %s resyncs: %d topics restored, %d desired", admin.user_id, restored,
                desired)
    reply = await send_command(resources, Command(CommandType.RESYNC),
                               kept="the desired set is restored")
    answer = ResyncAnswer(**reply.answer.model_dump(), restored=restored, desired_count=desired)
    return Reply(reply.status, answer)


async def list_subscriptions(resources: Resources) -> SubscriptionList:
    names = resources.names
    rows = {row.topic: row for row in await resources.db.read(_stored)}
    async with resources.redis.pipeline(transaction=False) as pipe:
        pipe.smembers(names.desired_subscriptions)
        pipe.hgetall(names.active_subscriptions)
        members, active_raw = await pipe.execute()
    desired = {member.decode() for member in members}
    active = {topic.decode(): _active(value) for topic, value in active_raw.items()}
    health = await relayer_health(resources)
    subscriptions = []
    for topic in sorted(rows.keys() | desired | active.keys()):
        row, sub = rows.get(topic), active.get(topic)
        subscriptions.append(SubscriptionOut(
            topic=topic,
            code=resources.topics.code(topic) or (row.code if row else None),
            stored=row is not None,
            desired=topic in desired,
            active=topic in active,
            sub_id=sub.sub_id if sub else None,
            since=sub.since if sub else None,
            created_at=row.created_at if row else None,
            created_by=row.created_by if row else None,
        ))
    return SubscriptionList(
        subscriptions=subscriptions, desired_count=len(desired), active_count=len(active),
        relayer=RelayerSummary(alive=health.alive, state=health.state),
    )


def _active(raw: bytes) -> ActiveSubscription | None:
    try:
        return ActiveSubscription.from_json(raw)
    except (ValueError, KeyError, TypeError):
        logger.warning("unreadable entry in the active subscriptions hash: %.80r", raw)
        return None
