"""Stripe refunds: the real stripe library calls a local server that answers as Stripe does."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from burrow.control.billing.service import billing as billing_service
from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.models import Order, OrderStatus, PaymentMethod, RefundRequest, RefundStatus
from burrow.control.refunds.service import refund as refund_service
from burrow.control.refunds.tasks import execute_approved_refunds
from burrow.control.runtime import Runtime
from tests.conftest import METERED_POLICY
from tests.support.app import running_runtime
from tests.support.factories import create_account, get_plan
from tests.support.stripe_server import HTTPX_DATA_WARNING, FakeStripe, stripe_server, with_stripe

pytestmark = pytest.mark.filterwarnings(HTTPX_DATA_WARNING)


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    with stripe_server() as state:
        yield state


@pytest.fixture
async def stripe_metered(settings: Settings, fake_stripe: FakeStripe) -> AsyncIterator[Runtime]:
    async with running_runtime(
        with_stripe(settings, fake_stripe, policy_path=METERED_POLICY)
    ) as rt:
        yield rt


async def _stripe_order(runtime: Runtime, reference: str) -> tuple[Any, Order]:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
        plan = await get_plan(session, "personal-monthly")
        recorded = await billing_service.record_payment(
            session, runtime, account, plan, 1199, "USD", PaymentMethod.card, "stripe", reference
        )
        return account, recorded.order


async def test_approved_refund_goes_out_through_stripe_once(
    stripe_metered: Runtime, fake_stripe: FakeStripe
) -> None:
    state = fake_stripe
    account, order = await _stripe_order(stripe_metered, "pi_abc")
    async with unit_of_work(stripe_metered.sessionmaker) as session:
        view = await refund_service.request(session, stripe_metered, account, order.id, "Slow")
    assert view.request.status == RefundStatus.executed
    assert view.request.provider_refund_id == "re_1"
    [call] = state.calls
    assert (call.method, call.path) == ("POST", "/v1/refunds")
    # Made from the request's random reference: no other deployment sends the same key.
    assert view.request.provider_reference is not None
    assert call.idempotency_key == f"burrow-refund-{view.request.provider_reference}"
    assert call.idempotency_key != f"burrow-refund-{view.request.id}"
    assert call.param("metadata[burrow_refund]") == view.request.provider_reference
    assert call.param("payment_intent") == "pi_abc"
    assert call.param("amount") == "1199"
    async with unit_of_work(stripe_metered.sessionmaker) as session:
        stored = await session.get(Order, order.id)
        assert stored is not None
        assert stored.status == OrderStatus.refunded
    assert await execute_approved_refunds(stripe_metered) == 0
    assert len(state.calls) == 1


def _refund_calls(state: FakeStripe, method: str = "POST") -> list[Any]:
    return [c for c in state.calls if (c.method, c.path) == (method, "/v1/refunds")]


async def test_a_refund_stripe_never_made_is_sent_again_under_a_new_key(
    stripe_metered: Runtime, fake_stripe: FakeStripe
) -> None:
    state = fake_stripe
    account, order = await _stripe_order(stripe_metered, "pi_retry")
    # More 5xx answers than the library's own retries, and no refund made.
    state.failures = 3
    async with unit_of_work(stripe_metered.sessionmaker) as session:
        view = await refund_service.request(session, stripe_metered, account, order.id, "Slow")
    assert view.request.status == RefundStatus.approved
    assert len(state.calls) == 3
    assert state.refunds == {}
    first_key = view.request.idempotency_key
    assert first_key == f"burrow-refund-{view.request.provider_reference}"
    assert await execute_approved_refunds(stripe_metered) == 1
    assert await execute_approved_refunds(stripe_metered) == 0
    async with unit_of_work(stripe_metered.sessionmaker) as session:
        stored = await session.get(RefundRequest, view.request.id)
        assert stored is not None
        assert stored.status == RefundStatus.executed
        assert stored.provider_refund_id == "re_1"
    # Asked first whether a refund exists, then sent once more under a key of its own.
    [lookup] = _refund_calls(state, "GET")
    assert lookup.param("payment_intent") == "pi_retry"
    posts = _refund_calls(state)
    assert len(posts) == 4
    assert {c.idempotency_key for c in posts[:3]} == {first_key}
    assert posts[3].idempotency_key not in (first_key, "")
    assert state.calls.index(lookup) < state.calls.index(posts[3])
    assert len(state.refunds) == 1


async def test_a_refund_answered_with_a_5xx_is_found_at_stripe_not_sent_again(
    stripe_metered: Runtime, fake_stripe: FakeStripe
) -> None:
    state = fake_stripe
    account, order = await _stripe_order(stripe_metered, "pi_lost")
    # Stripe makes the refund but every answer is lost (a 5xx each time).
    state.lost_answers = 3
    async with unit_of_work(stripe_metered.sessionmaker) as session:
        view = await refund_service.request(session, stripe_metered, account, order.id, "Slow")
    assert view.request.status == RefundStatus.approved
    assert len(state.refunds) == 1
    # Stripe forgot the key meanwhile (24 h): only the lookup keeps the money from going twice.
    [made] = state.refunds.values()
    state.refunds = {"forgotten-key": made}
    assert await execute_approved_refunds(stripe_metered) == 1
    async with unit_of_work(stripe_metered.sessionmaker) as session:
        stored = await session.get(RefundRequest, view.request.id)
        stored_order = await session.get(Order, order.id)
        assert stored is not None
        assert stored_order is not None
        assert (stored.status, stored.provider_refund_id) == (RefundStatus.executed, made["id"])
        assert stored_order.status == OrderStatus.refunded
    assert len(_refund_calls(state)) == 3
    assert len(_refund_calls(state, "GET")) == 1
    assert len(state.refunds) == 1


async def test_a_payment_recorded_by_its_invoice_is_refunded_through_its_payment_intent(
    stripe_metered: Runtime, fake_stripe: FakeStripe
) -> None:
    account, order = await _stripe_order(stripe_metered, "in_sub_1")
    async with unit_of_work(stripe_metered.sessionmaker) as session:
        view = await refund_service.request(session, stripe_metered, account, order.id, "Slow")
    assert view.request.status == RefundStatus.executed
    lookup, refund = fake_stripe.calls
    assert (lookup.method, lookup.path, lookup.param("invoice")) == (
        "GET",
        "/v1/invoice_payments",
        "in_sub_1",
    )
    assert (refund.path, refund.param("payment_intent")) == ("/v1/refunds", "pi_of_in_sub_1")
    assert refund.idempotency_key == f"burrow-refund-{view.request.provider_reference}"
