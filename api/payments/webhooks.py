"""PortOne's webhook: verify it, act once per webhook id, and apply what PortOne says of the
payment it names (docs/PAYMENTS.md, "Exactly once" and "When PortOne cannot be asked").

The webhook is only a hint that a payment changed: as `complete` does, the payment is fetched
from PortOne and that answer applied (api.payments.service). Each verified delivery is
remembered (`HandledWebhook`) in the transaction that handles it, or alone when it is ignored, so
a webhook id acts once, ever. A 5xx answer makes PortOne deliver it again later.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from sqlalchemy.orm import Session

from api.errors import ApiError, ServiceUnavailable
from api.payments import service
from api.payments.portone import (
    PortOneNotFound,
    PortOneUnavailable,
    RemotePayment,
    VerifiedWebhook,
    WebhookRejected,
)
from api.payments.schemas import PaymentOut, WebhookAck
from api.resources import Resources

logger = logging.getLogger(__name__)


class InvalidWebhook(ApiError):
    status, code, title = 400, "invalid_webhook", "Invalid webhook"


async def handle_webhook(resources: Resources, body: bytes,
                         headers: Mapping[str, str]) -> WebhookAck:
    """The webhook verified on its raw body and acted on; 400 `invalid_webhook` if it fails
    verification, 503 `portone_unavailable` when PortOne should deliver it again later."""
    try:
        event = resources.portone.verify_webhook(body, headers)
    except WebhookRejected as exc:
        logger.warning("webhook rejected: %s", exc.reason)
        raise InvalidWebhook(f"the webhook could not be verified: {exc.reason}",
                             reason=exc.reason) from exc
    except PortOneUnavailable as exc:
        logger.error("webhook not verifiable: %s", exc)
        raise ServiceUnavailable("webhooks cannot be verified now",
                                 code="portone_unavailable") from exc
    db = resources.db
    store_id = resources.settings.portone_store_id
    if await db.read(service.webhook_seen, event.webhook_id):
        return WebhookAck(status="duplicate")
    if event.payment_id is None or not event.type.startswith("Transaction."):
        return await _ignore(resources, event, "not about a payment")
    if event.store_id not in (None, store_id):
        return await _ignore(resources, event, f"for another store ({event.store_id})")
    if await db.read(service.payment_owner, event.payment_id) is None:
        return await _ignore(resources, event, f"no payment {event.payment_id!r} here")
    try:
        remote = await service.ask_portone(resources, event.payment_id)
    except PortOneNotFound as exc:
        # PortOne announced a payment it cannot find: let it deliver again later.
        logger.warning("webhook %s: %s", event.webhook_id, exc)
        raise ServiceUnavailable("PortOne does not know this payment yet",
                                 code="portone_unavailable") from exc
    try:
        payment = service.counted(await db.run_retrying(_remember_and_sync, event, remote,
                                                        store_id))
    except service.DuplicateWebhook:
        return WebhookAck(status="duplicate")
    return WebhookAck(status="processed", payment_status=payment.status)


def _remember_and_sync(session: Session, event: VerifiedWebhook, remote: RemotePayment,
                       store_id: str) -> PaymentOut:
    service.remember_webhook(session, event.webhook_id, event.type, event.payment_id)
    return service.synced(session, remote.payment_id, remote, store_id)


async def _ignore(resources: Resources, event: VerifiedWebhook, why: str) -> WebhookAck:
    logger.info("webhook %s (%s) ignored: %s", event.webhook_id, event.type, why)
    try:
        await resources.db.run(service.remember_webhook, event.webhook_id, event.type,
                               event.payment_id)
    except service.DuplicateWebhook:
        return WebhookAck(status="duplicate")
    return WebhookAck(status="ignored")
