"""Fixtures of the affiliate tests: a runtime whose Stripe and PayPal are local servers that
answer as they do, under the first seed's policy (payout minimum lowered where a test says)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.models import (
    Account,
    Affiliate,
    AffiliateStatus,
    Commission,
    CommissionKind,
    CommissionStatus,
    Order,
    utcnow,
)
from burrow.control.policy.schemas import Policy
from burrow.control.policy.service import load_policy
from burrow.control.runtime import Runtime
from tests.conftest import STRICT_POLICY
from tests.support.app import app_client, running_runtime
from tests.support.factories import create_account, create_order, create_session_token
from tests.support.paypal_server import FakePayPal, running_paypal
from tests.support.stripe_server import FakeStripe, event, sign, stripe_server, with_stripe

STRIPE_SECRET = "whsec_affiliates"
# Low enough for a few test orders to reach it (the first seed's is 100 USD).
TEST_MINIMUM = 300


def policy_with(**affiliates: Any) -> Policy:
    policy = load_policy(STRICT_POLICY)
    assert policy.affiliates is not None
    section = policy.affiliates.model_copy(update=affiliates)
    return policy.model_copy(update={"affiliates": section})


@dataclass
class Money:
    runtime: Runtime
    client: httpx.AsyncClient
    stripe: FakeStripe
    paypal: FakePayPal

    async def admin(self) -> dict[str, str]:
        async with unit_of_work(self.runtime.sessionmaker) as session:
            admin = await create_account(session, admin=True)
            token = await create_session_token(session, admin)
        return {"Authorization": f"Bearer {token}"}

    async def customer(self, email: str | None = None) -> tuple[int, dict[str, str]]:
        async with unit_of_work(self.runtime.sessionmaker) as session:
            account = await create_account(session, email=email)
            token = await create_session_token(session, account)
        return account.id, {"Authorization": f"Bearer {token}"}

    async def signed_up(self, email: str) -> tuple[int, dict[str, str]]:
        """The account a sign-up made, its address confirmed, signed in."""
        async with unit_of_work(self.runtime.sessionmaker) as session:
            account = await session.scalar(select(Account).where(Account.email == email))
            assert account is not None
            account.email_verified_at = utcnow()
            token = await create_session_token(session, account)
        return account.id, {"Authorization": f"Bearer {token}"}

    async def pay(
        self,
        headers: dict[str, str],
        invoice: str,
        *,
        plan: str = "personal-monthly",
        card: str | None = None,
        referral_code: str | None = None,
    ) -> Order:
        """Checkout by card, then Stripe's signed completion event pays the order (the card's
        fingerprint comes from the charge, as Stripe reports it)."""
        if card is not None:
            self.stripe.cards[f"pi_of_{invoice}"] = card
        body: dict[str, Any] = {"plan_code": plan, "method": "card"}
        if referral_code is not None:
            body["referral_code"] = referral_code
        started = await self.client.post("/api/v1/billing/checkout", json=body, headers=headers)
        assert started.status_code == 201, started.text
        order_id = started.json()["order_id"]
        async with unit_of_work(self.runtime.sessionmaker) as session:
            pending = await session.get(Order, order_id)
            assert pending is not None
            price = pending.amount_minor
        session_object = next(
            s
            for s in self.stripe.sessions.values()
            if s.get("metadata", {}).get("order_id") == str(order_id)
        )
        completed = session_object | {
            "status": "complete",
            "payment_status": "paid",
            "subscription": f"sub_{invoice}",
            "invoice": invoice,
            "amount_total": price,
            "currency": "usd",
        }
        self.stripe.add_subscription(f"sub_{invoice}")
        payload = event(f"evt_{invoice}", "checkout.session.completed", completed)
        delivered = await self.client.post(
            "/api/v1/billing/webhooks/stripe",
            content=payload,
            headers={"Stripe-Signature": sign(payload, STRIPE_SECRET)},
        )
        assert delivered.status_code == 200, delivered.text
        async with unit_of_work(self.runtime.sessionmaker) as session:
            order = await session.get(Order, order_id)
            assert order is not None
            assert order.status == "paid"
            return order


def later(days: int) -> Any:
    return utcnow() + timedelta(days=days)


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    with stripe_server() as state:
        yield state


@pytest.fixture
def fake_paypal() -> Iterator[FakePayPal]:
    with running_paypal() as state:
        yield state


@pytest.fixture
def money_settings(
    settings: Settings, fake_stripe: FakeStripe, fake_paypal: FakePayPal
) -> Settings:
    with_both = with_stripe(settings, fake_stripe, stripe_webhook_secret=SecretStr(STRIPE_SECRET))
    return fake_paypal.settings(with_both)


@pytest.fixture
async def money(
    money_settings: Settings, fake_stripe: FakeStripe, fake_paypal: FakePayPal
) -> AsyncIterator[Money]:
    policy = policy_with(payout_minimum_minor=TEST_MINIMUM)
    async with (
        running_runtime(money_settings, policy=policy) as runtime,
        app_client(runtime) as client,
    ):
        yield Money(runtime, client, fake_stripe, fake_paypal)


async def make_affiliate(
    session: AsyncSession,
    *,
    status: str = "approved",
    paypal_email: str = "aff@example.net",
    email: str | None = None,
    last_active_days_ago: int = 0,
) -> Affiliate:
    """An affiliate the way an approved application leaves it."""
    account = await create_account(session, email=email)
    affiliate = Affiliate(
        account_id=account.id,
        code=f"c{account.id}x",
        status=AffiliateStatus(status),
        contact_name="A. Affiliate",
        website="https://site.example.org/",
        paypal_email=paypal_email,
        clicks=0,
        last_active_at=utcnow() - timedelta(days=last_active_days_ago),
    )
    session.add(affiliate)
    await session.flush()
    return affiliate


async def make_commission(
    session: AsyncSession,
    affiliate_id: int,
    *,
    amount: int,
    status: str = "payable",
    order_id: int | None = None,
) -> Commission:
    if order_id is None:
        buyer = await create_account(session)
        order_id = (await create_order(session, buyer)).id
    commission = Commission(
        affiliate_id=affiliate_id,
        order_id=order_id,
        earned_order_id=order_id,
        kind=CommissionKind.earned,
        status=CommissionStatus(status),
        amount_minor=amount,
        currency="USD",
        payout_minor=amount,
        reversed_minor=0,
        available_at=utcnow() - timedelta(days=1),
    )
    session.add(commission)
    await session.flush()
    return commission
