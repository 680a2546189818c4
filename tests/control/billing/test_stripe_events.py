"""Stripe webhooks: signed as Stripe signs them, verified by the stripe library, stored once,
and applied by the Stripe object's own state and time (a late event never undoes a newer one).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from burrow.control.billing.service import billing as billing_service
from burrow.control.billing.service import webhook as webhook_service
from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.models import (
    Order,
    OrderKind,
    OrderStatus,
    Payment,
    PaymentMethod,
    ServedPeer,
    Subscription,
    SubscriptionStatus,
    WebhookEvent,
)
from burrow.control.policy.audit import AuditTargets, run_audit
from burrow.control.policy.service import load_policy
from burrow.control.runtime import Runtime
from burrow.control.subscriptions.service import gives_access
from burrow.control.subscriptions.service import subscription as subscription_service
from burrow.control.subscriptions.tasks import expire_due_subscriptions
from tests.conftest import METERED_POLICY
from tests.control.billing.conftest import STRIPE_SECRET
from tests.support.app import app_client, running_runtime
from tests.support.factories import (
    create_account,
    create_device,
    create_session_token,
    get_plan,
)
from tests.support.stripe_server import HTTPX_DATA_WARNING, FakeStripe, event, sign

pytestmark = pytest.mark.filterwarnings(HTTPX_DATA_WARNING)

URL = "/api/v1/billing/webhooks/stripe"
PROBLEM = "application/problem+json"
SUB = "sub_test_1"


def _checkout(event_id: str, account_id: int, *, amount: int = 699) -> bytes:
    """A checkout made before orders were opened first: found by account and plan."""
    return event(
        event_id,
        "checkout.session.completed",
        {
            "id": f"cs_{event_id}",
            "object": "checkout.session",
            "mode": "payment",
            "payment_status": "paid",
            "payment_intent": f"pi_{event_id}",
            "amount_total": amount,
            "currency": "usd",
            "metadata": {"account_id": str(account_id), "plan_code": "personal-monthly"},
        },
    )


async def _count(runtime: Runtime, model: type[Any]) -> int:
    async with unit_of_work(runtime.sessionmaker) as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def _deliver(client: httpx.AsyncClient, payload: bytes) -> httpx.Response:
    headers = {"Stripe-Signature": sign(payload, STRIPE_SECRET), "Content-Type": "application/json"}
    response = await client.post(URL, content=payload, headers=headers)
    assert response.status_code == 200, response.text
    return response


async def test_signed_checkout_pays_once(
    stripe_client: httpx.AsyncClient, stripe_runtime: Runtime
) -> None:
    async with unit_of_work(stripe_runtime.sessionmaker) as session:
        account = await create_account(session)
    payload = _checkout("evt_1", account.id)
    response = await _deliver(stripe_client, payload)
    assert response.json() == {"received": True, "duplicate": False}
    async with unit_of_work(stripe_runtime.sessionmaker) as session:
        order = await session.scalar(select(Order).where(Order.account_id == account.id))
        assert order is not None
        assert order.kind == OrderKind.first
        assert order.provider == "stripe"
        assert order.amount_minor == 699
        assert await subscription_service.access_plan(session, account.id) is not None

    again = await _deliver(stripe_client, payload)
    assert again.json() == {"received": True, "duplicate": True}
    assert await _count(stripe_runtime, Order) == 1
    assert await _count(stripe_runtime, WebhookEvent) == 1


async def test_forged_replayed_and_malformed_are_refused_and_not_stored(
    stripe_client: httpx.AsyncClient, stripe_runtime: Runtime
) -> None:
    payload = _checkout("evt_bad", 1)
    not_json = b"{not json"
    no_id = json.dumps({"type": "invoice.paid"}).encode()
    cases = [
        (payload, {}),
        (payload, {"Stripe-Signature": sign(payload, "whsec_other")}),
        (payload, {"Stripe-Signature": sign(payload, STRIPE_SECRET, at=int(time.time()) - 3600)}),
        (payload, {"Stripe-Signature": "garbage"}),
        (payload + b" ", {"Stripe-Signature": sign(payload, STRIPE_SECRET)}),
        (not_json, {"Stripe-Signature": sign(not_json, STRIPE_SECRET)}),
        (no_id, {"Stripe-Signature": sign(no_id, STRIPE_SECRET)}),
        (b"\xff\xfe", {"Stripe-Signature": sign(b"\xff\xfe", STRIPE_SECRET)}),
    ]
    for body, headers in cases:
        response = await stripe_client.post(URL, content=body, headers=headers)
        assert response.status_code == 400, (body, headers)
        assert response.headers["content-type"] == PROBLEM
    assert await _count(stripe_runtime, WebhookEvent) == 0
    assert await _count(stripe_runtime, Order) == 0


async def test_without_a_secret_the_endpoint_is_absent(client: httpx.AsyncClient) -> None:
    payload = _checkout("evt_none", 1)
    response = await client.post(
        URL, content=payload, headers={"Stripe-Signature": sign(payload, STRIPE_SECRET)}
    )
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM


# --- a card subscription from checkout to its end ----------------------------------------------


def _at(moment: datetime) -> int:
    return int(moment.timestamp())


class Customer:
    """An account with a device and a pending Stripe order, as POST /billing/checkout leaves it."""

    account_id: int
    order_id: int
    device_key: str


async def _customer(runtime: Runtime) -> Customer:
    found = Customer()
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
        device = await create_device(session, account)
        plan = await get_plan(session, "personal-monthly")
        order = await billing_service.open_order(
            session, account, plan, PaymentMethod.card, "stripe"
        )
        found.account_id, found.order_id, found.device_key = account.id, order.id, device.public_key
    return found


def _session_completed(customer: Customer, *, amount: int = 699) -> dict[str, Any]:
    return {
        "id": f"cs_{customer.order_id}",
        "object": "checkout.session",
        "mode": "subscription",
        "payment_status": "paid",
        "status": "complete",
        "payment_intent": None,
        "invoice": f"in_first_{customer.order_id}",
        "subscription": SUB,
        "amount_total": amount,
        "currency": "usd",
        "client_reference_id": str(customer.order_id),
        "metadata": {
            "account_id": str(customer.account_id),
            "plan_code": "personal-monthly",
            "order_id": str(customer.order_id),
        },
    }


def _invoice(
    customer: Customer, number: int, period_end: datetime, **changes: Any
) -> dict[str, Any]:
    invoice: dict[str, Any] = {
        "id": f"in_{number}",
        "object": "invoice",
        "billing_reason": "subscription_cycle",
        "amount_paid": 699,
        "currency": "usd",
        # Current API versions name no payment intent on an invoice (burrow asks Stripe).
        "parent": {
            "type": "subscription_details",
            "subscription_details": {
                "subscription": SUB,
                "metadata": {
                    "account_id": str(customer.account_id),
                    "plan_code": "personal-monthly",
                    "order_id": str(customer.order_id),
                },
            },
        },
        "lines": {
            "object": "list",
            "data": [
                {
                    "object": "line_item",
                    "period": {
                        "start": _at(period_end - timedelta(days=30)),
                        "end": _at(period_end),
                    },
                }
            ],
        },
    }
    invoice.update(changes)
    return invoice


def _stripe_subscription(
    period_end: datetime, *, cancel: bool = False, status: str = "active"
) -> dict[str, Any]:
    return {
        "id": SUB,
        "object": "subscription",
        "status": status,
        "cancel_at_period_end": cancel,
        "items": {
            "object": "list",
            "data": [{"object": "subscription_item", "current_period_end": _at(period_end)}],
        },
    }


async def _subscription(runtime: Runtime, account_id: int) -> Subscription:
    async with unit_of_work(runtime.sessionmaker) as session:
        found = await session.scalar(
            select(Subscription)
            .where(Subscription.account_id == account_id)
            .order_by(Subscription.id.desc())
            .limit(1)
        )
        assert found is not None
        return found


async def _served(runtime: Runtime, account_id: int) -> set[str]:
    async with unit_of_work(runtime.sessionmaker) as session:
        rows = await session.scalars(
            select(ServedPeer.public_key).where(ServedPeer.account_id == account_id)
        )
        return set(rows)


async def _orders(runtime: Runtime, account_id: int) -> list[Order]:
    async with unit_of_work(runtime.sessionmaker) as session:
        rows = await session.scalars(
            select(Order).where(Order.account_id == account_id).order_by(Order.id)
        )
        return list(rows)


async def _subscribed(client: httpx.AsyncClient, runtime: Runtime) -> Customer:
    customer = await _customer(runtime)
    await _deliver(
        client, event("evt_checkout", "checkout.session.completed", _session_completed(customer))
    )
    return customer


async def test_checkout_completed_pays_the_pending_order_and_links_stripe(
    stripe_client: httpx.AsyncClient, stripe_runtime: Runtime, fake_stripe: FakeStripe
) -> None:
    customer = await _subscribed(stripe_client, stripe_runtime)
    [order] = await _orders(stripe_runtime, customer.account_id)
    assert order.id == customer.order_id
    # The session names its invoice only; the payment intent that paid it came from Stripe,
    # then the card's fingerprint from that intent's charge.
    call, card = fake_stripe.calls
    assert (call.method, call.path) == ("GET", "/v1/invoice_payments")
    assert call.form == {
        "invoice": [f"in_first_{order.id}"],
        "status": ["paid"],
        "limit": ["10"],
    }
    assert (card.method, card.path) == ("GET", f"/v1/payment_intents/pi_of_in_first_{order.id}")
    assert card.form == {"expand[0]": ["latest_charge"]}
    async with unit_of_work(stripe_runtime.sessionmaker) as session:
        assert await billing_service.payment_ids_of(session, order.id) == [
            f"pi_of_in_first_{order.id}"
        ]
        assert await billing_service.fingerprints_of(session, order.id) == [
            f"fp_card_of_pi_of_in_first_{order.id}"
        ]
    assert (order.status, order.kind, order.amount_minor) == (
        OrderStatus.paid,
        OrderKind.first,
        699,
    )
    assert order.provider_subscription_id == SUB
    sub = await _subscription(stripe_runtime, customer.account_id)
    assert (sub.status, sub.provider, sub.provider_subscription_id) == ("active", "stripe", SUB)
    assert await _served(stripe_runtime, customer.account_id) == {customer.device_key}

    # Stripe delivers the same completion again under a new event id: the payment is known.
    await _deliver(
        stripe_client,
        event("evt_again", "checkout.session.completed", _session_completed(customer)),
    )
    assert len(await _orders(stripe_runtime, customer.account_id)) == 1


async def test_metadata_cannot_pay_an_order_of_another_provider(
    stripe_client: httpx.AsyncClient, stripe_runtime: Runtime
) -> None:
    customer = await _customer(stripe_runtime)
    async with unit_of_work(stripe_runtime.sessionmaker) as session:
        order = await session.get(Order, customer.order_id)
        assert order is not None
        order.provider = "coingate"
    completed = _session_completed(customer)
    completed["metadata"].pop("account_id")
    completed.pop("client_reference_id")
    await _deliver(stripe_client, event("evt_other", "checkout.session.completed", completed))
    [order] = await _orders(stripe_runtime, customer.account_id)
    assert order.status == OrderStatus.pending


async def test_expired_checkout_fails_the_order(
    stripe_client: httpx.AsyncClient, stripe_runtime: Runtime
) -> None:
    customer = await _customer(stripe_runtime)
    expired = _session_completed(customer) | {"status": "expired", "payment_status": "unpaid"}
    await _deliver(stripe_client, event("evt_expired", "checkout.session.expired", expired))
    [order] = await _orders(stripe_runtime, customer.account_id)
    assert order.status == OrderStatus.failed
    assert await _served(stripe_runtime, customer.account_id) == set()


async def test_renewal_extends_to_stripes_period_once(
    stripe_client: httpx.AsyncClient, stripe_runtime: Runtime, fake_stripe: FakeStripe
) -> None:
    fake_stripe.subscriptions[SUB] = _stripe_subscription(datetime.now(UTC))
    # The renewal is charged to a card the customer added since.
    fake_stripe.cards["pi_of_in_2"] = "fp_new_card"
    customer = await _subscribed(stripe_client, stripe_runtime)
    first_end = (await _subscription(stripe_runtime, customer.account_id)).current_period_end
    next_end = (first_end + timedelta(days=31)).replace(microsecond=0)
    now = int(time.time())

    # At the period end Stripe moves its subscription on, then the invoice is paid: both
    # name the same new end, and the period is not counted twice.
    updated = _stripe_subscription(next_end)
    await _deliver(
        stripe_client, event("evt_roll", "customer.subscription.updated", updated, created=now)
    )
    paid = _invoice(customer, 2, next_end)
    await _deliver(stripe_client, event("evt_paid", "invoice.paid", paid, created=now + 1))

    sub = await _subscription(stripe_runtime, customer.account_id)
    assert sub.current_period_end == next_end
    assert sub.status == SubscriptionStatus.active
    orders = await _orders(stripe_runtime, customer.account_id)
    assert [(o.kind, o.status) for o in orders] == [
        (OrderKind.first, OrderStatus.paid),
        (OrderKind.renewal, OrderStatus.paid),
    ]
    assert orders[1].provider_order_id == "in_2"
    assert orders[1].provider_subscription_id == SUB
    async with unit_of_work(stripe_runtime.sessionmaker) as session:
        assert await billing_service.payment_ids_of(session, orders[1].id) == ["pi_of_in_2"]
        assert await billing_service.fingerprints_of(session, orders[1].id) == ["fp_new_card"]
    renewal_card = fake_stripe.calls[-1]
    assert (renewal_card.path, renewal_card.param("expand[0]")) == (
        "/v1/payment_intents/pi_of_in_2",
        "latest_charge",
    )

    # Refunded in Stripe's dashboard: the charge names the payment intent, found again.
    await _deliver(
        stripe_client, event("evt_ref", "charge.refunded", _charge("pi_of_in_2", 699, 699))
    )
    orders = await _orders(stripe_runtime, customer.account_id)
    assert (orders[1].status, orders[1].refunded_minor) == (OrderStatus.refunded, 699)
    sub = await _subscription(stripe_runtime, customer.account_id)
    assert sub.status == SubscriptionStatus.canceled
    # ... and Stripe is told to stop renewing it, so the customer is not charged again.
    ended = fake_stripe.calls[-1]
    assert (ended.method, ended.path) == ("DELETE", f"/v1/subscriptions/{SUB}")
    assert fake_stripe.subscriptions[SUB]["status"] == "canceled"


async def test_payment_failed_gives_grace_then_invoice_paid_clears_it(
    stripe_client: httpx.AsyncClient, stripe_runtime: Runtime
) -> None:
    customer = await _subscribed(stripe_client, stripe_runtime)
    before = await _subscription(stripe_runtime, customer.account_id)
    failed_at = int(time.time())
    failed = _invoice(customer, 2, before.current_period_end + timedelta(days=30))
    failed |= {"amount_paid": 0, "status": "open", "attempt_count": 1}
    await _deliver(
        stripe_client, event("evt_fail", "invoice.payment_failed", failed, created=failed_at)
    )
    sub = await _subscription(stripe_runtime, customer.account_id)
    assert sub.status == SubscriptionStatus.past_due
    # The policy's grace (3 days in the strict seed's default) from when the payment failed.
    assert sub.grace_until == datetime.fromtimestamp(failed_at, UTC) + timedelta(days=3)
    # Access goes on during the grace, and ends with it.
    assert sub.grace_until is not None
    assert gives_access(sub, sub.grace_until - timedelta(seconds=1))
    assert not gives_access(sub, sub.grace_until)
    assert await _served(stripe_runtime, customer.account_id) == {customer.device_key}

    new_end = (before.current_period_end + timedelta(days=30)).replace(microsecond=0)
    paid = _invoice(customer, 2, new_end, payment_intent="pi_retry_2")
    await _deliver(stripe_client, event("evt_retry", "invoice.paid", paid, created=failed_at + 60))
    sub = await _subscription(stripe_runtime, customer.account_id)
    assert sub.status == SubscriptionStatus.active
    assert sub.grace_until is None
    assert sub.current_period_end == new_end
    assert await _served(stripe_runtime, customer.account_id) == {customer.device_key}


async def test_a_late_payment_failed_after_a_newer_paid_invoice_changes_nothing(
    stripe_client: httpx.AsyncClient, stripe_runtime: Runtime
) -> None:
    customer = await _subscribed(stripe_client, stripe_runtime)
    end = (await _subscription(stripe_runtime, customer.account_id)).current_period_end
    now = int(time.time())
    new_end = (end + timedelta(days=30)).replace(microsecond=0)
    paid = _invoice(customer, 2, new_end)
    await _deliver(stripe_client, event("evt_paid", "invoice.paid", paid, created=now))
    failed = _invoice(customer, 2, new_end) | {"amount_paid": 0}
    await _deliver(
        stripe_client, event("evt_old_fail", "invoice.payment_failed", failed, created=now - 300)
    )
    sub = await _subscription(stripe_runtime, customer.account_id)
    assert sub.status == SubscriptionStatus.active
    assert sub.grace_until is None
    assert sub.provider_updated_at == datetime.fromtimestamp(now, UTC)


async def test_an_older_subscription_update_never_undoes_a_newer_one(
    stripe_client: httpx.AsyncClient, stripe_runtime: Runtime
) -> None:
    customer = await _subscribed(stripe_client, stripe_runtime)
    end = (await _subscription(stripe_runtime, customer.account_id)).current_period_end
    end = end.replace(microsecond=0)
    now = int(time.time())
    newer = _stripe_subscription(end, cancel=True)
    older = _stripe_subscription(end + timedelta(days=30), cancel=False)
    await _deliver(
        stripe_client, event("evt_new", "customer.subscription.updated", newer, created=now)
    )
    await _deliver(
        stripe_client, event("evt_old", "customer.subscription.updated", older, created=now - 60)
    )
    sub = await _subscription(stripe_runtime, customer.account_id)
    assert sub.cancel_at_period_end is True
    assert sub.canceled_at is not None
    assert sub.current_period_end == end

    # A newer one does apply: resumed at Stripe.
    resumed = _stripe_subscription(end, cancel=False)
    await _deliver(
        stripe_client,
        event("evt_newest", "customer.subscription.updated", resumed, created=now + 1),
    )
    sub = await _subscription(stripe_runtime, customer.account_id)
    assert (sub.cancel_at_period_end, sub.canceled_at) == (False, None)


async def test_subscription_deleted_ends_it_and_removes_the_peers(
    stripe_client: httpx.AsyncClient, stripe_runtime: Runtime
) -> None:
    customer = await _subscribed(stripe_client, stripe_runtime)
    assert await _served(stripe_runtime, customer.account_id) == {customer.device_key}
    end = (await _subscription(stripe_runtime, customer.account_id)).current_period_end
    deleted = _stripe_subscription(end, status="canceled")
    await _deliver(
        stripe_client, event("evt_deleted", "customer.subscription.deleted", deleted, created=1)
    )
    sub = await _subscription(stripe_runtime, customer.account_id)
    assert sub.status == SubscriptionStatus.expired
    assert sub.ended_at is not None
    assert await _served(stripe_runtime, customer.account_id) == set()


def _charge(payment_intent: str, amount: int, refunded: int) -> dict[str, Any]:
    return {
        "id": f"ch_{payment_intent}",
        "object": "charge",
        "amount": amount,
        "amount_refunded": refunded,
        "currency": "usd",
        "payment_intent": payment_intent,
        "refunded": refunded >= amount,
    }


async def test_charge_refunded_records_once_and_a_full_refund_ends_access(
    stripe_client: httpx.AsyncClient, stripe_runtime: Runtime
) -> None:
    customer = await _customer(stripe_runtime)
    completed = _session_completed(customer) | {"mode": "payment", "payment_intent": "pi_one"}
    completed.pop("subscription")
    await _deliver(stripe_client, event("evt_paid", "checkout.session.completed", completed))
    assert await _served(stripe_runtime, customer.account_id) == {customer.device_key}

    # A partial refund made in Stripe's dashboard, delivered twice under two event ids.
    for event_id in ("evt_r1", "evt_r1_again"):
        await _deliver(
            stripe_client, event(event_id, "charge.refunded", _charge("pi_one", 699, 200))
        )
    [order] = await _orders(stripe_runtime, customer.account_id)
    assert (order.status, order.refunded_minor) == (OrderStatus.partially_refunded, 200)
    assert await _served(stripe_runtime, customer.account_id) == {customer.device_key}

    # Then the rest: Stripe's figure is cumulative, so only 499 more is recorded.
    await _deliver(stripe_client, event("evt_r2", "charge.refunded", _charge("pi_one", 699, 699)))
    [order] = await _orders(stripe_runtime, customer.account_id)
    assert (order.status, order.refunded_minor) == (OrderStatus.refunded, 699)
    assert await _served(stripe_runtime, customer.account_id) == set()


async def test_a_refund_burrow_sent_is_not_counted_again_by_its_event(
    stripe_client: httpx.AsyncClient, stripe_runtime: Runtime
) -> None:
    async with unit_of_work(stripe_runtime.sessionmaker) as session:
        account = await create_account(session)
        plan = await get_plan(session, "personal-monthly")
        recorded = await billing_service.record_payment(
            session,
            stripe_runtime,
            account,
            plan,
            699,
            "USD",
            PaymentMethod.card,
            "stripe",
            "pi_sent",
        )
        # What the refunds domain records once Stripe executed its refund of 300.
        await billing_service.mark_refunded(session, recorded.order, 300)
    await _deliver(
        stripe_client, event("evt_sent", "charge.refunded", _charge("pi_sent", 699, 300))
    )
    async with unit_of_work(stripe_runtime.sessionmaker) as session:
        order = await session.get(Order, recorded.order.id)
        assert order is not None
        assert (order.status, order.refunded_minor) == (OrderStatus.partially_refunded, 300)


# --- the card's fingerprint ----------------------------------------------------------------------


def _paid_once(customer: Customer, payment_intent: str) -> dict[str, Any]:
    completed = _session_completed(customer) | {"mode": "payment", "payment_intent": payment_intent}
    completed.pop("subscription")
    completed.pop("invoice")
    return completed


async def _payment_of(runtime: Runtime, order_id: int) -> Payment:
    async with unit_of_work(runtime.sessionmaker) as session:
        found = await session.scalar(select(Payment).where(Payment.order_id == order_id))
        assert found is not None
        return found


async def test_a_payment_not_made_by_card_is_recorded_without_a_fingerprint(
    stripe_client: httpx.AsyncClient, stripe_runtime: Runtime, fake_stripe: FakeStripe
) -> None:
    paypal, gone = await _customer(stripe_runtime), await _customer(stripe_runtime)
    fake_stripe.cards["pi_paypal"] = None
    fake_stripe.unknown.add("pi_gone")
    await _deliver(
        stripe_client,
        event("evt_pp", "checkout.session.completed", _paid_once(paypal, "pi_paypal")),
    )
    # Stripe refuses to name the payment (a test-mode id under a live key): asking again
    # would refuse again, so the payment is recorded without its fingerprint.
    await _deliver(
        stripe_client, event("evt_gone", "checkout.session.completed", _paid_once(gone, "pi_gone"))
    )
    for customer, intent in ((paypal, "pi_paypal"), (gone, "pi_gone")):
        [order] = await _orders(stripe_runtime, customer.account_id)
        assert order.status == OrderStatus.paid
        payment = await _payment_of(stripe_runtime, order.id)
        assert (payment.provider_payment_id, payment.fingerprint) == (intent, None)
    assert [c.path for c in fake_stripe.calls] == [
        "/v1/payment_intents/pi_paypal",
        "/v1/payment_intents/pi_gone",
    ]


async def test_stripe_unreachable_leaves_the_event_to_be_handled_again(
    stripe_client: httpx.AsyncClient, stripe_runtime: Runtime, fake_stripe: FakeStripe
) -> None:
    customer = await _customer(stripe_runtime)
    # More failures than the library's own retries.
    fake_stripe.failures = 3
    await _deliver(
        stripe_client,
        event("evt_later", "checkout.session.completed", _paid_once(customer, "pi_x")),
    )
    [order] = await _orders(stripe_runtime, customer.account_id)
    assert order.status == OrderStatus.pending
    async with unit_of_work(stripe_runtime.sessionmaker) as session:
        stored = await session.scalar(select(WebhookEvent))
        assert stored is not None
        assert stored.processed_at is None
        assert "ProviderUnavailable" in (stored.error or "")
        # Tried again only after its backoff: the scheduler's next run leaves it alone.
        assert stored.next_attempt_at is not None
    assert await webhook_service.process_pending(stripe_runtime) == 0
    assert await _count(stripe_runtime, Payment) == 0
    async with unit_of_work(stripe_runtime.sessionmaker) as session:
        stored = await session.scalar(select(WebhookEvent))
        assert stored is not None
        stored.next_attempt_at = datetime.now(UTC) - timedelta(seconds=1)

    # Stripe answers again, the backoff is over: the next run records the payment.
    assert await webhook_service.process_pending(stripe_runtime) == 1
    [order] = await _orders(stripe_runtime, customer.account_id)
    assert order.status == OrderStatus.paid
    payment = await _payment_of(stripe_runtime, order.id)
    assert payment.fingerprint == "fp_card_of_pi_x"
    assert await _served(stripe_runtime, customer.account_id) == {customer.device_key}
    assert await webhook_service.process_pending(stripe_runtime) == 0


# --- no grace ------------------------------------------------------------------------------------


@pytest.fixture
async def no_grace_runtime(stripe_settings: Settings) -> AsyncIterator[Runtime]:
    rt = Runtime.build(stripe_settings)
    methods = rt.policy.payment_methods.model_copy(update={"past_due_grace_days": 0})
    policy = rt.policy.model_copy(update={"payment_methods": methods})
    async with running_runtime(stripe_settings, policy=policy) as rt:
        yield rt


async def test_without_grace_a_failed_payment_ends_access_at_once(
    no_grace_runtime: Runtime,
) -> None:
    async with app_client(no_grace_runtime) as client:
        customer = await _subscribed(client, no_grace_runtime)
        assert await _served(no_grace_runtime, customer.account_id) == {customer.device_key}
        end = (await _subscription(no_grace_runtime, customer.account_id)).current_period_end
        failed = _invoice(customer, 2, end + timedelta(days=30)) | {"amount_paid": 0}
        await _deliver(client, event("evt_fail", "invoice.payment_failed", failed))
    sub = await _subscription(no_grace_runtime, customer.account_id)
    assert sub.status == SubscriptionStatus.past_due
    assert not gives_access(sub)
    assert await _served(no_grace_runtime, customer.account_id) == set()
    # The expiry job ends it for good, though its period has not ended.
    assert sub.current_period_end > datetime.now(UTC)
    assert await expire_due_subscriptions(no_grace_runtime) == 1
    sub = await _subscription(no_grace_runtime, customer.account_id)
    assert sub.status == SubscriptionStatus.expired


# --- what was really paid -------------------------------------------------------------------------


async def _stored(runtime: Runtime, event_id: str) -> WebhookEvent:
    async with unit_of_work(runtime.sessionmaker) as session:
        found = await session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == event_id))
        assert found is not None
        return found


async def test_a_renewal_paid_by_a_coupon_is_a_payment_of_zero(
    stripe_client: httpx.AsyncClient, stripe_runtime: Runtime
) -> None:
    customer = await _subscribed(stripe_client, stripe_runtime)
    first_end = (await _subscription(stripe_runtime, customer.account_id)).current_period_end
    next_end = (first_end + timedelta(days=31)).replace(microsecond=0)
    free = _invoice(customer, 2, next_end, amount_paid=0)
    await _deliver(stripe_client, event("evt_free", "invoice.paid", free))
    async with unit_of_work(stripe_runtime.sessionmaker) as session:
        stored = await session.scalar(
            select(WebhookEvent).where(WebhookEvent.event_id == "evt_free")
        )
        assert stored is not None
    assert (stored.processed_at is not None, stored.error) == (True, None)
    renewal = (await _orders(stripe_runtime, customer.account_id))[-1]
    assert (renewal.kind, renewal.status, renewal.amount_minor) == (
        OrderKind.renewal,
        OrderStatus.paid,
        0,
    )
    assert (await _subscription(stripe_runtime, customer.account_id)).current_period_end == next_end


async def test_checkout_turns_adaptive_pricing_off(
    stripe_client: httpx.AsyncClient, stripe_runtime: Runtime, fake_stripe: FakeStripe
) -> None:
    async with unit_of_work(stripe_runtime.sessionmaker) as session:
        account = await create_account(session)
        token = await create_session_token(session, account)
    response = await stripe_client.post(
        "/api/v1/billing/checkout",
        json={"plan_code": "personal-monthly", "method": "card"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201, response.text
    [created] = [c for c in fake_stripe.calls if c.path == "/v1/checkout/sessions"]
    assert created.param("adaptive_pricing[enabled]") == "false"


async def test_a_converted_checkout_is_recorded_in_the_plans_currency_and_another_is_parked(
    stripe_client: httpx.AsyncClient, stripe_runtime: Runtime
) -> None:
    converted, foreign = await _customer(stripe_runtime), await _customer(stripe_runtime)
    # Adaptive Pricing on (a session made elsewhere): the customer paid EUR, burrow got USD.
    paid_eur = _paid_once(converted, "pi_eur") | {
        "amount_total": 1105,
        "currency": "eur",
        "currency_conversion": {
            "amount_subtotal": 1199,
            "amount_total": 1199,
            "fx_rate": "1.085",
            "source_currency": "usd",
        },
    }
    await _deliver(stripe_client, event("evt_eur", "checkout.session.completed", paid_eur))
    [order] = await _orders(stripe_runtime, converted.account_id)
    assert (order.status, order.amount_minor, order.currency) == (OrderStatus.paid, 1199, "USD")
    payment = await _payment_of(stripe_runtime, order.id)
    assert (payment.amount_minor, payment.currency) == (1199, "USD")

    # A currency burrow did not price in, and no conversion: parked at once for a person.
    paid_jpy = _paid_once(foreign, "pi_jpy") | {"amount_total": 1800, "currency": "jpy"}
    await _deliver(stripe_client, event("evt_jpy", "checkout.session.completed", paid_jpy))
    [order] = await _orders(stripe_runtime, foreign.account_id)
    assert order.status == OrderStatus.pending
    async with unit_of_work(stripe_runtime.sessionmaker) as session:
        stored = await session.scalar(
            select(WebhookEvent).where(WebhookEvent.event_id == "evt_jpy")
        )
        assert stored is not None
    assert stored.failed_at is not None
    assert "JPY" in (stored.error or "")


@pytest.mark.parametrize(
    ("stripe_type", "method"),
    [
        ("link", PaymentMethod.link),
        ("sepa_debit", PaymentMethod.bank_debit),
        ("paypal", PaymentMethod.paypal),
    ],
)
async def test_the_orders_method_is_what_stripe_reports(
    stripe_client: httpx.AsyncClient,
    stripe_runtime: Runtime,
    fake_stripe: FakeStripe,
    stripe_type: str,
    method: PaymentMethod,
) -> None:
    customer = await _customer(stripe_runtime)
    fake_stripe.methods["pi_other"] = stripe_type
    await _deliver(
        stripe_client,
        event("evt_m", "checkout.session.completed", _paid_once(customer, "pi_other")),
    )
    [order] = await _orders(stripe_runtime, customer.account_id)
    assert (order.status, order.payment_method) == (OrderStatus.paid, method)
    assert (await _payment_of(stripe_runtime, order.id)).fingerprint is None


# --- stored events are data too ---------------------------------------------------------------


def _review(number: int) -> dict[str, Any]:
    # A Radar review and a dispute carry the customer's address.
    return {
        "id": f"prv_{number}",
        "object": "review",
        "reason": "rule",
        "ip_address": "203.0.113.45",
        "ip_address_location": {"city": "Somewhere", "country": "NL"},
        "payment_intent": "pi_reviewed",
    }


def _dispute(number: int) -> dict[str, Any]:
    return {
        "id": f"dp_{number}",
        "object": "dispute",
        "amount": 699,
        "charge": "ch_x",
        "evidence": {"customer_purchase_ip": "2001:db8:77::5", "customer_email_address": None},
    }


async def test_a_strict_deployment_keeps_no_customer_address_and_no_handled_payload(
    stripe_client: httpx.AsyncClient, stripe_runtime: Runtime, tmp_path: Path
) -> None:
    assert stripe_runtime.policy.privacy.mode == "strict"
    assert stripe_runtime.policy.privacy.provider_event_retention_days == 0
    await _deliver(stripe_client, event("evt_review", "review.opened", _review(1)))
    await _deliver(stripe_client, event("evt_dispute", "charge.dispute.created", _dispute(1)))
    for event_id in ("evt_review", "evt_dispute"):
        stored = await _stored(stripe_runtime, event_id)
        assert stored.processed_at is not None
        assert stored.payload == "{}"
    report = await run_audit(
        stripe_runtime.engine,
        stripe_runtime.policy,
        stripe_runtime.settings,
        AuditTargets(node_state_dirs=[tmp_path / "absent"]),
    )
    # The database's findings (the resolver check looks at the machine's processes, which
    # other tests' DNS resolvers share).
    in_database = [f for f in report.violations if not f.where.startswith(("/", "resolver"))]
    assert in_database == []
    assert report.values > 0


async def test_a_parked_event_keeps_its_payload_without_the_address(
    stripe_client: httpx.AsyncClient, stripe_runtime: Runtime
) -> None:
    async with unit_of_work(stripe_runtime.sessionmaker) as session:
        await webhook_service.store(session, "nobody", "evt_n", "review.opened", _review(2))
    await webhook_service.process_pending(stripe_runtime)
    stored = await _stored(stripe_runtime, "evt_n")
    assert stored.failed_at is not None
    assert "203.0.113.45" not in stored.payload
    assert json.loads(stored.payload)["ip_address"] == "[ip removed]"


@pytest.fixture
async def metered_stripe(stripe_settings: Settings) -> AsyncIterator[Runtime]:
    async with running_runtime(stripe_settings, policy=load_policy(METERED_POLICY)) as rt:
        yield rt


async def test_metered_keeps_a_handled_payload_for_its_retention(
    metered_stripe: Runtime,
) -> None:
    days = metered_stripe.policy.privacy.provider_event_retention_days
    assert days == 30
    delivered = json.loads(event("evt_d", "charge.dispute.created", _dispute(2)))
    async with unit_of_work(metered_stripe.sessionmaker) as session:
        await webhook_service.store(session, "stripe", "evt_d", "charge.dispute.created", delivered)
    assert await webhook_service.process_pending(metered_stripe) == 1
    stored = await _stored(metered_stripe, "evt_d")
    assert json.loads(stored.payload)["data"]["object"]["id"] == "dp_2"
    assert "2001:db8:77::5" not in stored.payload
    assert await webhook_service.reduce_handled(metered_stripe) == 0
    later = datetime.now(UTC) + timedelta(days=days, minutes=1)
    assert await webhook_service.reduce_handled(metered_stripe, now=later) == 1
    reduced = await _stored(metered_stripe, "evt_d")
    assert reduced.payload == "{}"
    assert (reduced.type, reduced.event_id) == ("charge.dispute.created", "evt_d")
