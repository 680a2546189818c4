"""Erasure of a customer whose card Stripe charges by itself: Stripe is told to stop renewing
first (the real stripe library against the local Stripe-shaped server); if Stripe cannot be
reached, nothing is erased and the customer is told to try again."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.models import Account, AccountStatus
from burrow.control.runtime import Runtime
from tests.support.app import app_client, running_runtime
from tests.support.factories import (
    DEFAULT_PASSWORD,
    create_account,
    create_session_token,
    create_subscription,
)
from tests.support.stripe_server import HTTPX_DATA_WARNING, FakeStripe, stripe_server, with_stripe

pytestmark = pytest.mark.filterwarnings(HTTPX_DATA_WARNING)

SUB = "sub_erase_1"
ERASE = {"password": DEFAULT_PASSWORD, "confirm": True}


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    with stripe_server() as state:
        state.add_subscription(SUB)
        yield state


@pytest.fixture
async def stripe_client(
    settings: Settings, fake_stripe: FakeStripe
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    async with (
        running_runtime(with_stripe(settings, fake_stripe)) as runtime,
        app_client(runtime) as c,
    ):
        yield runtime, c


async def _customer(runtime: Runtime) -> tuple[int, dict[str, str]]:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
        await create_subscription(session, account, stripe_id=SUB)
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
    # First told to stop renewing (unreachable, nothing would be erased); once the erasure is
    # committed, the subscription is ended at Stripe at once, as for a refunded order.
    assert [(c.method, c.path) for c in fake_stripe.calls] == [
        ("POST", f"/v1/subscriptions/{SUB}"),
        ("DELETE", f"/v1/subscriptions/{SUB}"),
    ]
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
