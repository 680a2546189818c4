"""Erasure of a customer whose card Stripe charges by itself: Stripe is told to stop renewing
first (the real stripe library against the local Stripe-shaped server); if Stripe cannot be
reached, nothing is erased and the customer is told to try again."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from pydantic import SecretStr

from burrow.control.app import create_app
from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.models import Account, AccountStatus
from burrow.control.runtime import Runtime
from burrow.control.startup import prepare
from tests.support.factories import (
    DEFAULT_PASSWORD,
    create_account,
    create_session_token,
    create_subscription,
)
from tests.support.stripe_server import HTTPX_DATA_WARNING, FakeStripe, stripe_server

pytestmark = pytest.mark.filterwarnings(HTTPX_DATA_WARNING)

SUB = "sub_erase_1"
ERASE = {"password": DEFAULT_PASSWORD, "confirm": True}


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    with stripe_server() as state:
        state.subscriptions[SUB] = {
            "id": SUB,
            "object": "subscription",
            "status": "active",
            "cancel_at_period_end": False,
        }
        yield state


@pytest.fixture
async def stripe_client(
    settings: Settings, fake_stripe: FakeStripe
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    configured = settings.model_copy(
        update={"stripe_api_key": SecretStr("sk_test_burrow"), "stripe_api_base": fake_stripe.url}
    )
    runtime = Runtime.build(configured)
    await prepare(runtime)
    transport = httpx.ASGITransport(app=create_app(runtime=runtime))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield runtime, c
    finally:
        await runtime.close()


async def _customer(runtime: Runtime) -> tuple[int, dict[str, str]]:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
        sub = await create_subscription(session, account)
        sub.provider, sub.provider_subscription_id = "stripe", SUB
        token = await create_session_token(session, account)
        return account.id, {"Authorization": f"Bearer {token}"}


async def _status(runtime: Runtime, account_id: int) -> AccountStatus:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await session.get(Account, account_id)
        assert account is not None
        return account.status


async def test_stripe_stops_renewing_before_the_account_goes(
    stripe_client: tuple[Runtime, httpx.AsyncClient], fake_stripe: FakeStripe
) -> None:
    runtime, client = stripe_client
    account_id, headers = await _customer(runtime)
    response = await client.post("/api/v1/privacy/erase", headers=headers, json=ERASE)
    assert response.status_code == 200, response.text
    assert fake_stripe.subscriptions[SUB]["cancel_at_period_end"] is True
    assert [(c.method, c.path) for c in fake_stripe.calls] == [("POST", f"/v1/subscriptions/{SUB}")]
    assert await _status(runtime, account_id) is AccountStatus.erased


async def test_stripe_unreachable_erases_nothing(
    stripe_client: tuple[Runtime, httpx.AsyncClient], fake_stripe: FakeStripe
) -> None:
    runtime, client = stripe_client
    account_id, headers = await _customer(runtime)
    fake_stripe.failures = 10  # more than the library's retries
    response = await client.post("/api/v1/privacy/erase", headers=headers, json=ERASE)
    assert response.status_code == 502
    assert "Try again in a few minutes" in response.json()["detail"]
    assert await _status(runtime, account_id) is AccountStatus.active
    still = await client.get("/api/v1/accounts/me", headers=headers)
    assert still.status_code == 200
