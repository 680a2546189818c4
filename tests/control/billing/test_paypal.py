"""PayPal: checkout, webhooks and refunds through PayPal's own server SDK.

A local server on loopback answers as PayPal's REST API does (the OAuth token, Orders v2,
captures' refunds, Subscriptions, verify-webhook-signature) and records what it was sent; the
real SDK and burrow's httpx calls talk to it. Deliveries are posted to the real app as PayPal
posts them, with its transmission headers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from burrow.control.billing.service import webhook as webhook_service
from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.models import (
    Account,
    Order,
    OrderKind,
    OrderStatus,
    Payment,
    PaymentMethod,
    RefundRequest,
    RefundStatus,
    Subscription,
    SubscriptionStatus,
    WebhookEvent,
)
from burrow.control.payments.registry import registry as payment_providers
from burrow.control.policy.service import load_policy
from burrow.control.refunds.service import refund as refund_service
from burrow.control.refunds.tasks import execute_approved_refunds
from burrow.control.runtime import Runtime
from tests.conftest import METERED_POLICY
from tests.support.app import app_client, running_runtime
from tests.support.factories import create_account, create_session_token
from tests.support.paypal_server import PAYER_ID, FakePayPal, running_paypal

URL = "/api/v1/billing/webhooks/paypal"
PROBLEM = "application/problem+json"
PLAN = "personal-monthly"  # 6.99 USD a month in the strict seed


@pytest.fixture
def fake_paypal() -> Iterator[FakePayPal]:
    with running_paypal() as server:
        yield server


@pytest.fixture
async def pp_runtime(settings: Settings, fake_paypal: FakePayPal) -> AsyncIterator[Runtime]:
    async with running_runtime(fake_paypal.settings(settings)) as rt:
        yield rt


@pytest.fixture
async def pp_client(pp_runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(pp_runtime) as client:
        yield client


async def _customer(runtime: Runtime, email: str | None = None) -> tuple[Account, dict[str, str]]:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session, email=email)
        token = await create_session_token(session, account)
    return account, {"Authorization": f"Bearer {token}"}


async def _checkout(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    return await client.post(
        "/api/v1/billing/checkout", json={"plan_code": PLAN, "method": "paypal"}, headers=headers
    )


async def _deliver(
    client: httpx.AsyncClient, fake: FakePayPal, event: dict[str, Any], *, genuine: bool = True
) -> httpx.Response:
    payload = json.dumps(event).encode()
    return await client.post(URL, content=payload, headers=fake.sign(event, genuine=genuine))


async def _order(runtime: Runtime, order_id: int) -> Order:
    async with unit_of_work(runtime.sessionmaker) as session:
        found = await session.get(Order, order_id)
        assert found is not None
        return found


async def _rows(runtime: Runtime, model: type[Any], **where: Any) -> list[Any]:
    async with unit_of_work(runtime.sessionmaker) as session:
        query = select(model).filter_by(**where).order_by(model.id)
        return list((await session.scalars(query)).all())


async def _count(runtime: Runtime, model: type[Any]) -> int:
    async with unit_of_work(runtime.sessionmaker) as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def _paid_by_paypal(
    runtime: Runtime,
    client: httpx.AsyncClient,
    fake: FakePayPal,
    *,
    payer: str = PAYER_ID,
    email: str | None = None,
) -> tuple[Account, Order]:
    """A customer checks out with PayPal, approves at PayPal, and PayPal reports it."""
    account, headers = await _customer(runtime, email)
    started = await _checkout(client, headers)
    assert started.status_code == 201, started.text
    order = await _order(runtime, started.json()["order_id"])
    assert order.provider_order_id is not None
    fake.approve(order.provider_order_id, payer)
    approved = fake.event("CHECKOUT.ORDER.APPROVED", fake.orders[order.provider_order_id])
    delivered = await _deliver(client, fake, approved)
    assert delivered.status_code == 200, delivered.text
    return account, await _order(runtime, order.id)


# --- not set up -------------------------------------------------------------------------------


async def test_without_paypal_settings_checkout_is_409_and_the_webhook_404(
    settings: Settings, fake_paypal: FakePayPal
) -> None:
    async with running_runtime(settings) as rt, app_client(rt) as client:
        assert payment_providers.refunds("paypal", rt.settings) is not None
        _account, headers = await _customer(rt)
        refused = await _checkout(client, headers)
        assert refused.status_code == 409, refused.text
        assert refused.headers["content-type"].startswith(PROBLEM)
        assert "PayPal payments are not set up" in refused.json()["detail"]
        event = fake_paypal.event("CHECKOUT.ORDER.APPROVED", {"id": "X"})
        assert (await _deliver(client, fake_paypal, event)).status_code == 404
        assert await _count(rt, Order) == 0
        assert await _count(rt, WebhookEvent) == 0
    assert fake_paypal.calls == []


async def test_paypal_unreachable_at_checkout_is_502_and_no_order_is_kept(
    pp_runtime: Runtime, pp_client: httpx.AsyncClient, fake_paypal: FakePayPal
) -> None:
    _account, headers = await _customer(pp_runtime)
    fake_paypal.failures = 1
    refused = await _checkout(pp_client, headers)
    assert refused.status_code == 502, refused.text
    assert refused.headers["content-type"].startswith(PROBLEM)
    assert "We could not reach PayPal" in refused.json()["detail"]
    assert await _count(pp_runtime, Order) == 0
    assert fake_paypal.orders == {}


async def test_credentials_paypal_refuses_are_502_at_checkout_and_503_for_deliveries(
    settings: Settings, fake_paypal: FakePayPal
) -> None:
    wrong = fake_paypal.settings(settings).model_copy(
        update={"paypal_client_secret": SecretStr("not-the-secret")}
    )
    async with running_runtime(wrong) as rt, app_client(rt) as client:
        _account, headers = await _customer(rt)
        refused = await _checkout(client, headers)
        assert refused.status_code == 502, refused.text
        event = fake_paypal.event("CHECKOUT.ORDER.APPROVED", {"id": "X"})
        assert (await _deliver(client, fake_paypal, event)).status_code == 503
        assert await _count(rt, Order) == 0
        assert await _count(rt, WebhookEvent) == 0


# --- one-time orders --------------------------------------------------------------------------


async def test_checkout_approve_capture_pays_the_order_once(
    pp_runtime: Runtime, pp_client: httpx.AsyncClient, fake_paypal: FakePayPal
) -> None:
    account, headers = await _customer(pp_runtime)
    started = await _checkout(pp_client, headers)
    assert started.status_code == 201, started.text
    order = await _order(pp_runtime, started.json()["order_id"])
    remote_id = order.provider_order_id
    assert remote_id is not None
    assert order.status == OrderStatus.pending
    # The approve link PayPal gave is where the customer goes.
    assert started.json()["checkout_url"] == f"{fake_paypal.url}/checkoutnow?token={remote_id}"
    [created] = fake_paypal.made("POST", "/v2/checkout/orders")
    unit = created.body["purchase_units"][0]
    assert unit["amount"] == {"currency_code": "USD", "value": "6.99"}
    assert unit["custom_id"] == str(order.id)
    assert unit["invoice_id"].startswith(f"burrow-{order.id}-")
    assert created.request_id.startswith(f"burrow-order-{order.id}-")

    fake_paypal.approve(remote_id)
    approved = fake_paypal.event("CHECKOUT.ORDER.APPROVED", fake_paypal.orders[remote_id])
    delivered = await _deliver(pp_client, fake_paypal, approved)
    assert delivered.status_code == 200, delivered.text
    assert delivered.json() == {"received": True, "duplicate": False}

    paid = await _order(pp_runtime, order.id)
    assert (paid.status, paid.kind, paid.payment_method) == (
        OrderStatus.paid,
        OrderKind.first,
        PaymentMethod.paypal,
    )
    [capture_call] = fake_paypal.made("POST", f"/v2/checkout/orders/{remote_id}/capture")
    assert capture_call.request_id == f"burrow-capture-{remote_id}"
    [capture_id] = fake_paypal.captures
    [payment] = await _rows(pp_runtime, Payment, order_id=order.id)
    assert payment.provider == "paypal"
    assert payment.provider_payment_id == capture_id
    assert (payment.amount_minor, payment.currency) == (699, "USD")
    # The payer's PayPal id is the order's person, as a card's fingerprint is.
    assert payment.fingerprint == f"paypal-payer:{PAYER_ID}"
    [sub] = await _rows(pp_runtime, Subscription, account_id=account.id)
    assert sub.status == SubscriptionStatus.active

    # PayPal's capture event about the same money changes nothing.
    capture = fake_paypal.orders[remote_id]["purchase_units"][0]["payments"]["captures"][0]
    completed = fake_paypal.event("PAYMENT.CAPTURE.COMPLETED", capture)
    assert (await _deliver(pp_client, fake_paypal, completed)).status_code == 200
    assert len(await _rows(pp_runtime, Payment, order_id=order.id)) == 1
    assert len(fake_paypal.made("POST", f"/v2/checkout/orders/{remote_id}/capture")) == 1
    assert await _count(pp_runtime, Order) == 1


async def test_a_capture_event_alone_pays_the_order(
    pp_runtime: Runtime, pp_client: httpx.AsyncClient, fake_paypal: FakePayPal
) -> None:
    """The approval event lost, the order captured elsewhere: the capture's event pays it."""
    _account, headers = await _customer(pp_runtime)
    started = await _checkout(pp_client, headers)
    order = await _order(pp_runtime, started.json()["order_id"])
    remote_id = order.provider_order_id
    assert remote_id is not None
    fake_paypal.approve(remote_id)
    with fake_paypal.lock:
        fake_paypal._capture(fake_paypal.orders[remote_id])
    capture = fake_paypal.orders[remote_id]["purchase_units"][0]["payments"]["captures"][0]
    event = fake_paypal.event("PAYMENT.CAPTURE.COMPLETED", capture)
    assert (await _deliver(pp_client, fake_paypal, event)).status_code == 200
    paid = await _order(pp_runtime, order.id)
    assert paid.status == OrderStatus.paid
    [payment] = await _rows(pp_runtime, Payment, order_id=order.id)
    assert (payment.provider_payment_id, payment.fingerprint) == (
        capture["id"],
        f"paypal-payer:{PAYER_ID}",
    )


# --- subscriptions ----------------------------------------------------------------------------


async def test_subscription_checkout_activates_renews_and_stops(
    settings: Settings, fake_paypal: FakePayPal
) -> None:
    configured = fake_paypal.settings(settings).model_copy(
        update={"paypal_plan_ids": {PLAN: "P-5ML4271244454362WXNWU5NQ"}}
    )
    async with running_runtime(configured) as rt, app_client(rt) as client:
        # The strict seed makes PayPal recurring.
        assert "paypal" in [str(m) for m in rt.policy.payment_methods.recurring]
        account, headers = await _customer(rt)
        started = await _checkout(client, headers)
        assert started.status_code == 201, started.text
        order = await _order(rt, started.json()["order_id"])
        sub_id = order.provider_order_id
        assert sub_id is not None
        assert sub_id.startswith("I-")
        assert "/webapps/billing/subscriptions?ba_token=" in started.json()["checkout_url"]
        [created] = fake_paypal.made("POST", "/v1/billing/subscriptions")
        assert created.body["plan_id"] == "P-5ML4271244454362WXNWU5NQ"
        assert created.body["custom_id"] == str(order.id)

        # The payer approves; PayPal activates and takes the first payment. The activation
        # may arrive before the payment: it waits for it.
        sale = fake_paypal.activate(sub_id)
        activated = fake_paypal.event(
            "BILLING.SUBSCRIPTION.ACTIVATED", fake_paypal.subscriptions[sub_id]
        )
        assert (await _deliver(client, fake_paypal, activated)).status_code == 200
        first_sale = fake_paypal.event("PAYMENT.SALE.COMPLETED", sale)
        assert (await _deliver(client, fake_paypal, first_sale)).status_code == 200
        paid = await _order(rt, order.id)
        assert (paid.status, paid.payment_method) == (OrderStatus.paid, PaymentMethod.paypal)
        [sub] = await _rows(rt, Subscription, account_id=account.id)
        assert sub.status == SubscriptionStatus.active
        assert (sub.provider, sub.provider_subscription_id) == ("paypal", sub_id)
        end = sub.current_period_end.replace(tzinfo=sub.current_period_end.tzinfo or UTC)
        assert end == datetime(2027, 1, 7, 3, 0, tzinfo=UTC)
        [first] = await _rows(rt, Payment, order_id=order.id)
        assert first.provider_payment_id == sale["id"]
        assert first.fingerprint == f"paypal-payer:{PAYER_ID}"

        # A renewal: a new order, paid, on the same subscription.
        renewal = fake_paypal.renew(sub_id)
        renewed = fake_paypal.event("PAYMENT.SALE.COMPLETED", renewal)
        assert (await _deliver(client, fake_paypal, renewed)).status_code == 200
        orders = await _rows(rt, Order, account_id=account.id)
        assert [(o.kind, o.status) for o in orders] == [
            (OrderKind.first, OrderStatus.paid),
            (OrderKind.renewal, OrderStatus.paid),
        ]
        assert orders[1].payment_method == PaymentMethod.paypal

        # Cancelled at PayPal: no more renewals, the period paid for runs out.
        with fake_paypal.lock:
            fake_paypal.subscriptions[sub_id]["status"] = "CANCELLED"
        cancelled = fake_paypal.event(
            "BILLING.SUBSCRIPTION.CANCELLED", fake_paypal.subscriptions[sub_id]
        )
        cancelled["create_time"] = "2026-12-07T04:00:00Z"
        assert (await _deliver(client, fake_paypal, cancelled)).status_code == 200
        [sub] = await _rows(rt, Subscription, account_id=account.id)
        assert sub.cancel_at_period_end is True
        assert sub.status == SubscriptionStatus.active


# --- deliveries ---------------------------------------------------------------------------------


async def test_a_forged_delivery_is_refused_and_stored_nowhere(
    pp_runtime: Runtime, pp_client: httpx.AsyncClient, fake_paypal: FakePayPal
) -> None:
    _account, headers = await _customer(pp_runtime)
    order = await _order(pp_runtime, (await _checkout(pp_client, headers)).json()["order_id"])
    assert order.provider_order_id is not None
    fake_paypal.approve(order.provider_order_id)
    event = fake_paypal.event(
        "CHECKOUT.ORDER.APPROVED", fake_paypal.orders[order.provider_order_id]
    )
    forged = await _deliver(pp_client, fake_paypal, event, genuine=False)
    assert forged.status_code == 400, forged.text
    assert forged.headers["content-type"].startswith(PROBLEM)
    # PayPal itself was asked, with our webhook id and the event.
    [check] = fake_paypal.made("POST", "/v1/notifications/verify-webhook-signature")
    assert check.body["webhook_id"] == "WH-TEST-0001"
    assert check.body["webhook_event"]["id"] == event["id"]
    # Without PayPal's transmission headers, or not JSON: refused without asking.
    bare = await pp_client.post(URL, content=json.dumps(event).encode())
    assert bare.status_code == 400
    garbage = await pp_client.post(URL, content=b"{not json", headers=fake_paypal.sign(event))
    assert garbage.status_code == 400
    assert await _count(pp_runtime, WebhookEvent) == 0
    assert (await _order(pp_runtime, order.id)).status == OrderStatus.pending
    assert fake_paypal.made("POST", f"/v2/checkout/orders/{order.provider_order_id}/capture") == []


async def test_a_duplicate_delivery_changes_nothing(
    pp_runtime: Runtime, pp_client: httpx.AsyncClient, fake_paypal: FakePayPal
) -> None:
    _account, order = await _paid_by_paypal(pp_runtime, pp_client, fake_paypal)
    assert order.status == OrderStatus.paid
    [stored] = await _rows(pp_runtime, WebhookEvent)
    assert (stored.provider, stored.processed_at is not None) == ("paypal", True)
    remote_id = order.provider_order_id
    assert remote_id is not None
    again = fake_paypal.event("CHECKOUT.ORDER.APPROVED", fake_paypal.orders[remote_id])
    again["id"] = stored.event_id
    answer = await _deliver(pp_client, fake_paypal, again)
    assert answer.status_code == 200
    assert answer.json() == {"received": True, "duplicate": True}
    assert await _count(pp_runtime, WebhookEvent) == 1
    assert await _count(pp_runtime, Payment) == 1
    assert len(fake_paypal.made("POST", f"/v2/checkout/orders/{remote_id}/capture")) == 1


async def test_twenty_deliveries_at_once_pay_the_order_once(
    pp_runtime: Runtime, pp_client: httpx.AsyncClient, fake_paypal: FakePayPal
) -> None:
    """PayPal resends (same id) and a second approval event (another id) arrive together,
    with the scheduler running beside them: one capture at PayPal, one payment here."""
    _account, headers = await _customer(pp_runtime)
    order = await _order(pp_runtime, (await _checkout(pp_client, headers)).json()["order_id"])
    remote_id = order.provider_order_id
    assert remote_id is not None
    fake_paypal.approve(remote_id)
    first = fake_paypal.event("CHECKOUT.ORDER.APPROVED", fake_paypal.orders[remote_id])
    second = fake_paypal.event("CHECKOUT.ORDER.APPROVED", fake_paypal.orders[remote_id])
    answers = await asyncio.gather(
        *(_deliver(pp_client, fake_paypal, first if n % 2 else second) for n in range(20)),
        *(webhook_service.process_pending(pp_runtime) for _ in range(3)),
    )
    statuses = [a.status_code for a in answers if isinstance(a, httpx.Response)]
    assert statuses == [200] * 20
    await webhook_service.process_pending(pp_runtime)
    events = await _rows(pp_runtime, WebhookEvent)
    assert len(events) == 2
    assert all(e.processed_at is not None for e in events), [e.error for e in events]
    assert len(await _rows(pp_runtime, Payment, order_id=order.id)) == 1
    assert (await _order(pp_runtime, order.id)).status == OrderStatus.paid
    assert len(fake_paypal.captures) == 1


async def test_paypal_unreachable_for_verification_is_503_and_nothing_stored(
    pp_runtime: Runtime, pp_client: httpx.AsyncClient, fake_paypal: FakePayPal
) -> None:
    fake_paypal.failures = 1
    event = fake_paypal.event("CHECKOUT.ORDER.APPROVED", {"id": "NOPE"})
    answer = await _deliver(pp_client, fake_paypal, event)
    assert answer.status_code == 503, answer.text
    assert await _count(pp_runtime, WebhookEvent) == 0


# --- refunds ------------------------------------------------------------------------------------


def _refund_calls(fake: FakePayPal) -> list[Any]:
    return [c for c in fake.calls if c.method == "POST" and c.path.endswith("/refund")]


async def _approve(runtime: Runtime, account: Account, order: Order) -> RefundRequest:
    """The strict seed queues a refund for a person; an administrator approves it."""
    async with unit_of_work(runtime.sessionmaker) as session:
        admin = await create_account(session, admin=True)
        view = await refund_service.request(session, runtime, account, order.id, "Broken")
        assert view.request.status == RefundStatus.queued, view.request.decision_reason
        approved = await refund_service.approve(
            session, runtime, admin, view.request.id, None, "Did not work as advertised."
        )
        return approved.request


async def test_a_refund_goes_out_once_with_paypal_request_id(
    pp_runtime: Runtime, pp_client: httpx.AsyncClient, fake_paypal: FakePayPal
) -> None:
    account, order = await _paid_by_paypal(pp_runtime, pp_client, fake_paypal)
    request = await _approve(pp_runtime, account, order)
    assert request.status == RefundStatus.executed
    [call] = _refund_calls(fake_paypal)
    [capture_id] = fake_paypal.captures
    assert call.path == f"/v2/payments/captures/{capture_id}/refund"
    # The refund's own deployment-unique key, as PayPal's idempotency header.
    assert request.provider_reference is not None
    assert call.request_id == f"burrow-refund-{request.provider_reference}"
    assert call.body["custom_id"] == request.provider_reference
    assert call.body["amount"] == {"value": "6.99", "currency_code": "USD"}
    [made] = fake_paypal.refunds.values()
    assert request.provider_refund_id == made["id"]
    refunded = await _order(pp_runtime, order.id)
    assert (refunded.status, refunded.refunded_minor) == (OrderStatus.refunded, 699)
    assert await execute_approved_refunds(pp_runtime) == 0
    assert len(_refund_calls(fake_paypal)) == 1


async def test_a_refund_answered_with_a_5xx_is_found_at_paypal_not_sent_again(
    pp_runtime: Runtime, pp_client: httpx.AsyncClient, fake_paypal: FakePayPal
) -> None:
    account, order = await _paid_by_paypal(pp_runtime, pp_client, fake_paypal)
    fake_paypal.lost_answers = 1  # PayPal makes the refund, the answer is a 500
    request = await _approve(pp_runtime, account, order)
    assert request.status == RefundStatus.approved
    assert await execute_approved_refunds(pp_runtime) == 1
    assert await execute_approved_refunds(pp_runtime) == 0
    [stored] = await _rows(pp_runtime, RefundRequest, id=request.id)
    [made] = fake_paypal.refunds.values()
    assert (stored.status, stored.provider_refund_id) == (RefundStatus.executed, made["id"])
    # Looked up in PayPal's order (by the refund's custom_id) before any retry: one refund.
    assert len(_refund_calls(fake_paypal)) == 1
    lookups = fake_paypal.made("GET", f"/v2/checkout/orders/{order.provider_order_id}")
    assert lookups
    assert fake_paypal.calls.index(lookups[-1]) > fake_paypal.calls.index(
        _refund_calls(fake_paypal)[0]
    )
    assert (await _order(pp_runtime, order.id)).refunded_minor == 699


async def test_a_refund_paypal_never_made_is_sent_again_under_a_new_key(
    pp_runtime: Runtime, pp_client: httpx.AsyncClient, fake_paypal: FakePayPal
) -> None:
    account, order = await _paid_by_paypal(pp_runtime, pp_client, fake_paypal)
    fake_paypal.failures = 1  # a 500 and no refund
    request = await _approve(pp_runtime, account, order)
    assert request.status == RefundStatus.approved
    first_key = request.idempotency_key
    assert fake_paypal.refunds == {}
    assert await execute_approved_refunds(pp_runtime) == 1
    posts = _refund_calls(fake_paypal)
    assert len(posts) == 2
    assert posts[0].request_id == first_key
    assert posts[1].request_id not in (first_key, "")
    assert len(fake_paypal.refunds) == 1
    [stored] = await _rows(pp_runtime, RefundRequest, id=request.id)
    assert stored.status == RefundStatus.executed


# --- the policy's rules for the "paypal" method class -------------------------------------------


async def test_paypal_is_refused_where_the_policy_excludes_it(
    settings: Settings, fake_paypal: FakePayPal
) -> None:
    async with running_runtime(fake_paypal.settings(settings)) as strict:
        assert strict.policy.refunds is not None
        rules = strict.policy.refunds.model_copy(
            update={"excluded_payment_methods": ["crypto", "paypal"]}
        )
        policy = strict.policy.model_copy(update={"refunds": rules})
    async with running_runtime(fake_paypal.settings(settings), policy=policy) as rt:
        async with app_client(rt) as client:
            account, order = await _paid_by_paypal(rt, client, fake_paypal)
        async with unit_of_work(rt.sessionmaker) as session:
            view = await refund_service.request(session, rt, account, order.id, "Broken")
        assert view.request.status == RefundStatus.refused
        failed = [o for o in view.outcomes if not o.passed]
        assert [o.rule for o in failed] == ["excluded_payment_methods"]
        assert "paypal" in failed[0].evidence
    assert _refund_calls(fake_paypal) == []


async def test_one_refund_per_paypal_payer_across_accounts(
    settings: Settings, fake_paypal: FakePayPal
) -> None:
    """The metered seed's "one per person" (its refunds decided at once), with PayPal offered:
    a second account paying from the same PayPal account is not refunded again."""
    metered = load_policy(METERED_POLICY)
    methods = metered.payment_methods.model_copy(
        update={"offered": [*metered.payment_methods.offered, PaymentMethod.paypal]}
    )
    policy = metered.model_copy(update={"payment_methods": methods})
    assert policy.refunds is not None
    assert policy.refunds.one_per_person
    async with (
        running_runtime(fake_paypal.settings(settings), policy=policy) as rt,
        app_client(rt) as client,
    ):
        first, first_order = await _paid_by_paypal(rt, client, fake_paypal, email="a@one.example")
        second, second_order = await _paid_by_paypal(rt, client, fake_paypal, email="b@two.example")
        async with unit_of_work(rt.sessionmaker) as session:
            granted = await refund_service.request(session, rt, first, first_order.id, "Slow")
        assert granted.request.status == RefundStatus.executed
        async with unit_of_work(rt.sessionmaker) as session:
            refused = await refund_service.request(session, rt, second, second_order.id, "Slow")
        assert refused.request.status == RefundStatus.refused
        failed = [o for o in refused.outcomes if not o.passed]
        assert [o.rule for o in failed] == ["one_per_person"]
        assert json.loads(failed[0].evidence) == {
            "same_email": False,
            "same_payment_fingerprint": True,
        }
    assert len(_refund_calls(fake_paypal)) == 1


async def test_a_refund_made_in_paypals_dashboard_is_recorded_once(
    pp_runtime: Runtime, pp_client: httpx.AsyncClient, fake_paypal: FakePayPal
) -> None:
    account, order = await _paid_by_paypal(pp_runtime, pp_client, fake_paypal)
    [capture_id] = fake_paypal.captures
    part = fake_paypal.refund_in_dashboard(capture_id, "2.00")
    event = fake_paypal.event("PAYMENT.CAPTURE.REFUNDED", part)
    assert (await _deliver(pp_client, fake_paypal, event)).status_code == 200
    partly = await _order(pp_runtime, order.id)
    assert (partly.status, partly.refunded_minor) == (OrderStatus.partially_refunded, 200)
    # Delivered again under another id: the total is PayPal's, nothing is counted twice.
    again = fake_paypal.event("PAYMENT.CAPTURE.REFUNDED", part)
    assert (await _deliver(pp_client, fake_paypal, again)).status_code == 200
    assert (await _order(pp_runtime, order.id)).refunded_minor == 200
    rest = fake_paypal.refund_in_dashboard(capture_id, "4.99")
    event = fake_paypal.event("PAYMENT.CAPTURE.REFUNDED", rest)
    assert (await _deliver(pp_client, fake_paypal, event)).status_code == 200
    refunded = await _order(pp_runtime, order.id)
    assert (refunded.status, refunded.refunded_minor) == (OrderStatus.refunded, 699)
    [sub] = await _rows(pp_runtime, Subscription, account_id=account.id)
    assert sub.status != SubscriptionStatus.active


async def test_cancel_resume_and_refund_stop_the_paypal_subscription(
    settings: Settings, fake_paypal: FakePayPal
) -> None:
    """The registry's renewal side for PayPal: a customer's cancel suspends the PayPal
    subscription (no more charges, the paid period runs out), resume activates it again, and
    a refund cancels it for good."""
    configured = fake_paypal.settings(settings).model_copy(
        update={"paypal_plan_ids": {PLAN: "P-5ML4271244454362WXNWU5NQ"}}
    )
    async with running_runtime(configured) as rt, app_client(rt) as client:
        account, headers = await _customer(rt)
        order_id = (await _checkout(client, headers)).json()["order_id"]
        sub_id = (await _order(rt, order_id)).provider_order_id
        assert sub_id is not None
        sale = fake_paypal.event("PAYMENT.SALE.COMPLETED", fake_paypal.activate(sub_id))
        assert (await _deliver(client, fake_paypal, sale)).status_code == 200
        cancelled = await client.post("/api/v1/subscriptions/current/cancel", headers=headers)
        assert cancelled.status_code == 200, cancelled.text
        assert fake_paypal.subscriptions[sub_id]["status"] == "SUSPENDED"
        resumed = await client.post("/api/v1/subscriptions/current/resume", headers=headers)
        assert resumed.status_code == 200, resumed.text
        assert fake_paypal.subscriptions[sub_id]["status"] == "ACTIVE"
        order = await _order(rt, order_id)
        request = await _approve(rt, account, order)
        assert request.status == RefundStatus.executed
        # A subscription's payment is refunded through its sale's id.
        [call] = _refund_calls(fake_paypal)
        assert call.path == f"/v2/payments/captures/{sale['resource']['id']}/refund"
        for _ in range(50):  # the cancel at PayPal runs after the refund's commit
            if fake_paypal.subscriptions[sub_id]["status"] == "CANCELLED":
                break
            await asyncio.sleep(0.05)
        assert fake_paypal.subscriptions[sub_id]["status"] == "CANCELLED"


async def test_a_subscription_payments_refund_lost_in_a_5xx_is_never_sent_blind(
    settings: Settings, fake_paypal: FakePayPal
) -> None:
    """PayPal lists no refunds of a subscription's payment to look one up by: after an
    unclear answer the refund waits for a person instead of going out a second time."""
    configured = fake_paypal.settings(settings).model_copy(
        update={"paypal_plan_ids": {PLAN: "P-5ML4271244454362WXNWU5NQ"}}
    )
    async with running_runtime(configured) as rt, app_client(rt) as client:
        account, headers = await _customer(rt)
        order_id = (await _checkout(client, headers)).json()["order_id"]
        sub_id = (await _order(rt, order_id)).provider_order_id
        assert sub_id is not None
        sale = fake_paypal.event("PAYMENT.SALE.COMPLETED", fake_paypal.activate(sub_id))
        assert (await _deliver(client, fake_paypal, sale)).status_code == 200
        fake_paypal.lost_answers = 1
        request = await _approve(rt, account, await _order(rt, order_id))
        assert request.status == RefundStatus.approved
        assert await execute_approved_refunds(rt) == 0
        assert await execute_approved_refunds(rt) == 0
        [stored] = await _rows(rt, RefundRequest, id=request.id)
        assert stored.status == RefundStatus.approved
        assert len(_refund_calls(fake_paypal)) == 1
        assert len(fake_paypal.refunds) == 1
