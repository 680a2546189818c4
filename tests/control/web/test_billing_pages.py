"""Billing: plans and checkout refusals, orders and payments, a refund request followed to its
rule-by-rule decision."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from burrow.control.audit.service import CliOperator
from burrow.control.billing.service import billing as billing_service
from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.models import PaymentMethod
from burrow.control.runtime import Runtime
from tests.control.web.conftest import MakeWebCustomer, WebCustomer
from tests.support.paypal_server import FakePayPal, running_paypal
from tests.support.stripe_server import HTTPX_DATA_WARNING, FakeStripe, stripe_server
from tests.support.web import field_error, post_form


async def _paid_order(runtime: Runtime, customer: WebCustomer, method: PaymentMethod) -> int:
    async with unit_of_work(runtime.sessionmaker) as session:
        recorded = await billing_service.record_manual_payment(
            session,
            runtime,
            CliOperator("test"),
            customer.account.id,
            "personal-monthly",
            699,
            "USD",
            method,
            f"ref-{customer.account.id}-{method}",
        )
        return recorded.order.id


async def test_billing_shows_plans_methods_and_no_orders(
    client: httpx.AsyncClient, web_customer: MakeWebCustomer
) -> None:
    await web_customer(None)
    page = await client.get("/billing")
    assert page.status_code == 200
    assert "Personal, 1 month — 6.99 USD for 1 month" in page.text
    # No provider is set up here: the page offers no method it could not take.
    assert 'id="method-card"' not in page.text
    assert 'id="method-crypto"' not in page.text
    assert 'id="method-paypal"' not in page.text
    assert 'id="no-methods"' in page.text
    assert 'id="no-orders"' in page.text
    assert "within 30 days" in page.text


async def test_checkout_refusals_are_shown_on_the_page(
    client: httpx.AsyncClient, web_customer: MakeWebCustomer
) -> None:
    await web_customer(None)
    blank = await post_form(client, "/billing/checkout", {"plan_code": ""}, page="/billing")
    assert blank.status_code == 422
    assert field_error(blank, "plan_code") == "String should have at least 1 character"
    assert field_error(blank, "method") == "Field required"
    not_offered = await post_form(
        client,
        "/billing/checkout",
        {"plan_code": "personal-monthly", "method": "app_store"},
        page="/billing",
    )
    assert not_offered.status_code == 422
    assert "does not take payment by app_store" in (field_error(not_offered, "method") or "")
    not_set_up = await post_form(
        client,
        "/billing/checkout",
        {"plan_code": "personal-monthly", "method": "card"},
        page="/billing",
    )
    assert not_set_up.status_code == 409
    assert "Card payments are not set up on this server" in not_set_up.text
    assert 'id="plan-personal-monthly" value="personal-monthly" checked' in not_set_up.text


async def test_refund_request_shows_its_decision_rule_by_rule(
    client: httpx.AsyncClient, runtime: Runtime, web_customer: MakeWebCustomer
) -> None:
    customer = await web_customer(None)
    order_id = await _paid_order(runtime, customer, PaymentMethod.manual)
    page = await client.get("/billing")
    assert f'id="order-{order_id}"' in page.text
    assert "6.99 USD via manual" in page.text
    link = f"/billing/orders/{order_id}/refund"
    assert f'href="{link}"' in page.text

    too_long = await post_form(client, link, {"reason": "x" * 2001})
    assert too_long.status_code == 422
    assert "2000" in (field_error(too_long, "reason") or "")
    assert "x" * 2001 in too_long.text  # the text is kept

    asked = await post_form(client, link, {"reason": "It does not connect from my hotel."})
    assert asked.status_code == 303
    status_url = asked.headers["location"]
    assert re.fullmatch(r"/billing/refunds/\d+", status_url)
    status = await client.get(status_url)
    assert status.status_code == 200
    assert "It does not connect from my hotel." in status.text
    rules = re.findall(r'<tr class="outcome" data-rule="([a-z_]+)">', status.text)
    assert len(rules) >= 2  # every evaluated rule has its row
    assert "Waiting for a person" in status.text  # the strict policy never auto-approves

    # One request per order: the link is gone and a second post is refused with a message.
    assert f'href="{link}"' not in (await client.get("/billing")).text
    again = await post_form(client, link, {"reason": "again"})
    assert again.status_code == 409


async def test_crypto_order_refund_is_refused_by_the_rule(
    client: httpx.AsyncClient, runtime: Runtime, web_customer: MakeWebCustomer
) -> None:
    customer = await web_customer(None)
    order_id = await _paid_order(runtime, customer, PaymentMethod.crypto)
    asked = await post_form(
        client, f"/billing/orders/{order_id}/refund", {"reason": "changed my mind"}
    )
    status = await client.get(asked.headers["location"])
    assert "Refused" in status.text
    assert "Not met" in status.text


async def test_other_customers_orders_and_refunds_are_not_found(
    client: httpx.AsyncClient, runtime: Runtime, web_customer: MakeWebCustomer
) -> None:
    other = await web_customer(None, sign_in=False)
    order_id = await _paid_order(runtime, other, PaymentMethod.manual)
    await web_customer(None)
    assert (await client.get(f"/billing/orders/{order_id}/refund")).status_code == 404
    assert (await client.get("/billing/refunds/1")).status_code == 404


@pytest.mark.filterwarnings(HTTPX_DATA_WARNING)
class TestCardCheckout:
    """With Stripe set up (a local Stripe-shaped server), the page sends the browser to pay."""

    @pytest.fixture
    def fake_stripe(self) -> Iterator[FakeStripe]:
        with stripe_server() as state:
            yield state

    @pytest.fixture
    def settings(self, settings: Settings, fake_stripe: FakeStripe) -> Settings:
        return settings.model_copy(
            update={
                "stripe_api_key": SecretStr("sk_test_burrow"),
                "stripe_api_base": fake_stripe.url,
            }
        )

    async def test_checkout_redirects_to_the_providers_page(
        self, client: httpx.AsyncClient, web_customer: MakeWebCustomer, fake_stripe: FakeStripe
    ) -> None:
        await web_customer(None)
        response = await post_form(
            client,
            "/billing/checkout",
            {"plan_code": "personal-yearly", "method": "card"},
            page="/billing",
        )
        assert response.status_code == 303, response.text
        assert response.headers["location"].startswith("https://checkout.stripe.test/")
        [call] = fake_stripe.calls
        assert call.path == "/v1/checkout/sessions"
        page = await client.get("/billing")
        assert "personal-yearly" in page.text
        assert "pending" in page.text


class TestPayPalCheckout:
    """With PayPal set up (a local PayPal-shaped server), the page offers it and sends the
    browser to PayPal's approve link."""

    @pytest.fixture
    def fake_paypal(self) -> Iterator[FakePayPal]:
        with running_paypal() as state:
            yield state

    @pytest.fixture
    def settings(self, settings: Settings, fake_paypal: FakePayPal) -> Settings:
        return fake_paypal.settings(settings)

    async def test_paypal_is_offered_and_checkout_redirects_to_paypal(
        self, client: httpx.AsyncClient, web_customer: MakeWebCustomer, fake_paypal: FakePayPal
    ) -> None:
        await web_customer(None)
        page = await client.get("/billing")
        assert 'id="method-paypal"' in page.text
        assert 'id="method-card"' not in page.text  # Stripe is not set up here
        response = await post_form(
            client,
            "/billing/checkout",
            {"plan_code": "personal-monthly", "method": "paypal"},
            page="/billing",
        )
        assert response.status_code == 303, response.text
        [order_id] = fake_paypal.orders
        assert response.headers["location"] == f"{fake_paypal.url}/checkoutnow?token={order_id}"

    async def test_back_from_paypal_the_approved_order_is_captured_and_paid(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        web_customer: MakeWebCustomer,
        fake_paypal: FakePayPal,
    ) -> None:
        customer = await web_customer(None)
        await post_form(
            client,
            "/billing/checkout",
            {"plan_code": "personal-monthly", "method": "paypal"},
            page="/billing",
        )
        [(remote_id, remote)] = fake_paypal.orders.items()
        order_id = int(remote["purchase_units"][0]["custom_id"])
        back = f"/billing?checkout=done&order={order_id}&token={remote_id}&PayerID=PAYERTEST01"
        # Not approved yet (the customer pressed back): nothing is taken, nothing breaks.
        early = await client.get(back)
        assert early.status_code == 200
        assert fake_paypal.captures == {}
        fake_paypal.approve(remote_id)
        # A token that is not this order's PayPal order captures nothing.
        assert (await client.get(back.replace(remote_id, "OTHER"))).status_code == 200
        assert fake_paypal.captures == {}
        page = await client.get(back)
        assert page.status_code == 200
        [capture_id] = fake_paypal.captures
        async with unit_of_work(runtime.sessionmaker) as session:
            [view] = await billing_service.orders(session, customer.account.id)
        assert view.order.status == "paid"
        assert [p.provider_payment_id for p in view.payments] == [capture_id]
        # Coming back again (a reload) takes nothing more.
        assert (await client.get(back)).status_code == 200
        captures = fake_paypal.made("POST", f"/v2/checkout/orders/{remote_id}/capture")
        assert len(captures) == 1  # not before approval; not again once paid
        assert captures[0].request_id == f"burrow-capture-{remote_id}"
        assert len(fake_paypal.captures) == 1
