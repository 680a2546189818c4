"""The metered seed's "one refund per person" across accounts, end to end through Stripe: two
accounts with different email addresses pay with the same card (checkout, then Stripe's signed
webhook; the card's fingerprint comes from Stripe's API), and only the first gets its refund.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.runtime import Runtime
from tests.conftest import METERED_POLICY
from tests.support.app import app_client, running_runtime
from tests.support.factories import create_account, create_session_token
from tests.support.stripe_server import (
    HTTPX_DATA_WARNING,
    FakeStripe,
    event,
    sign,
    stripe_server,
    with_stripe,
)

pytestmark = pytest.mark.filterwarnings(HTTPX_DATA_WARNING)

SECRET = "whsec_one_per_person"
CARD = "fp_the_same_card"


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    with stripe_server() as state:
        yield state


@pytest.fixture
async def stripe_metered(settings: Settings, fake_stripe: FakeStripe) -> AsyncIterator[Runtime]:
    configured = with_stripe(
        settings,
        fake_stripe,
        policy_path=METERED_POLICY,
        stripe_webhook_secret=SecretStr(SECRET),
    )
    async with running_runtime(configured) as rt:
        yield rt


async def _customer(runtime: Runtime, email: str) -> dict[str, str]:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session, email=email)
        return {"Authorization": f"Bearer {await create_session_token(session, account)}"}


async def _pay_by_card(
    client: httpx.AsyncClient, fake: FakeStripe, headers: dict[str, str], card: str, number: int
) -> int:
    """Checkout as the customer does, then Stripe's signed report that the session was paid."""
    started = await client.post(
        "/api/v1/billing/checkout",
        json={"plan_code": "personal-monthly", "method": "card"},
        headers=headers,
    )
    assert started.status_code == 201, started.text
    order_id: int = started.json()["order_id"]
    opened = next(s for s in fake.sessions.values() if s["metadata"]["order_id"] == str(order_id))
    assert opened["mode"] == "subscription"  # the metered seed renews card payments
    invoice, subscription = f"in_first_{number}", f"sub_{number}"
    fake.add_subscription(subscription)
    fake.cards[f"pi_of_{invoice}"] = card
    completed: dict[str, Any] = {
        "id": opened["id"],
        "object": "checkout.session",
        "mode": "subscription",
        "status": "complete",
        "payment_status": "paid",
        "payment_intent": None,
        "invoice": invoice,
        "subscription": subscription,
        "amount_total": 1199,
        "currency": "usd",
        "client_reference_id": str(order_id),
        "metadata": opened["metadata"],
    }
    payload = event(f"evt_paid_{number}", "checkout.session.completed", completed)
    delivered = await client.post(
        "/api/v1/billing/webhooks/stripe",
        content=payload,
        headers={"Stripe-Signature": sign(payload, SECRET), "Content-Type": "application/json"},
    )
    assert delivered.status_code == 200, delivered.text
    orders = (await client.get("/api/v1/billing/orders", headers=headers)).json()
    assert [(o["id"], o["status"]) for o in orders] == [(order_id, "paid")]
    return order_id


async def _ask_refund(client: httpx.AsyncClient, headers: dict[str, str], order_id: int) -> Any:
    response = await client.post(
        f"/api/v1/billing/orders/{order_id}/refund",
        json={"reason": "It does not work for me."},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return response.json()


def _rule(body: Any, name: str) -> Any:
    return next(o for o in body["outcomes"] if o["rule"] == name)


async def test_a_second_account_paid_with_the_same_card_gets_no_refund(
    stripe_metered: Runtime, fake_stripe: FakeStripe
) -> None:
    async with app_client(stripe_metered) as client:
        first = await _customer(stripe_metered, "first.person@one.example")
        second = await _customer(stripe_metered, "someone.else@two.example")
        first_order = await _pay_by_card(client, fake_stripe, first, CARD, 1)
        second_order = await _pay_by_card(client, fake_stripe, second, CARD, 2)
        looked_up = [c.path for c in fake_stripe.calls if c.path.startswith("/v1/payment_intents")]
        assert looked_up == [
            "/v1/payment_intents/pi_of_in_first_1",
            "/v1/payment_intents/pi_of_in_first_2",
        ]

        granted = await _ask_refund(client, first, first_order)
        assert granted["status"] == "executed", granted
        assert _rule(granted, "one_per_person")["passed"] is True
        [sent] = [c for c in fake_stripe.calls if c.path == "/v1/refunds"]
        assert sent.param("payment_intent") == "pi_of_in_first_1"

        refused = await _ask_refund(client, second, second_order)
        assert refused["status"] == "refused", refused
        # The addresses differ; only the card, as Stripe fingerprints it, is the same.
        assert [o["rule"] for o in refused["outcomes"] if not o["passed"]] == ["one_per_person"]
        rule = _rule(refused, "one_per_person")
        assert rule["evidence"] == {"same_email": False, "same_payment_fingerprint": True}
        assert rule["message"] == (
            "A refund was already granted to another account paid with the same card."
        )
        assert len([c for c in fake_stripe.calls if c.path == "/v1/refunds"]) == 1
        orders = (await client.get("/api/v1/billing/orders", headers=second)).json()
        assert orders[0]["status"] == "paid"


async def test_a_different_card_is_another_person(
    stripe_metered: Runtime, fake_stripe: FakeStripe
) -> None:
    async with app_client(stripe_metered) as client:
        first = await _customer(stripe_metered, "first.person@one.example")
        second = await _customer(stripe_metered, "someone.else@two.example")
        first_order = await _pay_by_card(client, fake_stripe, first, CARD, 1)
        second_order = await _pay_by_card(client, fake_stripe, second, "fp_another_card", 2)
        assert (await _ask_refund(client, first, first_order))["status"] == "executed"
        assert (await _ask_refund(client, second, second_order))["status"] == "executed"
