"""CoinGate: orders made through its API v2, callbacks believed only as CoinGate documents.

A local server on loopback answers as CoinGate's API does and records what it was sent; the
callbacks are posted to the real app as the form CoinGate posts.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from burrow.control.billing.coingate import callback_token, minor_units, price_text, receive
from burrow.control.billing.service import webhook as webhook_service
from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.models import (
    Account,
    AccountStatus,
    Order,
    OrderKind,
    OrderStatus,
    Payment,
    PaymentMethod,
    RefundRequest,
    RefundStatus,
    SubscriptionStatus,
    WebhookEvent,
)
from burrow.control.refunds.service import refund as refund_service
from burrow.control.runtime import Runtime
from burrow.control.subscriptions.service import subscription as subscription_service
from tests.conftest import TEST_SECRET
from tests.support.app import app_client, running_runtime
from tests.support.coingate_server import FakeCoinGate, running_coingate
from tests.support.factories import create_account, create_session_token

API_KEY = "cg-test-api-key"
URL = "/api/v1/billing/webhooks/coingate"
PROBLEM = "application/problem+json"


@pytest.fixture
def fake_coingate() -> Iterator[FakeCoinGate]:
    with running_coingate(API_KEY) as server:
        yield server


@pytest.fixture
async def cg_runtime(settings: Settings, fake_coingate: FakeCoinGate) -> AsyncIterator[Runtime]:
    configured = settings.model_copy(
        update={"coingate_api_key": SecretStr(API_KEY), "coingate_api_base": fake_coingate.url}
    )
    async with running_runtime(configured) as rt:
        yield rt


@pytest.fixture
async def cg_client(cg_runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(cg_runtime) as client:
        yield client


async def _checkout(
    runtime: Runtime, client: httpx.AsyncClient, plan_code: str = "personal-monthly"
) -> tuple[Account, Order]:
    """A customer pays for ``plan_code`` with crypto through the API; returns the order."""
    response, account = await _ask_checkout(runtime, client, plan_code)
    assert response.status_code == 201, response.text
    body = response.json()
    order = await _order(runtime, body["order_id"])
    assert body["checkout_url"].endswith(f"/invoice/{order.provider_order_id}")
    return account, order


async def _ask_checkout(
    runtime: Runtime, client: httpx.AsyncClient, plan_code: str = "personal-monthly"
) -> tuple[httpx.Response, Account]:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
        token = await create_session_token(session, account)
    response = await client.post(
        "/api/v1/billing/checkout",
        json={"plan_code": plan_code, "method": "crypto"},
        headers={"Authorization": f"Bearer {token}"},
    )
    return response, account


async def _order(runtime: Runtime, order_id: int) -> Order:
    async with unit_of_work(runtime.sessionmaker) as session:
        found = await session.get(Order, order_id)
        assert found is not None
        return found


async def _count(runtime: Runtime, model: type[Any]) -> int:
    async with unit_of_work(runtime.sessionmaker) as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def _pay(
    fake: FakeCoinGate, client: httpx.AsyncClient, order: Order, status: str = "paid"
) -> httpx.Response:
    coingate_id = int(order.provider_order_id or 0)
    fake.set_status(coingate_id, status)
    return await client.post(URL, data=fake.callback_form(coingate_id))


# --- money as CoinGate writes it ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [(1199, "USD", "11.99"), (5, "EUR", "0.05"), (100, "EUR", "1.00"), (0, "USD", "0.00"),
     (1500, "JPY", "1500"), (123456789012, "USD", "1234567890.12")],
)  # fmt: skip
def test_price_text_from_minor_units(minor: int, currency: str, text: str) -> None:
    assert price_text(minor, currency) == text
    assert minor_units(text, currency) == minor


@pytest.mark.parametrize(
    ("text", "expected"),
    [("11.99", 1199), ("2000.0", 200000), ("11.999", None), ("abc", None), ("NaN", None),
     ("Infinity", None), ("", None), (None, None), (True, None), ("1e2", 10000)],
)  # fmt: skip
def test_minor_units_refuse_what_is_not_a_price(text: object, expected: int | None) -> None:
    assert minor_units(text, "USD") == expected


# --- checkout --------------------------------------------------------------------------------


async def test_checkout_creates_a_coingate_order_for_a_pending_order(
    cg_runtime: Runtime, cg_client: httpx.AsyncClient, fake_coingate: FakeCoinGate
) -> None:
    account, order = await _checkout(cg_runtime, cg_client)

    [call] = fake_coingate.created()
    assert call.authorization == f"Token {API_KEY}"
    form = call.form
    assert form["order_id"] == str(order.id)
    assert form["price_amount"] == price_text(order.amount_minor, order.currency)
    assert form["price_currency"] == order.currency
    assert form["callback_url"] == f"http://testserver{URL}"
    assert form["success_url"].startswith("http://testserver/billing")
    assert form["cancel_url"] == "http://testserver/billing"
    expected = hmac.new(
        TEST_SECRET.encode(), f"coingate-callback:{order.id}".encode(), hashlib.sha256
    ).hexdigest()
    assert form["token"] == expected == callback_token(cg_runtime.settings, order.id)
    assert len(form["title"]) >= 3
    assert len(form["description"]) >= 3

    stored = await _order(cg_runtime, order.id)
    assert stored.status == OrderStatus.pending
    assert stored.payment_method == PaymentMethod.crypto
    assert stored.provider == "coingate"
    assert stored.provider_order_id == str(next(iter(fake_coingate.orders)))
    assert stored.account_id == account.id


async def test_crypto_checkout_without_an_api_key_is_a_clear_problem(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    response, _ = await _ask_checkout(runtime, client)
    assert response.status_code == 409
    assert response.headers["content-type"] == PROBLEM
    assert "not set up" in response.json()["detail"]
    assert await _count(runtime, Order) == 0


async def test_checkout_when_coingate_fails_keeps_no_order(
    cg_runtime: Runtime, cg_client: httpx.AsyncClient, fake_coingate: FakeCoinGate
) -> None:
    fake_coingate.failures = 1
    response, _ = await _ask_checkout(cg_runtime, cg_client)
    assert response.status_code == 502
    assert response.headers["content-type"] == PROBLEM
    assert "Nothing was charged" in response.json()["detail"]
    assert await _count(cg_runtime, Order) == 0  # the unit of work rolled back


# --- callbacks -------------------------------------------------------------------------------


async def test_paid_callback_pays_the_order_once(
    cg_runtime: Runtime, cg_client: httpx.AsyncClient, fake_coingate: FakeCoinGate
) -> None:
    account, order = await _checkout(cg_runtime, cg_client)

    response = await _pay(fake_coingate, cg_client, order)
    assert response.status_code == 200, response.text
    assert response.json() == {"received": True, "duplicate": False}

    # Confirmed by asking CoinGate's API for the order, with the API key.
    gets = [c for c in fake_coingate.calls if c.method == "GET"]
    assert [c.path for c in gets] == [f"/v2/orders/{order.provider_order_id}"]
    assert gets[0].authorization == f"Token {API_KEY}"

    paid = await _order(cg_runtime, order.id)
    assert paid.status == OrderStatus.paid
    assert paid.kind == OrderKind.first
    async with unit_of_work(cg_runtime.sessionmaker) as session:
        payment = await session.scalar(select(Payment).where(Payment.order_id == order.id))
        assert payment is not None
        assert payment.provider_payment_id == order.provider_order_id
        assert payment.amount_minor == order.amount_minor
        current = await subscription_service.current(session, account.id)
        assert current is not None
        assert current.status == SubscriptionStatus.active
        event = await session.scalar(select(WebhookEvent))
        assert event is not None
        assert (event.provider, event.event_id) == ("coingate", f"{order.provider_order_id}:paid")
        assert event.processed_at is not None
        assert event.error is None

    # CoinGate sends the same callback again: stored once, paid once.
    again = await cg_client.post(
        URL, data=fake_coingate.callback_form(int(paid.provider_order_id or 0))
    )
    assert again.json() == {"received": True, "duplicate": True}
    assert await _count(cg_runtime, Payment) == 1
    assert await _count(cg_runtime, WebhookEvent) == 1


async def test_the_callbacks_status_is_not_believed(
    cg_runtime: Runtime, cg_client: httpx.AsyncClient, fake_coingate: FakeCoinGate
) -> None:
    """A callback saying "paid" while CoinGate's API says "pending" pays nothing."""
    _, order = await _checkout(cg_runtime, cg_client)
    coingate_id = int(order.provider_order_id or 0)
    fake_coingate.set_status(coingate_id, "pending")

    form = fake_coingate.callback_form(coingate_id, status="paid", price_amount="0.01")
    response = await cg_client.post(URL, data=form)
    assert response.status_code == 200

    assert (await _order(cg_runtime, order.id)).status == OrderStatus.pending
    assert await _count(cg_runtime, Payment) == 0
    async with unit_of_work(cg_runtime.sessionmaker) as session:
        event = await session.scalar(select(WebhookEvent))
        assert event is not None
        assert event.event_id == f"{coingate_id}:pending"


@pytest.mark.parametrize("status", ["invalid", "expired", "canceled"])
async def test_failed_statuses_fail_the_order(
    cg_runtime: Runtime, cg_client: httpx.AsyncClient, fake_coingate: FakeCoinGate, status: str
) -> None:
    account, order = await _checkout(cg_runtime, cg_client)
    response = await _pay(fake_coingate, cg_client, order, status)
    assert response.status_code == 200
    assert (await _order(cg_runtime, order.id)).status == OrderStatus.failed
    async with unit_of_work(cg_runtime.sessionmaker) as session:
        assert await subscription_service.current(session, account.id) is None


async def test_out_of_order_callbacks_never_undo_a_payment(
    cg_runtime: Runtime, cg_client: httpx.AsyncClient, fake_coingate: FakeCoinGate
) -> None:
    _, order = await _checkout(cg_runtime, cg_client)
    coingate_id = int(order.provider_order_id or 0)
    await _pay(fake_coingate, cg_client, order, "paid")
    # A late "confirming" (or a stray "expired") after "paid" changes nothing.
    for late in ("confirming", "expired"):
        fake_coingate.set_status(coingate_id, late)
        assert (await cg_client.post(URL, data=fake_coingate.callback_form(coingate_id))).is_success
    assert (await _order(cg_runtime, order.id)).status == OrderStatus.paid
    assert await _count(cg_runtime, Payment) == 1


async def _refused(client: httpx.AsyncClient, runtime: Runtime, form: dict[str, str]) -> None:
    response = await client.post(URL, data=form)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == PROBLEM
    assert "refused" in response.json()["detail"]
    assert await _count(runtime, WebhookEvent) == 0


async def test_forged_callbacks_are_refused_and_stored_nowhere(
    cg_runtime: Runtime, cg_client: httpx.AsyncClient, fake_coingate: FakeCoinGate
) -> None:
    _, order = await _checkout(cg_runtime, cg_client)
    _, other = await _checkout(cg_runtime, cg_client)
    coingate_id = int(order.provider_order_id or 0)
    fake_coingate.set_status(coingate_id, "paid")
    form = fake_coingate.callback_form(coingate_id)
    before = len(fake_coingate.calls)

    await _refused(cg_client, cg_runtime, {**form, "token": "0" * 64})
    await _refused(cg_client, cg_runtime, {**form, "token": ""})
    await _refused(cg_client, cg_runtime, {k: v for k, v in form.items() if k != "token"})
    # Another order's token does not open this one.
    await _refused(
        cg_client, cg_runtime, {**form, "token": callback_token(cg_runtime.settings, other.id)}
    )
    # An order of ours, with its own valid token, but not the CoinGate order named.
    await _refused(
        cg_client,
        cg_runtime,
        {
            **form,
            "order_id": str(other.id),
            "token": callback_token(cg_runtime.settings, other.id),
        },
    )
    # A valid token for an order id that does not exist.
    await _refused(
        cg_client,
        cg_runtime,
        {**form, "order_id": "999999", "token": callback_token(cg_runtime.settings, 999999)},
    )
    await _refused(cg_client, cg_runtime, {**form, "id": "abc"})
    await _refused(cg_client, cg_runtime, {**form, "id": "\u0661\u0662"})  # not ASCII digits
    await _refused(cg_client, cg_runtime, {})
    # None of these reached CoinGate's API: refused on our side first.
    assert len(fake_coingate.calls) == before
    assert (await _order(cg_runtime, order.id)).status == OrderStatus.pending


async def test_an_order_coingate_does_not_confirm_is_refused(
    cg_runtime: Runtime, cg_client: httpx.AsyncClient, fake_coingate: FakeCoinGate
) -> None:
    """The token is right, but CoinGate's own order disagrees with ours: nothing is stored."""
    _, order = await _checkout(cg_runtime, cg_client)
    coingate_id = int(order.provider_order_id or 0)
    form = fake_coingate.callback_form(coingate_id)
    for changes in (
        {"price_amount": "0.01"},
        {"price_currency": "BTC"},
        {"order_id": "12345"},
        {"status": "made-up"},
    ):
        saved = dict(fake_coingate.orders[coingate_id])
        fake_coingate.set_status(coingate_id, **{"status": "paid", **changes})
        await _refused(cg_client, cg_runtime, form)
        fake_coingate.orders[coingate_id] = saved
    assert (await _order(cg_runtime, order.id)).status == OrderStatus.pending
    assert await _count(cg_runtime, Payment) == 0


async def test_coingate_unreachable_answers_503_and_stores_nothing(
    cg_runtime: Runtime, cg_client: httpx.AsyncClient, fake_coingate: FakeCoinGate
) -> None:
    _, order = await _checkout(cg_runtime, cg_client)
    coingate_id = int(order.provider_order_id or 0)
    fake_coingate.set_status(coingate_id, "paid")
    fake_coingate.failures = 1
    response = await cg_client.post(URL, data=fake_coingate.callback_form(coingate_id))
    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM
    assert await _count(cg_runtime, WebhookEvent) == 0
    # CoinGate sends it again later; now it goes through.
    response = await cg_client.post(URL, data=fake_coingate.callback_form(coingate_id))
    assert response.status_code == 200
    assert (await _order(cg_runtime, order.id)).status == OrderStatus.paid


async def test_without_an_api_key_the_callback_endpoint_is_404(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    response = await client.post(URL, data={"id": "1", "order_id": "1", "token": "x"})
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    assert await _count(runtime, WebhookEvent) == 0


async def test_a_stored_event_is_handled_after_a_crash(
    cg_runtime: Runtime, cg_client: httpx.AsyncClient, fake_coingate: FakeCoinGate
) -> None:
    """Stored, then the process stops before handling: the scheduler's run pays the order."""
    _, order = await _checkout(cg_runtime, cg_client)
    coingate_id = int(order.provider_order_id or 0)
    fake_coingate.set_status(coingate_id, "paid")
    async with unit_of_work(cg_runtime.sessionmaker) as session:
        stored, status = await receive(
            session, cg_runtime, fake_coingate.callback_form(coingate_id)
        )
    assert (stored, status) == (True, "paid")
    assert (await _order(cg_runtime, order.id)).status == OrderStatus.pending

    assert await webhook_service.process_pending(cg_runtime) == 1
    assert (await _order(cg_runtime, order.id)).status == OrderStatus.paid


async def test_a_payment_for_a_terminated_account_gives_no_period(
    cg_runtime: Runtime, cg_client: httpx.AsyncClient, fake_coingate: FakeCoinGate
) -> None:
    account, order = await _checkout(cg_runtime, cg_client)
    async with unit_of_work(cg_runtime.sessionmaker) as session:
        found = await session.get(Account, account.id)
        assert found is not None
        found.status = AccountStatus.terminated

    assert (await _pay(fake_coingate, cg_client, order)).status_code == 200

    assert (await _order(cg_runtime, order.id)).status == OrderStatus.pending
    assert await _count(cg_runtime, Payment) == 0
    async with unit_of_work(cg_runtime.sessionmaker) as session:
        event = await session.scalar(select(WebhookEvent))
        assert event is not None
        # Handled (not retried for ever): a person refunds it at CoinGate.
        assert event.processed_at is not None
        assert event.error is None
        assert await subscription_service.current(session, account.id) is None


# --- refunds ---------------------------------------------------------------------------------


async def test_an_approved_refund_on_a_crypto_order_is_never_executed(
    cg_runtime: Runtime, cg_client: httpx.AsyncClient, fake_coingate: FakeCoinGate
) -> None:
    """Crypto is excluded by both seeds; should one be approved anyway, it fails loudly."""
    account, order = await _checkout(cg_runtime, cg_client)
    await _pay(fake_coingate, cg_client, order)
    async with unit_of_work(cg_runtime.sessionmaker) as session:
        request = RefundRequest(
            order_id=order.id,
            account_id=account.id,
            status=RefundStatus.approved,
            amount_minor=order.amount_minor,
            terms_version="2026-11",
        )
        session.add(request)
        await session.flush()
        assert await refund_service.execute(session, cg_runtime, request) is False
        assert request.status == RefundStatus.failed
        assert request.executed_at is None
        assert "coingate" in (request.decision_reason or "")
    paid = await _order(cg_runtime, order.id)
    assert paid.status == OrderStatus.paid
    assert paid.refunded_minor == 0
    assert not [c for c in fake_coingate.calls if "refund" in c.path]
