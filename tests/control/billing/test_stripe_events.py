"""Stripe webhooks: signed as Stripe signs them, verified by the stripe library, stored once."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from burrow.control.app import create_app
from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.models import Order, OrderKind, WebhookEvent
from burrow.control.runtime import Runtime
from burrow.control.startup import prepare
from burrow.control.subscriptions.service import subscription as subscription_service
from tests.support.factories import create_account

SECRET = "whsec_test_secret"
URL = "/api/v1/billing/webhooks/stripe"
PROBLEM = "application/problem+json"


@pytest.fixture
async def stripe_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    rt = Runtime.build(settings.model_copy(update={"stripe_webhook_secret": SecretStr(SECRET)}))
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


def _sign(payload: bytes, *, secret: str = SECRET, at: int | None = None) -> str:
    """The header Stripe sends: t=<unix time>,v1=<HMAC-SHA256 of "t.payload">."""
    timestamp = int(time.time()) if at is None else at
    digest = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256
    ).hexdigest()
    return f"t={timestamp},v1={digest}"


def _checkout(event_id: str, account_id: int, *, amount: int = 699) -> bytes:
    event: dict[str, Any] = {
        "id": event_id,
        "object": "event",
        "type": "checkout.session.completed",
        "data": {
            "object": {
                "id": f"cs_{event_id}",
                "object": "checkout.session",
                "payment_status": "paid",
                "payment_intent": f"pi_{event_id}",
                "amount_total": amount,
                "currency": "usd",
                "metadata": {"account_id": str(account_id), "plan_code": "personal-monthly"},
            }
        },
    }
    return json.dumps(event).encode()


async def _count(runtime: Runtime, model: type[Any]) -> int:
    async with unit_of_work(runtime.sessionmaker) as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_signed_checkout_pays_once(
    stripe_client: httpx.AsyncClient, stripe_runtime: Runtime
) -> None:
    async with unit_of_work(stripe_runtime.sessionmaker) as session:
        account = await create_account(session)
    payload = _checkout("evt_1", account.id)
    headers = {"Stripe-Signature": _sign(payload), "Content-Type": "application/json"}
    response = await stripe_client.post(URL, content=payload, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"received": True, "duplicate": False}
    async with unit_of_work(stripe_runtime.sessionmaker) as session:
        order = await session.scalar(select(Order).where(Order.account_id == account.id))
        assert order is not None
        assert order.kind == OrderKind.first
        assert order.provider == "stripe"
        assert order.amount_minor == 699
        assert await subscription_service.access_plan(session, account.id) is not None

    again = await stripe_client.post(URL, content=payload, headers=headers)
    assert again.status_code == 200
    assert again.json() == {"received": True, "duplicate": True}
    assert await _count(stripe_runtime, Order) == 1
    assert await _count(stripe_runtime, WebhookEvent) == 1


async def test_forged_replayed_and_malformed_are_refused_and_not_stored(
    stripe_client: httpx.AsyncClient, stripe_runtime: Runtime
) -> None:
    payload = _checkout("evt_bad", 1)
    not_json = b"{not json"
    no_id = json.dumps({"type": "invoice.paid"}).encode()
    cases = [
        (payload, {}),
        (payload, {"Stripe-Signature": _sign(payload, secret="whsec_other")}),
        (payload, {"Stripe-Signature": _sign(payload, at=int(time.time()) - 3600)}),
        (payload, {"Stripe-Signature": "garbage"}),
        (payload + b" ", {"Stripe-Signature": _sign(payload)}),
        (not_json, {"Stripe-Signature": _sign(not_json)}),
        (no_id, {"Stripe-Signature": _sign(no_id)}),
        (b"\xff\xfe", {"Stripe-Signature": _sign(b"\xff\xfe")}),
    ]
    for body, headers in cases:
        response = await stripe_client.post(URL, content=body, headers=headers)
        assert response.status_code == 400, (body, headers)
        assert response.headers["content-type"] == PROBLEM
    assert await _count(stripe_runtime, WebhookEvent) == 0


async def test_without_a_secret_the_endpoint_is_absent(client: httpx.AsyncClient) -> None:
    payload = _checkout("evt_none", 1)
    response = await client.post(URL, content=payload, headers={"Stripe-Signature": _sign(payload)})
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
