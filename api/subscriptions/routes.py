"""HTTP routes of api.subscriptions (mounted under /api/v1/admin/websocket/subscriptions).

Every route needs the admin role (router dependency). Subscribe, unsubscribe and resync answer
`{"success", "message", ...}` with status 200 (the relayer answered), 202 (it has not answered
within COMMAND_TIMEOUT_S) or 503 (no relayer alive): the body shape the existing clients read,
not problem+json, since the change is stored in every case.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from api.auth.deps import AdminUser, admin_principal
from api.deps import ResourcesDep
from api.openapi import Responses, problems
from api.subscriptions import service
from api.subscriptions.commands import Reply
from api.subscriptions.schemas import CommandAnswer, ResyncAnswer, SubscriptionList

router = APIRouter(tags=["admin: subscriptions"], dependencies=[Depends(admin_principal)])

TopicQuery = Annotated[str, Query(
    description="a full topic (/topic/v1/kr/stock/trade/A000660) or a bare code (A000660)",
)]


def _command_responses(model: type[CommandAnswer]) -> Responses:
    """The answers that carry the command's outcome in `model`, not a problem."""
    return {
        202: {"model": model, "description": "stored; the relayer has not answered yet"},
        503: {"model": model, "description": "stored; no relayer is alive to apply it now "
                                             "(this body, not a problem)"},
    }


_INVALID_TOPIC = problems({422: "`invalid_topic`"})


def _answer(reply: Reply, response: Response) -> CommandAnswer:
    response.status_code = reply.status
    return reply.answer


@router.get("", summary="Stored, desired and active subscriptions")
async def list_subscriptions(resources: ResourcesDep) -> SubscriptionList:
    return await service.list_subscriptions(resources)


@router.post("/subscribe", responses={**_command_responses(CommandAnswer), **_INVALID_TOPIC},
             summary="Subscribe a topic upstream")
async def subscribe(topic: TopicQuery, resources: ResourcesDep, admin: AdminUser,
                    response: Response) -> CommandAnswer:
    return _answer(await service.subscribe(resources, topic, admin), response)


@router.delete("/unsubscribe", summary="Unsubscribe a topic upstream",
               responses={**_command_responses(CommandAnswer), **_INVALID_TOPIC,
                          **problems({404: "`subscription_not_found`"})})
async def unsubscribe(topic: TopicQuery, resources: ResourcesDep, admin: AdminUser,
                      response: Response) -> CommandAnswer:
    return _answer(await service.unsubscribe(resources, topic, admin), response)


@router.post("/resync", response_model=ResyncAnswer, responses=_command_responses(ResyncAnswer),
             summary="Rebuild the desired set from SQL and make the relayer converge")
async def resync(resources: ResourcesDep, admin: AdminUser, response: Response) -> CommandAnswer:
    return _answer(await service.resync(resources, admin), response)
