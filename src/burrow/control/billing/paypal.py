"""PayPal's side of billing: checkout going out, webhook events coming in.

``PayPalCheckout`` (the ``paypal`` method) makes, for the pending order the billing service
opened, either a PayPal order (Orders v2, intent CAPTURE, the plan's amount and currency, our
order id as ``custom_id``) or, when the policy makes PayPal recurring and the settings name a
PayPal billing plan for the burrow plan, a PayPal subscription (``custom_id`` the same). The
customer approves at PayPal's approve link.

``receive`` asks PayPal itself whether a delivery is genuine (``verify-webhook-signature``
with the transmission headers and our webhook id): a delivery PayPal does not vouch for is
refused and stored nowhere; a genuine one is stored under (paypal, event id), so a duplicate
changes nothing, and ``handle`` applies it later, in the claimed/backoff/parking loop.

What the events mean here:
- ``CHECKOUT.ORDER.APPROVED``: the payer approved; burrow captures the order (one capture
  per PayPal order, by its ``PayPal-Request-Id``) and records the capture as the payment.
- ``PAYMENT.CAPTURE.COMPLETED``: the same payment seen from the capture (a capture made
  elsewhere, or an approval event lost): recorded once, whichever comes first.
- ``PAYMENT.CAPTURE.DENIED``: the pending order failed.
- ``PAYMENT.CAPTURE.REFUNDED``: PayPal's total refunded on the order (burrow's own refunds
  and the dashboard's) is recorded, only what is not recorded yet.
- ``PAYMENT.SALE.COMPLETED``: a subscription's payment: the first pays the checkout's order
  and links the subscription, later ones renew it.
- ``BILLING.SUBSCRIPTION.ACTIVATED/CANCELLED/SUSPENDED``: renewals resume or stop (the period
  paid for runs out in burrow); ``BILLING.SUBSCRIPTION.PAYMENT.FAILED``: past due.

The payer's PayPal id (``payer.payer_id``) is kept as the payment's fingerprint, as Stripe's
card fingerprint is, for the refund rule "one per person".

Imports the billing service, the payments providers, the models, the settings and the
runtime.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.affiliates.service import affiliate as affiliate_service
from burrow.control.billing.service import (
    CHECKOUT_PROVIDERS,
    RETURN_HANDLERS,
    AccountTerminated,
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
from burrow.control.payments import paypal
from burrow.control.payments.paypal import PayPalError, PayPalGateway
from burrow.control.payments.providers import ProviderUnavailable
from burrow.control.plans.service import plan as plan_service
from burrow.control.runtime import Runtime
from burrow.control.subscriptions.service import subscription as subscription_service

log = logging.getLogger(__name__)

PROVIDER = paypal.PROVIDER
MAX_PAYLOAD_BYTES = 256 * 1024
# The transmission headers PayPal signs a delivery with, which its check needs.
TRANSMISSION_HEADERS = (
    "paypal-auth-algo",
    "paypal-cert-url",
    "paypal-transmission-id",
    "paypal-transmission-sig",
    "paypal-transmission-time",
)


class WebhookRefused(BurrowError):
    status = 400
    title = "Webhook refused"
    type_slug = "webhook-refused"


class PayPalWebhookNotConfigured(NotFound):
    def __init__(self) -> None:
        super().__init__("There is no PayPal webhook endpoint here.")


class PayPalUnavailable(BurrowError):
    status = 503
    title = "Payment provider unavailable"
    type_slug = "payment-provider-unavailable"

    def __init__(self) -> None:
        super().__init__(
            "PayPal could not be asked to verify this delivery; nothing was stored. PayPal "
            "sends it again."
        )


def fingerprint(payer_id: object) -> str | None:
    """The payment's fingerprint for "one refund per person": the payer's PayPal id."""
    if not isinstance(payer_id, str) or not payer_id.strip():
        return None
    return f"paypal-payer:{payer_id.strip()[:100]}"


# --- checkout ---------------------------------------------------------------------------------


class PayPalCheckout:
    """PayPal payments: a PayPal order, or a PayPal subscription, per pending order."""

    name = PROVIDER

    def configured(self, settings: Settings) -> bool:
        return paypal.configured(settings)

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
        gateway = PayPalGateway(settings)
        brand = runtime.policy.provider.name[:127]
        return_url = settings.public_link(f"/billing?checkout=done&order={order.id}")
        cancel_url = settings.public_link(f"/billing?checkout=cancelled&order={order.id}")
        # A new request id per attempt (an order id can come back after a rolled-back attempt
        # on SQLite); the invoice id must be unique in the PayPal account, across deployments.
        attempt = uuid.uuid4().hex
        plan_id = settings.paypal_plan_ids.get(plan.code) if recurring else None
        if plan_id:
            created = await gateway.create_subscription(
                {
                    "plan_id": plan_id,
                    "custom_id": str(order.id),
                    "application_context": {
                        "brand_name": brand,
                        "shipping_preference": "NO_SHIPPING",
                        "user_action": "SUBSCRIBE_NOW",
                        "return_url": return_url,
                        "cancel_url": cancel_url,
                    },
                },
                f"burrow-subscribe-{order.id}-{attempt}",
            )
        else:
            created = await gateway.create_order(
                {
                    "intent": "CAPTURE",
                    "purchase_units": [
                        {
                            "custom_id": str(order.id),
                            "invoice_id": f"burrow-{order.id}-{attempt[:16]}",
                            "description": f"{plan.name}: {plan.period_months} month(s)"[:127],
                            "amount": {
                                "currency_code": order.currency,
                                "value": paypal.money_text(order.amount_minor, order.currency),
                            },
                        }
                    ],
                    "payment_source": {
                        "paypal": {
                            "experience_context": {
                                "brand_name": brand,
                                "shipping_preference": "NO_SHIPPING",
                                "user_action": "PAY_NOW",
                                "return_url": return_url,
                                "cancel_url": cancel_url,
                            }
                        }
                    },
                },
                f"burrow-order-{order.id}-{attempt}",
            )
        remote_id, url = created.get("id"), paypal.approve_link(created)
        if not isinstance(remote_id, str) or not remote_id or not url:
            raise ProviderUnavailable("PayPal answered without an id or an approve link")
        order.provider_order_id = remote_id[:200]
        await session.flush()
        return url


CHECKOUT_PROVIDERS[str(PaymentMethod.paypal)] = PayPalCheckout()


# --- webhooks ---------------------------------------------------------------------------------


async def receive(
    session: AsyncSession, runtime: Runtime, payload: bytes, headers: dict[str, str]
) -> int | None:
    """Verify one delivery with PayPal and store it; the stored event's row id, or None for a
    duplicate."""
    settings = runtime.settings
    if not paypal.configured(settings) or not settings.paypal_webhook_id:
        raise PayPalWebhookNotConfigured()
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WebhookRefused("The delivery is larger than any PayPal event; it was refused.")
    try:
        event = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WebhookRefused("The delivery is not JSON; it was refused.") from exc
    if not isinstance(event, dict):
        raise WebhookRefused("The delivery is not a PayPal event; it was refused.")
    event_id, event_type = event.get("id"), event.get("event_type")
    if not isinstance(event_id, str) or not event_id or not isinstance(event_type, str):
        raise WebhookRefused("The event has no id or type; it was refused.")
    transmission = {name: headers.get(name, "") for name in TRANSMISSION_HEADERS}
    if not all(transmission.values()):
        raise WebhookRefused("The delivery lacks PayPal's transmission headers; it was refused.")
    try:
        genuine = await PayPalGateway(settings).verify_webhook(transmission, event)
    except ProviderUnavailable as exc:
        log.warning("paypal delivery %s not verified: %s", event_id[:100], exc)
        raise PayPalUnavailable() from exc
    if not genuine:
        raise WebhookRefused("PayPal does not vouch for this delivery; it was refused.")
    return await webhook_service.store(session, PROVIDER, event_id[:200], event_type[:100], event)


# --- reading PayPal objects -------------------------------------------------------------------


def _time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        found = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return found if found.tzinfo is not None else None


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _captures(order: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for unit in order.get("purchase_units") or []:
        captures = _dict(_dict(unit).get("payments")).get("captures")
        found += [c for c in captures or [] if isinstance(c, dict)]
    return found


def _custom_id(order: dict[str, Any]) -> str | None:
    for unit in order.get("purchase_units") or []:
        custom = _dict(unit).get("custom_id")
        if isinstance(custom, str):
            return custom
    return None


async def _ours(session: AsyncSession, custom_id: object, remote_id: object) -> Order | None:
    """Our order named by ``custom_id``, if it was opened for this PayPal order or
    subscription (``custom_id`` alone is the payer's to see, not proof)."""
    raw = str(custom_id or "")
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        return None
    order = await billing_service.get_order(session, int(raw))
    if order is None or order.provider != PROVIDER or order.provider_order_id != remote_id:
        return None
    return order


async def _pay(
    session: AsyncSession,
    runtime: Runtime,
    what: str,
    order: Order,
    payment_id: str,
    amount: dict[str, Any],
    payer_id: object,
    **extra: Any,
) -> None:
    currency = str(amount.get("currency_code") or amount.get("currency") or "").upper()
    value = amount.get("value", amount.get("total"))
    minor = paypal.minor_units(value, currency)
    if minor is None or not currency:
        raise EventNeedsPerson(f"{what}: no amount PayPal could pay")
    try:
        await billing_service.pay_order(
            session,
            runtime,
            order,
            payment_id,
            minor,
            currency,
            fingerprint(payer_id),
            method=PaymentMethod.paypal,
            **extra,
        )
    except (DuplicatePayment, OrderNotPayable) as exc:
        log.info("%s: %s", what, exc)
    except AccountTerminated:
        log.warning(
            "paypal payment %s for terminated account %s: refund it at PayPal",
            payment_id,
            order.account_id,
        )
    except InvalidInput as exc:
        raise EventNeedsPerson(f"{what}: {exc.message}") from exc


# --- handling events --------------------------------------------------------------------------


async def _order_approved(
    session: AsyncSession, runtime: Runtime, event: WebhookEvent, obj: dict[str, Any], at: datetime
) -> None:
    remote_id = obj.get("id")
    order = await _ours(session, _custom_id(obj), remote_id)
    if order is None or not isinstance(remote_id, str):
        log.info("paypal event %s names no pending order of ours", event.event_id)
        return
    payer = _dict(obj.get("payer")).get("payer_id")
    await _capture(session, runtime, order, remote_id, payer, f"paypal event {event.event_id}")


async def _capture(
    session: AsyncSession,
    runtime: Runtime,
    order: Order,
    remote_id: str,
    payer_id: object,
    what: str,
) -> None:
    """Capture an approved PayPal order and record the capture as the order's payment."""
    gateway = PayPalGateway(runtime.settings)
    try:
        # One request id per PayPal order: a second capture (the return page and the webhook,
        # a retried handler) is answered with the first one's result and takes no money.
        captured = await gateway.capture_order(remote_id, f"burrow-capture-{remote_id}")
    except PayPalError as exc:
        if exc.status != 422:
            raise
        # Captured already (ORDER_ALREADY_CAPTURED), or not approved yet: as PayPal has it.
        captured = await gateway.get_order(remote_id)
    done = [c for c in _captures(captured) if c.get("status") == "COMPLETED"]
    if not done:
        log.info("paypal order %s not captured yet (%s)", remote_id, captured.get("status"))
        return
    capture = done[0]
    payer = _dict(captured.get("payer")).get("payer_id") or payer_id
    await _pay(
        session, runtime, what, order, str(capture.get("id")), _dict(capture.get("amount")), payer
    )


async def returned(session: AsyncSession, runtime: Runtime, order: Order, token: str) -> None:
    """The customer is back from approving: PayPal's ``token`` is the PayPal order's id. A
    subscription's return needs nothing (its first payment comes as an event)."""
    if order.provider_order_id != token or token.startswith("I-"):
        return
    # Asked first: a capture refused as not approved is not sent under the order's capture
    # request id (a later capture by the webhook reuses it).
    remote = await PayPalGateway(runtime.settings).get_order(token)
    if remote.get("status") in ("APPROVED", "COMPLETED"):
        await _capture(session, runtime, order, token, None, f"paypal return of order {order.id}")


RETURN_HANDLERS[PROVIDER] = returned


async def _capture_completed(
    session: AsyncSession, runtime: Runtime, event: WebhookEvent, obj: dict[str, Any], at: datetime
) -> None:
    related = _dict(_dict(obj.get("supplementary_data")).get("related_ids"))
    remote_id = related.get("order_id")
    order = await _ours(session, obj.get("custom_id"), remote_id)
    if order is None or not isinstance(remote_id, str) or not isinstance(obj.get("id"), str):
        log.info("paypal event %s names no order of ours", event.event_id)
        return
    payer = _dict((await PayPalGateway(runtime.settings).get_order(remote_id)).get("payer"))
    what = f"paypal event {event.event_id}"
    await _pay(
        session, runtime, what, order, obj["id"], _dict(obj.get("amount")), payer.get("payer_id")
    )


async def _capture_denied(
    session: AsyncSession, runtime: Runtime, event: WebhookEvent, obj: dict[str, Any], at: datetime
) -> None:
    related = _dict(_dict(obj.get("supplementary_data")).get("related_ids"))
    order = await _ours(session, obj.get("custom_id"), related.get("order_id"))
    if order is not None:
        await billing_service.fail_order(session, order, f"paypal: {event.type}")


async def _sale_completed(
    session: AsyncSession, runtime: Runtime, event: WebhookEvent, obj: dict[str, Any], at: datetime
) -> None:
    sale_id, linked = obj.get("id"), obj.get("billing_agreement_id")
    if not isinstance(sale_id, str) or not isinstance(linked, str) or not linked:
        log.info("paypal event %s is no subscription payment", event.event_id)
        return
    remote = await PayPalGateway(runtime.settings).get_subscription(linked)
    payer_id = _dict(remote.get("subscriber")).get("payer_id")
    period_end = _time(_dict(remote.get("billing_info")).get("next_billing_time"))
    order = await _ours(session, obj.get("custom") or remote.get("custom_id"), linked)
    if order is not None and order.status in ("pending", "failed"):
        # The subscription's first payment: the checkout's own order.
        await _pay(
            session,
            runtime,
            f"paypal event {event.event_id}",
            order,
            sale_id,
            _dict(obj.get("amount")),
            payer_id,
            provider_subscription_id=linked,
            period_end=period_end,
        )
    else:
        await _renewal(session, runtime, event, obj, linked, payer_id, period_end)
    await _note_time(session, linked, at)


async def _renewal(
    session: AsyncSession,
    runtime: Runtime,
    event: WebhookEvent,
    sale: dict[str, Any],
    linked: str,
    payer_id: object,
    period_end: datetime | None,
) -> None:
    found = await subscription_service.by_provider(session, PROVIDER, linked)
    if found is None:
        log.info("paypal event %s: no subscription of ours", event.event_id)
        return
    account = await session.get(Account, found.account_id)
    plan = await plan_service.get(session, found.plan_id)
    amount = _dict(sale.get("amount"))
    currency = str(amount.get("currency") or amount.get("currency_code") or "").upper()
    minor = paypal.minor_units(amount.get("total", amount.get("value")), currency)
    if account is None or plan is None or minor is None:
        raise EventNeedsPerson(f"paypal event {event.event_id}: an incomplete renewal")
    try:
        await billing_service.record_payment(
            session,
            runtime,
            account,
            plan,
            minor,
            currency,
            PaymentMethod.paypal,
            PROVIDER,
            str(sale["id"]),
            fingerprint(payer_id),
            provider_order_id=linked,
            provider_subscription_id=linked,
            period_end=period_end,
            zero_ok=True,
        )
    except DuplicatePayment:
        log.info("paypal event %s: payment already recorded", event.event_id)
    except InvalidInput as exc:
        raise EventNeedsPerson(f"paypal event {event.event_id}: {exc.message}") from exc


async def _note_time(session: AsyncSession, linked: str, at: datetime) -> None:
    found = await subscription_service.by_provider(session, PROVIDER, linked)
    if found is not None:
        subscription_service.note_provider_time(found, at)
        await session.flush()


async def _subscription_state(
    session: AsyncSession, runtime: Runtime, event: WebhookEvent, obj: dict[str, Any], at: datetime
) -> None:
    linked = obj.get("id")
    found = (
        await subscription_service.by_provider(session, PROVIDER, linked)
        if isinstance(linked, str)
        else None
    )
    if found is None:
        # Activated before its first payment arrived: that payment links it.
        log.info("paypal event %s: no subscription of ours yet", event.event_id)
        return
    renewing = obj.get("status") == "ACTIVE"
    applied = await subscription_service.provider_updated(
        session,
        runtime,
        found,
        at,
        cancel_at_period_end=not renewing,
        period_end=_time(_dict(obj.get("billing_info")).get("next_billing_time")),
        renewing=renewing,
    )
    if not applied:
        log.info("paypal event %s is older than the subscription's state", event.event_id)


async def _subscription_payment_failed(
    session: AsyncSession, runtime: Runtime, event: WebhookEvent, obj: dict[str, Any], at: datetime
) -> None:
    linked = obj.get("id")
    found = (
        await subscription_service.by_provider(session, PROVIDER, linked)
        if isinstance(linked, str)
        else None
    )
    if found is not None:
        await subscription_service.provider_payment_failed(session, runtime, found, at)


async def _capture_refunded(
    session: AsyncSession, runtime: Runtime, event: WebhookEvent, obj: dict[str, Any], at: datetime
) -> None:
    """A refund of a capture (burrow's own, or one made in PayPal's dashboard): what PayPal's
    order says was refunded in all is recorded, only what is not recorded yet."""
    up = paypal.link(obj, "up") or ""
    capture_id = up.rstrip("/").rsplit("/", 1)[-1] if "/captures/" in up else None
    order = (
        await billing_service.order_by_payment(session, PROVIDER, [capture_id])
        if capture_id
        else None
    )
    if order is None or not order.provider_order_id:
        log.info("paypal event %s: not a payment of ours; nothing to do", event.event_id)
        return
    remote = await PayPalGateway(runtime.settings).get_order(order.provider_order_id)
    total = 0
    for unit in remote.get("purchase_units") or []:
        for refund in _dict(_dict(unit).get("payments")).get("refunds") or []:
            amount = _dict(_dict(refund).get("amount"))
            minor = paypal.minor_units(amount.get("value"), order.currency)
            same = str(amount.get("currency_code", "")).upper() == order.currency
            if _dict(refund).get("status") == "COMPLETED" and minor is not None and same:
                total += minor
    await billing_service.provider_refunded(session, runtime, order, total)


async def _payout_item(
    session: AsyncSession, runtime: Runtime, event: WebhookEvent, obj: dict[str, Any], at: datetime
) -> None:
    """An affiliate payout item succeeded, was returned, failed or is unclaimed: the affiliate
    program records it (returned money goes back to the affiliate's balance)."""
    if not await affiliate_service.item_reported(session, obj):
        log.info("paypal event %s: not a payout item of ours; nothing to do", event.event_id)


EventHandler = Callable[
    [AsyncSession, Runtime, WebhookEvent, dict[str, Any], datetime], Awaitable[None]
]
HANDLERS: dict[str, EventHandler] = {
    "CHECKOUT.ORDER.APPROVED": _order_approved,
    "PAYMENT.CAPTURE.COMPLETED": _capture_completed,
    "PAYMENT.CAPTURE.DENIED": _capture_denied,
    "PAYMENT.CAPTURE.REFUNDED": _capture_refunded,
    "PAYMENT.SALE.COMPLETED": _sale_completed,
    "BILLING.SUBSCRIPTION.ACTIVATED": _subscription_state,
    "BILLING.SUBSCRIPTION.CANCELLED": _subscription_state,
    "BILLING.SUBSCRIPTION.SUSPENDED": _subscription_state,
    "BILLING.SUBSCRIPTION.PAYMENT.FAILED": _subscription_payment_failed,
    **{
        f"PAYMENT.PAYOUTS-ITEM.{state}": _payout_item
        for state in (
            "SUCCEEDED",
            "UNCLAIMED",
            "RETURNED",
            "FAILED",
            "BLOCKED",
            "DENIED",
            "REFUNDED",
            "CANCELED",
            "HELD",
        )
    },
}


@webhook_handler(PROVIDER)
async def handle(
    session: AsyncSession, runtime: Runtime, event: WebhookEvent, payload: dict[str, Any]
) -> None:
    handler = HANDLERS.get(event.type)
    if handler is None:
        log.info("paypal event %s (%s) stored; nothing to do", event.event_id, event.type)
        return
    at = _time(payload.get("create_time")) or event.received_at
    await handler(session, runtime, event, _dict(payload.get("resource")), at)
