"""Stripe webhooks: deliveries verified with the stripe library, stored, then handled.

``receive`` checks the ``Stripe-Signature`` header against the endpoint secret from the
settings (a forged, replayed or malformed delivery is refused and stored nowhere) and stores
the event under (stripe, event id). ``handle`` is the registered handler that the webhook
service calls later: ``checkout.session.completed`` and renewal ``invoice.paid`` record a
payment; the other types are stored and marked handled until their handling lands.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import stripe
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.billing.service import DuplicatePayment, webhook_handler
from burrow.control.billing.service import billing as billing_service
from burrow.control.billing.service import webhook as webhook_service
from burrow.control.errors import BurrowError, NotFound
from burrow.control.models import Account, PaymentMethod, WebhookEvent
from burrow.control.plans.service import plan as plan_service
from burrow.control.runtime import Runtime

log = logging.getLogger(__name__)

PROVIDER = "stripe"
MAX_PAYLOAD_BYTES = 256 * 1024


class WebhookRefused(BurrowError):
    status = 400
    title = "Webhook refused"
    type_slug = "webhook-refused"


class WebhookNotConfigured(NotFound):
    title = "Not found"
    type_slug = "not-found"

    def __init__(self) -> None:
        super().__init__("There is no Stripe webhook endpoint here.")


async def receive(
    session: AsyncSession, runtime: Runtime, payload: bytes, signature: str | None
) -> bool:
    """Verify and store one delivery; True if new, False for a duplicate."""
    secret = runtime.settings.stripe_webhook_secret
    if secret is None:
        raise WebhookNotConfigured()
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WebhookRefused("The delivery is larger than any Stripe event; it was refused.")
    try:
        stripe.WebhookSignature.verify_header(
            payload,
            signature,
            secret.get_secret_value(),
            tolerance=runtime.settings.stripe_webhook_tolerance_seconds,
        )
    except (stripe.SignatureVerificationError, UnicodeDecodeError) as exc:
        raise WebhookRefused(
            "The Stripe-Signature header does not match this delivery, or it is older than "
            "the replay tolerance; it was refused."
        ) from exc
    try:
        event = json.loads(payload)
    except ValueError as exc:
        raise WebhookRefused("The delivery is not JSON; it was refused.") from exc
    if not isinstance(event, dict):
        raise WebhookRefused("The delivery is not a Stripe event object; it was refused.")
    event_id, event_type = event.get("id"), event.get("type")
    if not isinstance(event_id, str) or not isinstance(event_type, str) or not event_id:
        raise WebhookRefused("The event has no id or type; it was refused.")
    return await webhook_service.store(session, PROVIDER, event_id[:200], event_type[:100], event)


def _object(payload: dict[str, Any]) -> dict[str, Any]:
    data = payload.get("data")
    found = data.get("object") if isinstance(data, dict) else None
    return found if isinstance(found, dict) else {}


def _metadata(obj: dict[str, Any]) -> dict[str, Any]:
    for holder in (
        obj,
        obj.get("subscription_details") or {},
        (obj.get("parent") or {}).get("subscription_details") or {},
    ):
        metadata = holder.get("metadata") if isinstance(holder, dict) else None
        if isinstance(metadata, dict) and metadata.get("account_id"):
            return metadata
    return {}


async def _record(
    session: AsyncSession,
    runtime: Runtime,
    event: WebhookEvent,
    obj: dict[str, Any],
    amount_key: str,
    payment_id: str | None,
) -> None:
    metadata = _metadata(obj)
    try:
        account_id = int(metadata.get("account_id", ""))
    except ValueError:
        log.warning("stripe event %s names no account; skipped", event.event_id)
        return
    account = await session.get(Account, account_id)
    plan = await plan_service.get_by_code(session, str(metadata.get("plan_code", "")))
    amount = obj.get(amount_key)
    currency = str(obj.get("currency", "")).upper()
    if account is None or plan is None or not isinstance(amount, int) or not payment_id:
        log.warning("stripe event %s is incomplete; skipped", event.event_id)
        return
    try:
        await billing_service.record_payment(
            session,
            runtime,
            account,
            plan,
            amount,
            currency,
            PaymentMethod.card,
            PROVIDER,
            payment_id,
            provider_order_id=str(obj.get("id") or "") or None,
        )
    except DuplicatePayment:
        log.info("stripe event %s: payment already recorded", event.event_id)


@webhook_handler(PROVIDER)
async def handle(
    session: AsyncSession, runtime: Runtime, event: WebhookEvent, payload: dict[str, Any]
) -> None:
    obj = _object(payload)
    if event.type == "checkout.session.completed" and obj.get("payment_status") == "paid":
        payment = obj.get("payment_intent") or obj.get("invoice") or obj.get("id")
        await _record(session, runtime, event, obj, "amount_total", payment)
    elif event.type == "invoice.paid" and obj.get("billing_reason") == "subscription_cycle":
        await _record(session, runtime, event, obj, "amount_paid", obj.get("id"))
    else:
        log.info("stripe event %s (%s) stored; nothing to do yet", event.event_id, event.type)
