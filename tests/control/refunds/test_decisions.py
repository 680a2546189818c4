"""Refund decisions under concurrency: a decision is a compare-and-set on a queued request.

Twenty administrators (or twenty clicks) decide one request at once against a real server
(uvicorn on loopback, its own sessions interleaving on SQLite and PostgreSQL): exactly one
decision wins, the others get a 409 naming who decided, and exactly one refund reaches the
provider (the local Stripe server counts them).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from burrow.control.billing.service import billing as billing_service
from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.models import (
    Account,
    AccountStatus,
    Order,
    OrderStatus,
    PaymentMethod,
    RefundRequest,
    RefundRuleOutcome,
    RefundStatus,
)
from burrow.control.refunds.service import refund as refund_service
from burrow.control.runtime import Runtime
from tests.support.app import running_runtime
from tests.support.factories import create_account, create_session_token, get_plan
from tests.support.server import RunningServer, serving
from tests.support.stripe_server import HTTPX_DATA_WARNING, FakeStripe, stripe_server, with_stripe

pytestmark = pytest.mark.filterwarnings(HTTPX_DATA_WARNING)

DECIDERS = 20


@dataclass
class Admin:
    account_id: int
    email: str
    headers: dict[str, str]


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    with stripe_server() as state:
        yield state


@pytest.fixture
def stripe_settings(settings: Settings, fake_stripe: FakeStripe) -> Settings:
    return with_stripe(settings, fake_stripe, stripe_webhook_secret=SecretStr("whsec_x"))


@pytest.fixture
async def seeded(stripe_settings: Settings) -> AsyncIterator[Runtime]:
    async with running_runtime(stripe_settings) as rt:
        yield rt


@pytest.fixture
def live(stripe_settings: Settings, seeded: Runtime) -> Iterator[RunningServer]:
    del seeded  # the schema's seed rows exist before the server starts
    with serving(stripe_settings) as running:
        yield running


async def _queued_request(runtime: Runtime, reference: str) -> tuple[int, int, int]:
    """A customer's Stripe order with a refund request queued for a person (strict policy).
    Returns (account id, order id, request id)."""
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
        plan = await get_plan(session, "personal-monthly")
        recorded = await billing_service.record_payment(
            session, runtime, account, plan, 1199, "USD", PaymentMethod.card, "stripe", reference
        )
        view = await refund_service.request(
            session, runtime, account, recorded.order.id, "It never connected."
        )
        assert view.request.status == RefundStatus.queued
        return account.id, recorded.order.id, view.request.id


async def _admins(runtime: Runtime, count: int) -> list[Admin]:
    async with unit_of_work(runtime.sessionmaker) as session:
        admins = []
        for _ in range(count):
            account = await create_account(session, admin=True)
            token = await create_session_token(session, account)
            admins.append(Admin(account.id, account.email, {"Authorization": f"Bearer {token}"}))
        return admins


async def _decide_at_once(
    url: str, calls: list[tuple[Admin, str, dict[str, object]]]
) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        posts = [client.post(path, json=body, headers=admin.headers) for admin, path, body in calls]
        return list(await asyncio.gather(*posts))


def _refund_posts(fake: FakeStripe) -> int:
    return sum(1 for c in fake.calls if (c.method, c.path) == ("POST", "/v1/refunds"))


async def test_twenty_concurrent_approvals_refund_once(
    seeded: Runtime, live: RunningServer, fake_stripe: FakeStripe
) -> None:
    _, order_id, request_id = await _queued_request(seeded, "pi_race")
    admins = await _admins(seeded, DECIDERS)
    path = f"/api/v1/admin/refunds/{request_id}/approve"
    calls = [
        (admin, path, {"amount_minor": 100 + i, "reason": f"click {i}"})
        for i, admin in enumerate(admins)
    ]
    responses = await _decide_at_once(live.url, calls)

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [409] * (DECIDERS - 1), [r.text for r in responses]
    [won] = [r for r in responses if r.status_code == 200]
    amount = won.json()["amount_minor"]
    winner = admins[amount - 100]
    for lost in (r for r in responses if r.status_code == 409):
        problem = lost.json()
        assert lost.headers["content-type"] == "application/problem+json"
        assert problem["decided_by"] == winner.account_id
        assert winner.email in problem["detail"]
        assert "already decided" in problem["detail"]

    assert _refund_posts(fake_stripe) == 1
    assert len(fake_stripe.refunds) == 1
    [refund] = fake_stripe.refunds.values()
    assert refund["amount"] == amount
    async with unit_of_work(seeded.sessionmaker) as session:
        request = await session.get(RefundRequest, request_id)
        order = await session.get(Order, order_id)
        assert request is not None
        assert order is not None
        assert request.status == RefundStatus.executed
        assert (request.amount_minor, request.decided_by) == (amount, winner.account_id)
        assert order.refunded_minor == amount
        assert order.status == OrderStatus.partially_refunded


async def test_approvals_racing_refusals_have_one_winner(
    seeded: Runtime, live: RunningServer, fake_stripe: FakeStripe
) -> None:
    _, order_id, request_id = await _queued_request(seeded, "pi_mixed")
    admins = await _admins(seeded, DECIDERS)
    base = f"/api/v1/admin/refunds/{request_id}"
    calls: list[tuple[Admin, str, dict[str, object]]] = [
        (admin, f"{base}/approve", {"reason": "ok"})
        if i % 2
        else (admin, f"{base}/refuse", {"reason": "no"})
        for i, admin in enumerate(admins)
    ]
    responses = await _decide_at_once(live.url, calls)

    assert sorted(r.status_code for r in responses) == [200] + [409] * (DECIDERS - 1)
    [won] = [r for r in responses if r.status_code == 200]
    async with unit_of_work(seeded.sessionmaker) as session:
        request = await session.get(RefundRequest, request_id)
        order = await session.get(Order, order_id)
        assert request is not None
        assert order is not None
    if won.json()["status"] == RefundStatus.refused:
        assert request.status == RefundStatus.refused
        assert _refund_posts(fake_stripe) == 0
        assert order.status == OrderStatus.paid
    else:
        assert request.status == RefundStatus.executed
        assert _refund_posts(fake_stripe) == 1
        assert order.status == OrderStatus.refunded


async def test_approval_rechecks_a_termination_after_the_request_was_queued(
    seeded: Runtime, live: RunningServer, fake_stripe: FakeStripe
) -> None:
    account_id, order_id, request_id = await _queued_request(seeded, "pi_term")
    [admin] = await _admins(seeded, 1)
    async with unit_of_work(seeded.sessionmaker) as session:
        account = await session.get(Account, account_id)
        assert account is not None
        account.status = AccountStatus.terminated
        account.terminated_clause = "Prohibited use"
    async with httpx.AsyncClient(base_url=live.url, timeout=60) as client:
        response = await client.post(
            f"/api/v1/admin/refunds/{request_id}/approve",
            json={"reason": "looks fine"},
            headers=admin.headers,
        )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == RefundStatus.refused
    assert "terminated" in response.json()["decision_reason"]
    assert _refund_posts(fake_stripe) == 0
    async with unit_of_work(seeded.sessionmaker) as session:
        request = await session.get(RefundRequest, request_id)
        order = await session.get(Order, order_id)
        assert request is not None
        assert order is not None
        assert request.status == RefundStatus.refused
        assert order.status == OrderStatus.paid
        outcome = await session.scalar(
            select(RefundRuleOutcome).where(
                RefundRuleOutcome.refund_request_id == request_id,
                RefundRuleOutcome.rule == "terminated_for_violation_excludes",
            )
        )
        assert outcome is not None
        assert not outcome.passed
