"""One command round trip to the relayer: is it there, nudge it, wait for its answer.

Called after the desired set already says what should be (docs/ARCHITECTURE.md, "An admin
command": the command is a nudge, the set is the truth), so every outcome leaves the change to
be applied:

    no fresh health hash, or nobody receives the PUBLISH  -> 503 at once
    result within COMMAND_TIMEOUT_S (BLPOP, no polling)    -> 200 with the relayer's answer
    no result in time                                      -> 202 with the command id

"Nobody subscribed to NS:cmd" is the receiver count that PUBLISH returns: the same figure as
PUBSUB NUMSUB, without the race between asking and publishing (and one round trip fewer).
A standby relayer does not listen on NS:cmd, so it counts as nobody.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from api.quotes.service import relayer_health
from api.resources import Resources
from api.subscriptions.schemas import CommandAnswer, Outcome
from relayer.bus import Command, CommandResult

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int  # HTTP status: 200, 202 or 503
    answer: CommandAnswer


async def send_command(resources: Resources, command: Command, *, kept: str) -> Reply:
    """Nudge the relayer with `command` and wait for its result. `kept` says, for the 503 and
    202 messages, what is kept for later ("the subscription is stored", ...)."""
    settings, names = resources.settings, resources.names
    health = await relayer_health(resources)
    if not health.alive:
        return _unavailable(command, (
            f"no relayer is running (its health report is missing or older than "
            f"{settings.relayer_health_max_age_s:g} s); {kept} and will be applied when "
            "the relayer starts"
        ))
    receivers = await resources.redis.publish(names.commands, command.to_json())
    if receivers == 0:
        return _unavailable(command, (
            f"the relayer is not listening for commands (state {health.state}); {kept} "
            "and will be applied when it listens again"
        ))
    popped = await resources.blocking_redis.blpop(
        [names.command_result(command.id)], timeout=settings.command_timeout_s
    )
    if popped is None:
        logger.warning("no answer from the relayer to %s %s within %g s", command.type.value,
                       command.topic or "", settings.command_timeout_s)
        return Reply(202, CommandAnswer(
            success=False,
            message=f"the relayer has not answered yet; {kept} and will be applied",
            topic=command.topic, command_id=command.id, outcome=Outcome.PENDING,
        ))
    result = CommandResult.from_json(popped[1])
    logger.info("relayer answered %s %s: ok=%s %s", command.type.value, command.topic or "",
                result.ok, result.message)
    return Reply(200, CommandAnswer(
        success=result.ok, message=result.message, topic=command.topic,
        command_id=command.id, active=result.active,
        outcome=Outcome.APPLIED if result.ok else Outcome.FAILED,
    ))


def _unavailable(command: Command, message: str) -> Reply:
    logger.warning("%s %s not sent: %s", command.type.value, command.topic or "", message)
    return Reply(503, CommandAnswer(success=False, message=message, topic=command.topic,
                                    command_id=None, outcome=Outcome.RELAYER_UNAVAILABLE))
