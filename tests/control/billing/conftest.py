"""Fixtures for Stripe tests: a local Stripe-shaped API server and a runtime configured for it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from pydantic import SecretStr

from burrow.control.app import create_app
from burrow.control.config import Settings
from burrow.control.runtime import Runtime
from burrow.control.startup import prepare
from tests.support.stripe_server import FakeStripe, stripe_server

STRIPE_SECRET = "whsec_test_secret"


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    with stripe_server() as state:
        yield state


@pytest.fixture
def stripe_settings(settings: Settings, fake_stripe: FakeStripe) -> Settings:
    return settings.model_copy(
        update={
            "stripe_webhook_secret": SecretStr(STRIPE_SECRET),
            "stripe_api_key": SecretStr("sk_test_burrow"),
            "stripe_api_base": fake_stripe.url,
        }
    )


@pytest.fixture
async def stripe_runtime(stripe_settings: Settings) -> AsyncIterator[Runtime]:
    rt = Runtime.build(stripe_settings)
    await prepare(rt)
    try:
        yield rt
    finally:
        await rt.close()


@pytest.fixture
async def stripe_client(stripe_runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(runtime=stripe_runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client
