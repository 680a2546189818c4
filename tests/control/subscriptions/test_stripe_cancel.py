"""Cancel and resume reach Stripe: the real stripe library updates the Stripe subscription's
cancel_at_period_end on the local Stripe-shaped server; if Stripe cannot be reached, nothing
changes here either and the customer is told so."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.models import Subscription
from burrow.control.runtime import Runtime
from tests.support.app import app_client, running_runtime
from tests.support.factories import create_account, create_session_token, create_subscription
from tests.support.stripe_server import HTTPX_DATA_WARNING, FakeStripe, stripe_server, with_stripe

pytestmark = pytest.mark.filterwarnings(HTTPX_DATA_WARNING)

PROBLEM = "application/problem+json"
SUB = "sub_cancel_1"


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    with stripe_server() as state:
        state.add_subscription(SUB)
        yield state


@pytest.fixture
async def stripe_runtime(settings: Settings, fake_stripe: FakeStripe) -> AsyncIterator[Runtime]:
    async with running_runtime(with_stripe(settings, fake_stripe)) as rt:
        yield rt


async def _stripe_customer(runtime: Runtime) -> tuple[int, dict[str, str]]:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
        sub = await create_subscription(session, account, stripe_id=SUB)
        token = await create_session_token(session, account)
        return sub.id, {"Authorization": f"Bearer {token}"}


async def _stored(runtime: Runtime, sub_id: int) -> Subscription:
    async with unit_of_work(runtime.sessionmaker) as session:
        found = await session.get(Subscription, sub_id)
        assert found is not None
        return found


async def test_cancel_and_resume_go_to_stripe(
    stripe_runtime: Runtime, fake_stripe: FakeStripe
) -> None:
    sub_id, headers = await _stripe_customer(stripe_runtime)
    end = (await _stored(stripe_runtime, sub_id)).current_period_end.date().isoformat()
    async with app_client(stripe_runtime) as client:
        cancelled = await client.post("/api/v1/subscriptions/current/cancel", headers=headers)
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["message"] == (
            f"Cancelled. You keep access until {end}; then your subscription ends and is not "
            f"renewed, and your card is not charged again. You can resume it until {end}."
        )
        assert fake_stripe.subscriptions[SUB]["cancel_at_period_end"] is True
        assert (await _stored(stripe_runtime, sub_id)).cancel_at_period_end is True

        # Cancelling again asks Stripe nothing.
        again = await client.post("/api/v1/subscriptions/current/cancel", headers=headers)
        assert again.json()["message"].startswith("Already cancelled")
        assert len(fake_stripe.calls) == 1

        resumed = await client.post("/api/v1/subscriptions/current/resume", headers=headers)
        assert resumed.status_code == 200, resumed.text
        assert resumed.json()["message"] == f"Resumed. Renews on {end}."
        assert fake_stripe.subscriptions[SUB]["cancel_at_period_end"] is False

    first, second = fake_stripe.calls
    for call, flag in [(first, "true"), (second, "false")]:
        assert (call.method, call.path) == ("POST", f"/v1/subscriptions/{SUB}")
        assert call.form == {"cancel_at_period_end": [flag]}
        assert call.idempotency_key.startswith(f"burrow-subscription-{sub_id}-")
    # Each change is its own request: a replayed key would make Stripe skip the second.
    assert first.idempotency_key != second.idempotency_key


async def test_stripe_unreachable_changes_nothing(
    stripe_runtime: Runtime, fake_stripe: FakeStripe
) -> None:
    sub_id, headers = await _stripe_customer(stripe_runtime)
    fake_stripe.failures = 10  # more than the library's retries
    async with app_client(stripe_runtime) as client:
        response = await client.post("/api/v1/subscriptions/current/cancel", headers=headers)
    assert response.status_code == 502
    assert response.headers["content-type"] == PROBLEM
    detail = response.json()["detail"]
    assert detail.startswith("Your subscription is billed by Stripe, which we could not reach")
    assert "it was not cancelled and nothing changed (now: Renews on" in detail
    stored = await _stored(stripe_runtime, sub_id)
    assert (stored.cancel_at_period_end, stored.canceled_at) == (False, None)
    assert fake_stripe.subscriptions[SUB]["cancel_at_period_end"] is False
    assert len(fake_stripe.calls) == 3


async def test_a_stripe_subscription_without_stripe_configured_is_not_cancelled_silently(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    sub_id, headers = await _stripe_customer(runtime)
    response = await client.post("/api/v1/subscriptions/current/cancel", headers=headers)
    assert response.status_code == 502
    assert (await _stored(runtime, sub_id)).cancel_at_period_end is False


async def test_a_subscription_without_stripe_cancels_locally(
    stripe_runtime: Runtime, fake_stripe: FakeStripe
) -> None:
    async with unit_of_work(stripe_runtime.sessionmaker) as session:
        account = await create_account(session)
        sub = await create_subscription(session, account)
        token = await create_session_token(session, account)
    async with app_client(stripe_runtime) as client:
        response = await client.post(
            "/api/v1/subscriptions/current/cancel", headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 200
    assert "card" not in response.json()["message"]
    assert (await _stored(stripe_runtime, sub.id)).cancel_at_period_end is True
    assert fake_stripe.calls == []
