"""Fixtures for Stripe tests: a local Stripe-shaped API server and a runtime configured for it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from pydantic import SecretStr

from burrow.control.config import Settings
from burrow.control.runtime import Runtime
from tests.support.app import app_client, running_runtime
from tests.support.stripe_server import FakeStripe, stripe_server, with_stripe

STRIPE_SECRET = "whsec_test_secret"


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    with stripe_server() as state:
        yield state


@pytest.fixture
def stripe_settings(settings: Settings, fake_stripe: FakeStripe) -> Settings:
    return with_stripe(settings, fake_stripe, stripe_webhook_secret=SecretStr(STRIPE_SECRET))


@pytest.fixture
async def stripe_runtime(stripe_settings: Settings) -> AsyncIterator[Runtime]:
    async with running_runtime(stripe_settings) as rt:
        yield rt


@pytest.fixture
async def stripe_client(stripe_runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(stripe_runtime) as client:
        yield client
