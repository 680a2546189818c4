"""Stripe's side of billing: checkout going out, webhook events coming in.

``StripeCheckout`` (registered for the ``card`` method) opens a Checkout Session for a pending
order through the official library: a subscription for the policy's recurring methods, a
single payment otherwise, with the account, plan and order in its metadata.

``receive`` checks the ``Stripe-Signature`` header against the endpoint secret from the
settings (a forged, replayed or malformed delivery is refused and stored nowhere) and stores
the event under (stripe, event id). ``handle`` is the registered handler that the webhook
service calls later. Events are applied by the Stripe object's own state and the event's
``created`` time: the subscriptions service ignores an event older than the newest one it
applied (``Subscription.provider_updated_at``), so a late delivery never undoes a newer state;
money received (a paid invoice, a refund) always counts, once. A card payment is recorded with
its card's fingerprint, asked from Stripe, for the refund rule "one per person".
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import stripe
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.billing.service import (
    CHECKOUT_PROVIDERS,
    DuplicatePayment,
    EventNeedsPerson,
    OrderNotPayable,
    webhook_handler,
)
from burrow.control.billing.service import billing as billing_service
from burrow.control.billing.service import webhook as webhook_service
from burrow.control.config import Settings
from burrow.control.errors import BurrowError, InvalidInput, NotFound
from burrow.control.models import Account, Order, PaymentMethod, Plan, WebhookEvent
from burrow.control.payments.providers import PaymentDetails, StripeGateway
from burrow.control.plans.service import plan as plan_service
from burrow.control.runtime import Runtime
from burrow.control.subscriptions.service import subscription as subscription_service

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
) -> int | None:
    """Verify and store one delivery; the stored event's row id, or None for a duplicate."""
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


# --- checkout ---------------------------------------------------------------------------------


def _recurring(period_months: int) -> dict[str, object]:
    # Stripe bills at most yearly; a period of whole years longer than 12 months is in years.
    if period_months > 12 and period_months % 12 == 0:
        return {"interval": "year", "interval_count": period_months // 12}
    return {"interval": "month", "interval_count": period_months}


class StripeCheckout:
    """Card payments: a Stripe Checkout Session per pending order."""

    name = PROVIDER

    def configured(self, settings: Settings) -> bool:
        return settings.stripe_api_key is not None

    async def start(
        self,
        session: AsyncSession,
        runtime: Runtime,
        account: Account,
        plan: Plan,
        order: Order,
        *,
        recurring: bool,
    ) -> str:
        settings = runtime.settings
        # Stripe keeps metadata as strings; the events bring these back to find the order.
        metadata = {
            "account_id": str(account.id),
            "plan_code": plan.code,
            "order_id": str(order.id),
        }
        price_data: dict[str, object] = {
            "currency": plan.currency.lower(),
            "unit_amount": order.amount_minor,
            "product_data": {"name": plan.name},
        }
        params: dict[str, object] = {
            "mode": "subscription" if recurring else "payment",
            # The customer pays the plan's own currency: what burrow records and refunds is
            # what it priced (Adaptive Pricing would charge a converted amount).
            "adaptive_pricing": {"enabled": False},
            "line_items": [{"quantity": 1, "price_data": price_data}],
            "client_reference_id": str(order.id),
            "customer_email": account.email,
            "metadata": metadata,
            "success_url": settings.public_link(f"/billing?checkout=done&order={order.id}"),
            "cancel_url": settings.public_link(f"/billing?checkout=cancelled&order={order.id}"),
        }
        if recurring:
            price_data["recurring"] = _recurring(plan.period_months)
            params["subscription_data"] = {"metadata": metadata}
        else:
            params["payment_intent_data"] = {"metadata": metadata}
        # A new key per attempt (an order id can come back after a rolled-back attempt on
        # SQLite); the library's retries of this one request reuse it.
        key = f"burrow-checkout-{order.id}-{uuid.uuid4().hex}"
        session_id, url = await StripeGateway.from_settings(
            runtime.settings
        ).create_checkout_session(params, key)
        order.provider_order_id = session_id
        await session.flush()
        return url


CHECKOUT_PROVIDERS[str(PaymentMethod.card)] = StripeCheckout()


# --- reading Stripe objects -------------------------------------------------------------------


def _object(payload: dict[str, Any]) -> dict[str, Any]:
    data = payload.get("data")
    found = data.get("object") if isinstance(data, dict) else None
    return found if isinstance(found, dict) else {}


def _id(value: Any) -> str | None:
    """An expandable field: an id, or the expanded object with its id."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _time(value: Any) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _created(payload: dict[str, Any], event: WebhookEvent) -> datetime:
    """When Stripe made the event: the time its changes are ordered by."""
    return _time(payload.get("created")) or event.received_at


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


def _invoice_subscription(invoice: dict[str, Any]) -> str | None:
    # Older API versions name it on the invoice; newer ones under parent.subscription_details.
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    return _id(invoice.get("subscription")) or (
        _id(details.get("subscription")) if isinstance(details, dict) else None
    )


def _invoice_period_end(invoice: dict[str, Any]) -> datetime | None:
    """The end of the period the invoice bills (its subscription lines')."""
    lines = (invoice.get("lines") or {}).get("data") or []
    ends = [
        _time((line.get("period") or {}).get("end"))
        for line in lines
        if isinstance(line, dict) and isinstance(line.get("period"), dict)
    ]
    found = [end for end in ends if end is not None]
    return max(found) if found else None


def _subscription_period_end(subscription: dict[str, Any]) -> datetime | None:
    # Older API versions keep it on the subscription, newer ones on its items.
    top = _time(subscription.get("current_period_end"))
    if top is not None:
        return top
    items = (subscription.get("items") or {}).get("data") or []
    ends = [_time(i.get("current_period_end")) for i in items if isinstance(i, dict)]
    found = [end for end in ends if end is not None]
    return max(found) if found else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


async def _payment_id(runtime: Runtime, intent: Any, invoice: Any) -> str | None:
    """The id a payment is recorded under: its payment intent, which refunds and
    ``charge.refunded`` name. Newer Stripe invoices do not carry it, so it is asked from
    Stripe (unreachable: the handler fails and the stored event is tried again later);
    without an API key, the invoice's id stands in."""
    found = _id(intent)
    invoice_id = _id(invoice)
    if found is None and invoice_id is not None:
        gateway = StripeGateway.from_settings(runtime.settings)
        if gateway.configured:
            found = await gateway.invoice_payment_intent(invoice_id)
    return found or invoice_id


async def _details(runtime: Runtime, payment_id: str | None) -> PaymentDetails:
    """What paid under ``payment_id`` (its method class and card fingerprint), asked from
    Stripe.

    Asked before anything is recorded: if Stripe cannot be reached, the handler fails and the
    stored event is handled again on a later run (``process_pending``), so the payment is never
    lost, and a short outage never records it without the fingerprint the "one refund per
    person" rule needs, or under a method class it was not paid with.
    (Recording it first and filling the fingerprint in later would leave it empty for good
    when no later event about that payment comes, and a refund asked meanwhile would not see
    it.) Without an API key, or under an id that is no payment (an invoice's, a session's),
    there is nothing to ask."""
    if not payment_id or not payment_id.startswith(("pi_", "ch_")):
        return PaymentDetails(None, None)
    gateway = StripeGateway.from_settings(runtime.settings)
    if not gateway.configured:
        return PaymentDetails(None, None)
    return await gateway.payment_details(payment_id)


def _settled(obj: dict[str, Any], amount_key: str, priced_in: str) -> tuple[int | None, str]:
    """The amount and currency burrow was paid in.

    Burrow's checkout sessions turn Adaptive Pricing off, so a customer pays the plan's own
    currency. A session made with it on (an older session, an account-wide setting) shows the
    customer's currency, and ``currency_conversion`` holds what was settled in the plan's
    currency: that is what burrow records (and refunds). Any other currency is refused by
    the payment's checks, and the event is parked for a person.
    """
    amount = _int(obj.get(amount_key))
    currency = str(obj.get("currency", "")).upper()
    conversion = obj.get("currency_conversion")
    if currency != priced_in and isinstance(conversion, dict):
        source = str(conversion.get("source_currency", "")).upper()
        converted = _int(conversion.get(amount_key))
        if source == priced_in and converted is not None:
            return converted, source
    return amount, currency


# --- handling events --------------------------------------------------------------------------


async def _record(
    session: AsyncSession,
    runtime: Runtime,
    event: WebhookEvent,
    obj: dict[str, Any],
    amount_key: str,
    payment_id: str | None,
    *,
    provider_subscription_id: str | None = None,
    period_end: datetime | None = None,
) -> bool:
    """Money no pending order waited for (a renewal): open an order and pay it."""
    metadata = _metadata(obj)
    try:
        account_id = int(metadata.get("account_id", ""))
    except ValueError:
        log.warning("stripe event %s names no account; skipped", event.event_id)
        return False
    account = await session.get(Account, account_id)
    plan = await plan_service.get_by_code(session, str(metadata.get("plan_code", "")))
    if account is None or plan is None or not payment_id:
        log.warning("stripe event %s is incomplete; skipped", event.event_id)
        return False
    amount, currency = _settled(obj, amount_key, plan.currency)
    if amount is None:
        log.warning("stripe event %s is incomplete; skipped", event.event_id)
        return False
    details = await _details(runtime, payment_id)
    try:
        await billing_service.record_payment(
            session,
            runtime,
            account,
            plan,
            amount,
            currency,
            details.method or PaymentMethod.card,
            PROVIDER,
            payment_id,
            details.fingerprint,
            provider_order_id=_id(obj.get("id")),
            provider_subscription_id=provider_subscription_id,
            period_end=period_end,
            zero_ok=True,
        )
    except DuplicatePayment:
        log.info("stripe event %s: payment already recorded", event.event_id)
    except InvalidInput as exc:
        # No retry changes what was paid (another currency): a person looks at it.
        raise EventNeedsPerson(f"stripe event {event.event_id}: {exc.message}") from exc
    return True


async def _checkout_completed(
    session: AsyncSession, runtime: Runtime, event: WebhookEvent, obj: dict[str, Any], at: datetime
) -> None:
    if obj.get("payment_status") not in ("paid", "no_payment_required"):
        # An asynchronous method (a bank debit): checkout.session.async_payment_succeeded
        # brings the money later.
        log.info("stripe checkout %s completed unpaid; waiting", _id(obj.get("id")))
        return
    payment = await _payment_id(runtime, obj.get("payment_intent"), obj.get("invoice"))
    payment = payment or _id(obj.get("id"))
    linked = _id(obj.get("subscription")) if obj.get("mode") == "subscription" else None
    order = await _order_of(session, obj)
    if order is None:
        # A session made before orders were opened first: by account and plan.
        await _record(
            session, runtime, event, obj, "amount_total", payment, provider_subscription_id=linked
        )
    else:
        amount, currency = _settled(obj, "amount_total", order.currency)
        if amount is None or payment is None:
            log.warning("stripe event %s is incomplete; skipped", event.event_id)
            return
        details = await _details(runtime, payment)
        try:
            await billing_service.pay_order(
                session,
                runtime,
                order,
                payment,
                amount,
                currency,
                details.fingerprint,
                provider_subscription_id=linked,
                method=details.method,
                zero_ok=obj.get("payment_status") == "no_payment_required",
            )
        except (DuplicatePayment, OrderNotPayable) as exc:
            log.info("stripe event %s: %s", event.event_id, exc)
        except InvalidInput as exc:
            raise EventNeedsPerson(f"stripe event {event.event_id}: {exc.message}") from exc
    await _note_time(session, linked, at)


async def _order_of(session: AsyncSession, obj: dict[str, Any]) -> Order | None:
    raw = str(_metadata(obj).get("order_id") or obj.get("client_reference_id") or "")
    if not raw.isdigit() or len(raw) > 18:
        return None
    order = await billing_service.get_order(session, int(raw))
    # Only an order that was opened for Stripe (metadata is the customer's to see, not proof).
    return order if order is not None and order.provider == PROVIDER else None


async def _checkout_failed(
    session: AsyncSession, runtime: Runtime, event: WebhookEvent, obj: dict[str, Any], at: datetime
) -> None:
    order = await _order_of(session, obj)
    if order is not None:
        await billing_service.fail_order(session, order, f"stripe: {event.type}")


async def _note_time(session: AsyncSession, provider_id: str | None, at: datetime) -> None:
    if provider_id:
        found = await subscription_service.by_provider(session, PROVIDER, provider_id)
        if found is not None:
            subscription_service.note_provider_time(found, at)
            await session.flush()


async def _invoice_paid(
    session: AsyncSession, runtime: Runtime, event: WebhookEvent, obj: dict[str, Any], at: datetime
) -> None:
    # The first invoice of a subscription is the checkout's own payment; only a cycle renews.
    if obj.get("billing_reason") != "subscription_cycle":
        return
    linked = _invoice_subscription(obj)
    payment = await _payment_id(runtime, obj.get("payment_intent"), obj.get("id"))
    await _record(
        session,
        runtime,
        event,
        obj,
        "amount_paid",
        payment,
        provider_subscription_id=linked,
        period_end=_invoice_period_end(obj),
    )
    await _note_time(session, linked, at)


async def _payment_failed(
    session: AsyncSession, runtime: Runtime, event: WebhookEvent, obj: dict[str, Any], at: datetime
) -> None:
    linked = _invoice_subscription(obj)
    found = await subscription_service.by_provider(session, PROVIDER, linked) if linked else None
    if found is None:
        log.info("stripe event %s: no subscription of ours; nothing to do", event.event_id)
        return
    if not await subscription_service.provider_payment_failed(session, runtime, found, at):
        log.info("stripe event %s is older than the subscription's state; ignored", event.event_id)


async def _subscription_updated(
    session: AsyncSession, runtime: Runtime, event: WebhookEvent, obj: dict[str, Any], at: datetime
) -> None:
    linked = _id(obj.get("id"))
    found = await subscription_service.by_provider(session, PROVIDER, linked) if linked else None
    if found is None:
        return
    applied = await subscription_service.provider_updated(
        session,
        runtime,
        found,
        at,
        cancel_at_period_end=obj.get("cancel_at_period_end") is True,
        period_end=_subscription_period_end(obj),
        renewing=obj.get("status") in ("active", "trialing"),
    )
    if not applied:
        log.info("stripe event %s is older than the subscription's state; ignored", event.event_id)


async def _subscription_deleted(
    session: AsyncSession, runtime: Runtime, event: WebhookEvent, obj: dict[str, Any], at: datetime
) -> None:
    linked = _id(obj.get("id"))
    found = await subscription_service.by_provider(session, PROVIDER, linked) if linked else None
    if found is not None:
        await subscription_service.provider_ended(session, runtime, found, at)


async def _charge_refunded(
    session: AsyncSession, runtime: Runtime, event: WebhookEvent, obj: dict[str, Any], at: datetime
) -> None:
    ids = [i for i in (_id(obj.get("payment_intent")), _id(obj.get("id"))) if i]
    ids += [i for i in (_id(obj.get("invoice")),) if i]
    order = await billing_service.order_by_payment(session, PROVIDER, ids)
    total = _int(obj.get("amount_refunded"))
    if order is None or total is None:
        log.info("stripe event %s: not a payment of ours; nothing to do", event.event_id)
        return
    # Stripe's figure is cumulative and includes refunds burrow sent itself, so only what is
    # not recorded yet is added: a refund is never counted twice.
    await billing_service.provider_refunded(session, runtime, order, total)


EventHandler = Callable[
    [AsyncSession, Runtime, WebhookEvent, dict[str, Any], datetime], Awaitable[None]
]
HANDLERS: dict[str, EventHandler] = {
    "checkout.session.completed": _checkout_completed,
    "checkout.session.async_payment_succeeded": _checkout_completed,
    "checkout.session.expired": _checkout_failed,
    "checkout.session.async_payment_failed": _checkout_failed,
    "invoice.paid": _invoice_paid,
    "invoice.payment_failed": _payment_failed,
    "customer.subscription.updated": _subscription_updated,
    "customer.subscription.deleted": _subscription_deleted,
    "charge.refunded": _charge_refunded,
}


@webhook_handler(PROVIDER)
async def handle(
    session: AsyncSession, runtime: Runtime, event: WebhookEvent, payload: dict[str, Any]
) -> None:
    handler = HANDLERS.get(event.type)
    if handler is None:
        log.info("stripe event %s (%s) stored; nothing to do", event.event_id, event.type)
        return
    await handler(session, runtime, event, _object(payload), _created(payload, event))
