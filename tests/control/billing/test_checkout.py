"""POST /api/v1/billing/checkout: a pending order and a Stripe Checkout Session, made by the
real stripe library against the local Stripe-shaped server; then Stripe's event pays it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import func, select

from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.models import Order, OrderStatus, Subscription
from burrow.control.runtime import Runtime
from tests.control.billing.conftest import STRIPE_SECRET
from tests.support.app import app_client, running_runtime
from tests.support.factories import create_account, create_session_token, create_subscription
from tests.support.stripe_server import HTTPX_DATA_WARNING, FakeStripe, event, sign
from tests.support.stripe_server import stripe_server as running_stripe

pytestmark = pytest.mark.filterwarnings(HTTPX_DATA_WARNING)

URL = "/api/v1/billing/checkout"
PROBLEM = "application/problem+json"


async def _caller(runtime: Runtime) -> tuple[int, dict[str, str]]:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
        token = await create_session_token(session, account)
        return account.id, {"Authorization": f"Bearer {token}"}


async def _orders(runtime: Runtime) -> list[Order]:
    async with unit_of_work(runtime.sessionmaker) as session:
        return list(await session.scalars(select(Order).order_by(Order.id)))


async def test_card_checkout_opens_a_subscription_session(
    stripe_client: httpx.AsyncClient, stripe_runtime: Runtime, fake_stripe: FakeStripe
) -> None:
    account_id, headers = await _caller(stripe_runtime)
    response = await stripe_client.post(
        URL, json={"plan_code": "personal-monthly", "method": "card"}, headers=headers
    )
    assert response.status_code == 201, response.text
    body = response.json()
    [order] = await _orders(stripe_runtime)
    assert body == {
        "order_id": order.id,
        "checkout_url": "https://checkout.stripe.test/c/pay/cs_test_1",
    }
    assert (order.status, order.account_id, order.amount_minor) == ("pending", account_id, 699)
    assert (order.provider, order.provider_order_id, order.payment_method) == (
        "stripe",
        "cs_test_1",
        "card",
    )

    # What the stripe library sent, as Stripe reads it.
    [call] = fake_stripe.calls
    assert (call.method, call.path) == ("POST", "/v1/checkout/sessions")
    assert call.idempotency_key.startswith(f"burrow-checkout-{order.id}-")
    expected = {
        "mode": "subscription",
        "line_items[0][quantity]": "1",
        "line_items[0][price_data][currency]": "usd",
        "line_items[0][price_data][unit_amount]": "699",
        "line_items[0][price_data][product_data][name]": "Personal, 1 month",
        "line_items[0][price_data][recurring][interval]": "month",
        "line_items[0][price_data][recurring][interval_count]": "1",
        "metadata[account_id]": str(account_id),
        "metadata[plan_code]": "personal-monthly",
        "metadata[order_id]": str(order.id),
        "subscription_data[metadata][order_id]": str(order.id),
        "subscription_data[metadata][account_id]": str(account_id),
        "client_reference_id": str(order.id),
        "success_url": f"http://testserver/billing?checkout=done&order={order.id}",
        "cancel_url": f"http://testserver/billing?checkout=cancelled&order={order.id}",
    }
    assert {name: call.param(name) for name in expected} == expected
    assert call.param("payment_intent_data[metadata][order_id]") is None

    # Stripe's completion event (with the metadata it was given) pays exactly this order.
    completed = fake_stripe.sessions[call.idempotency_key] | {
        "status": "complete",
        "payment_status": "paid",
        "subscription": "sub_from_checkout",
        "invoice": "in_first",
        "amount_total": 699,
        "currency": "usd",
    }
    payload = event("evt_done", "checkout.session.completed", completed)
    delivered = await stripe_client.post(
        "/api/v1/billing/webhooks/stripe",
        content=payload,
        headers={"Stripe-Signature": sign(payload, STRIPE_SECRET)},
    )
    assert delivered.status_code == 200
    [order] = await _orders(stripe_runtime)
    assert order.status == OrderStatus.paid
    async with unit_of_work(stripe_runtime.sessionmaker) as session:
        sub = await session.scalar(
            select(Subscription).where(Subscription.account_id == account_id)
        )
        assert sub is not None
        assert sub.provider_subscription_id == "sub_from_checkout"


async def test_a_second_renewing_subscription_is_refused(
    stripe_client: httpx.AsyncClient, stripe_runtime: Runtime, fake_stripe: FakeStripe
) -> None:
    async with unit_of_work(stripe_runtime.sessionmaker) as session:
        account = await create_account(session)
        sub = await create_subscription(session, account)
        sub.provider, sub.provider_subscription_id = "stripe", "sub_existing"
        token = await create_session_token(session, account)
    headers = {"Authorization": f"Bearer {token}"}
    body = {"plan_code": "personal-yearly", "method": "card"}
    response = await stripe_client.post(URL, json=body, headers=headers)
    assert response.status_code == 409
    assert "a second one would charge you twice" in response.json()["detail"]
    assert fake_stripe.calls == []
    assert await _orders(stripe_runtime) == []

    # Once it is cancelled, a new one may be bought (it starts when paid).
    async with unit_of_work(stripe_runtime.sessionmaker) as session:
        loaded = await session.get(Subscription, sub.id)
        assert loaded is not None
        loaded.cancel_at_period_end = True
    response = await stripe_client.post(URL, json=body, headers=headers)
    assert response.status_code == 201, response.text


@pytest.fixture
async def one_off_runtime(stripe_settings: Settings) -> AsyncIterator[Runtime]:
    """A policy under which cards pay one period at a time."""
    rt = Runtime.build(stripe_settings)
    methods = rt.policy.payment_methods.model_copy(update={"recurring": []})
    policy = rt.policy.model_copy(update={"payment_methods": methods})
    async with running_runtime(stripe_settings, policy=policy) as rt:
        yield rt


async def test_a_method_that_does_not_renew_pays_once(
    one_off_runtime: Runtime, fake_stripe: FakeStripe
) -> None:
    _, headers = await _caller(one_off_runtime)
    async with app_client(one_off_runtime) as client:
        response = await client.post(
            URL, json={"plan_code": "personal-yearly", "method": "card"}, headers=headers
        )
    assert response.status_code == 201, response.text
    [call] = fake_stripe.calls
    assert call.param("mode") == "payment"
    assert call.param("line_items[0][price_data][unit_amount]") == "4999"
    assert call.param("line_items[0][price_data][recurring][interval]") is None
    assert call.param("payment_intent_data[metadata][order_id]") == str(response.json()["order_id"])
    assert call.param("subscription_data[metadata][order_id]") is None


async def test_refusals_are_problems_and_keep_no_order(
    stripe_client: httpx.AsyncClient, stripe_runtime: Runtime, fake_stripe: FakeStripe
) -> None:
    _, headers = await _caller(stripe_runtime)
    cases = [
        (
            {"plan_code": "personal-monthly", "method": "app_store"},
            422,
            "choose one of: card, paypal, crypto",
        ),
        # Offered by the policy, but no provider for it runs here.
        ({"plan_code": "personal-monthly", "method": "paypal"}, 409, "PayPal payments are not"),
        ({"plan_code": "no-such-plan", "method": "card"}, 422, "no-such-plan"),
        ({"plan_code": "personal-monthly", "method": "cash"}, 422, ""),
        ({"plan_code": "personal-monthly"}, 422, ""),
    ]
    for body, status, words in cases:
        response = await stripe_client.post(URL, json=body, headers=headers)
        assert response.status_code == status, (body, response.text)
        assert response.headers["content-type"] == PROBLEM
        assert words in response.json()["detail"]
    unsigned = await stripe_client.post(
        URL, json={"plan_code": "personal-monthly", "method": "card"}
    )
    assert unsigned.status_code == 401
    assert await _orders(stripe_runtime) == []
    assert fake_stripe.calls == []


async def test_without_stripe_card_checkout_says_so(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    _, headers = await _caller(runtime)
    response = await client.post(
        URL, json={"plan_code": "personal-monthly", "method": "card"}, headers=headers
    )
    assert response.status_code == 409
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["detail"] == (
        "Card payments are not set up on this server; pay by another method or contact support."
    )
    assert await _orders(runtime) == []


async def test_stripe_failing_or_unreachable_is_a_502_and_keeps_nothing(
    stripe_settings: Settings, fake_stripe: FakeStripe
) -> None:
    # Stripe answering 500 (more often than the library retries), then nobody listening.
    with running_stripe() as gone:
        closed = gone.url
    for api_base, failures in [(fake_stripe.url, 10), (closed, 0)]:
        fake_stripe.failures = failures
        settings = stripe_settings.model_copy(update={"stripe_api_base": api_base})
        async with running_runtime(settings) as runtime:
            _, headers = await _caller(runtime)
            async with app_client(runtime) as client:
                response = await client.post(
                    URL, json={"plan_code": "personal-monthly", "method": "card"}, headers=headers
                )
            assert response.status_code == 502, response.text
            assert response.headers["content-type"] == PROBLEM
            assert "Nothing was charged" in response.json()["detail"]
            async with unit_of_work(runtime.sessionmaker) as session:
                assert await session.scalar(select(func.count()).select_from(Order)) == 0
    # The library tried three times (its two retries), each with the same key.
    keys = {call.idempotency_key for call in fake_stripe.calls}
    assert len(fake_stripe.calls) == 3
    assert len(keys) == 1
