"""The affiliate program under twenty requests at once, against a real server (uvicorn on a
loopback port, its own connection pool), on SQLite and PostgreSQL: one decision per
application, one payout per balance, one commission per order, every click counted."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.models import (
    AdminAction,
    Affiliate,
    AffiliateStatus,
    Commission,
    CommissionKind,
    CommissionStatus,
    Order,
    Payment,
    PayoutBatch,
    Referral,
    ReferralHow,
    utcnow,
)
from burrow.control.runtime import Runtime
from tests.control.affiliates.conftest import STRIPE_SECRET
from tests.support.app import running_runtime
from tests.support.factories import create_account, create_order, create_session_token
from tests.support.paypal_server import FakePayPal
from tests.support.server import RunningServer, serving
from tests.support.stripe_server import HTTPX_DATA_WARNING, FakeStripe, event, sign

pytestmark = pytest.mark.filterwarnings(HTTPX_DATA_WARNING)

AT_ONCE = 20


@pytest.fixture
def server(money_settings: Settings) -> Iterator[RunningServer]:
    with serving(money_settings) as running:
        yield running


@pytest.fixture
async def own(money_settings: Settings) -> AsyncIterator[Runtime]:
    """The test's own runtime, to make rows and read the outcome."""
    async with running_runtime(money_settings) as runtime:
        yield runtime


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=AT_ONCE, max_keepalive_connections=AT_ONCE)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as client:
        yield client


async def at_once(*calls: Any) -> list[httpx.Response]:
    responses: list[httpx.Response] = await asyncio.gather(*calls)
    return responses


def statuses(responses: list[httpx.Response]) -> Counter[int]:
    return Counter(r.status_code for r in responses)


def problems_only(responses: list[httpx.Response], status: int) -> None:
    for response in responses:
        assert response.status_code < 500, response.text
        if response.status_code == status:
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["detail"]


async def count(runtime: Runtime, model: type[Any], *where: Any) -> int:
    async with unit_of_work(runtime.sessionmaker) as session:
        query = select(func.count()).select_from(model).where(*where)
        return int((await session.execute(query)).scalar_one())


async def headers_of(runtime: Runtime, *, admin: bool = False) -> tuple[int, dict[str, str]]:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session, admin=admin)
        token = await create_session_token(session, account)
    return account.id, {"Authorization": f"Bearer {token}"}


async def an_affiliate(
    runtime: Runtime, status: AffiliateStatus, *, paypal_email: str = "aff@example.net"
) -> Affiliate:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
        affiliate = Affiliate(
            account_id=account.id,
            code=f"c{account.id}x",
            status=status,
            contact_name="A. Affiliate",
            website="https://site.example.org/",
            paypal_email=paypal_email,
            clicks=0,
            last_active_at=utcnow(),
        )
        session.add(affiliate)
        await session.flush()
        return affiliate


async def test_twenty_decisions_on_one_application_make_one(
    own: Runtime, http: httpx.AsyncClient
) -> None:
    affiliate = await an_affiliate(own, AffiliateStatus.applied)
    _, admin = await headers_of(own, admin=True)
    url = f"/api/v1/admin/affiliates/{affiliate.id}/decision"
    responses = await at_once(
        *(
            http.post(
                url,
                json={"decision": "approve" if i % 2 else "deny", "reason": f"Reason {i}"},
                headers=admin,
            )
            for i in range(AT_ONCE)
        )
    )
    problems_only(responses, 409)
    assert statuses(responses) == {200: 1, 409: AT_ONCE - 1}, statuses(responses)
    [won] = [r.json() for r in responses if r.status_code == 200]
    async with unit_of_work(own.sessionmaker) as session:
        stored = await session.get(Affiliate, affiliate.id)
        assert stored is not None
        assert (stored.status, stored.status_reason) == (won["status"], won["status_reason"])
    assert await count(own, AdminAction, AdminAction.target_type == "affiliate") == 1


async def test_twenty_applications_from_one_account_make_one(
    own: Runtime, http: httpx.AsyncClient
) -> None:
    account_id, headers = await headers_of(own)
    body = {
        "contact_name": "Sam",
        "website": "https://sam.example.org/",
        "paypal_email": "sam@example.net",
    }
    responses = await at_once(
        *(http.post("/api/v1/affiliates", json=body, headers=headers) for _ in range(AT_ONCE))
    )
    problems_only(responses, 409)
    assert statuses(responses) == {201: 1, 409: AT_ONCE - 1}, statuses(responses)
    assert await count(own, Affiliate, Affiliate.account_id == account_id) == 1


async def test_twenty_payouts_at_once_pay_once(
    own: Runtime, http: httpx.AsyncClient, fake_paypal: FakePayPal
) -> None:
    affiliate = await an_affiliate(own, AffiliateStatus.approved)
    async with unit_of_work(own.sessionmaker) as session:
        buyer = await create_account(session)
        for _ in range(3):
            order = await create_order(session, buyer)
            session.add(
                Commission(
                    affiliate_id=affiliate.id,
                    order_id=order.id,
                    earned_order_id=order.id,
                    kind=CommissionKind.earned,
                    status=CommissionStatus.payable,
                    amount_minor=5000,
                    currency="USD",
                    payout_minor=5000,
                    reversed_minor=0,
                    available_at=utcnow() - timedelta(days=1),
                )
            )
    _, admin = await headers_of(own, admin=True)
    responses = await at_once(
        *(http.post("/api/v1/admin/affiliates/payouts", headers=admin) for _ in range(AT_ONCE))
    )
    problems_only(responses, 409)
    assert statuses(responses) == {202: 1, 409: AT_ONCE - 1}, statuses(responses)
    assert await count(own, PayoutBatch) == 1
    assert len(fake_paypal.payouts) == 1
    assert fake_paypal.paid_to("aff@example.net") == 15000  # the $150 balance, once
    assert (
        await count(own, Commission, Commission.status == CommissionStatus.paid)
        == 3  # each in the one batch
    )


async def test_twenty_deliveries_for_one_referred_order_earn_one_commission(
    own: Runtime, http: httpx.AsyncClient, fake_stripe: FakeStripe
) -> None:
    affiliate = await an_affiliate(own, AffiliateStatus.approved)
    buyer_id, buyer = await headers_of(own)
    async with unit_of_work(own.sessionmaker) as session:
        session.add(Referral(account_id=buyer_id, affiliate_id=affiliate.id, how=ReferralHow.link))
    started = await http.post(
        "/api/v1/billing/checkout",
        json={"plan_code": "personal-yearly", "method": "card"},
        headers=buyer,
    )
    assert started.status_code == 201, started.text
    order_id = started.json()["order_id"]
    [checkout] = fake_stripe.sessions.values()
    fake_stripe.add_subscription("sub_race")
    completed = checkout | {
        "status": "complete",
        "payment_status": "paid",
        "subscription": "sub_race",
        "invoice": "in_race",
        "amount_total": 4999,
        "currency": "usd",
    }
    # Twenty deliveries, each under an event id of its own: twenty handlers at once.
    payloads = [event(f"evt_race_{i}", "checkout.session.completed", completed) for i in range(20)]
    responses = await at_once(
        *(
            http.post(
                "/api/v1/billing/webhooks/stripe",
                content=payload,
                headers={"Stripe-Signature": sign(payload, STRIPE_SECRET)},
            )
            for payload in payloads
        )
    )
    assert statuses(responses) == {200: AT_ONCE}, [r.text for r in responses]
    for _ in range(100):  # handled after each answer; wait for the last, bounded
        if await count(own, Payment, Payment.order_id == order_id) == 1:
            break
        await asyncio.sleep(0.05)
    assert await count(own, Payment, Payment.order_id == order_id) == 1
    assert await count(own, Commission, Commission.order_id == order_id) == 1
    async with unit_of_work(own.sessionmaker) as session:
        [commission] = await session.scalars(select(Commission))
        order = await session.get(Order, order_id)
        assert order is not None
        assert (commission.amount_minor, commission.status) == (1499, CommissionStatus.pending)


async def test_twenty_clicks_at_once_are_twenty(own: Runtime, http: httpx.AsyncClient) -> None:
    affiliate = await an_affiliate(own, AffiliateStatus.approved)
    responses = await at_once(
        *(http.get(f"/r/{affiliate.code}", follow_redirects=False) for _ in range(AT_ONCE))
    )
    assert statuses(responses) == {303: AT_ONCE}
    async with unit_of_work(own.sessionmaker) as session:
        stored = await session.get(Affiliate, affiliate.id)
        assert stored is not None
        assert stored.clicks == AT_ONCE
