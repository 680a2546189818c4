"""Stripe refunds: the real stripe library calls a local server that answers as Stripe does."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
from pydantic import SecretStr

from burrow.control.billing.service import billing as billing_service
from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.models import Order, OrderStatus, PaymentMethod, RefundRequest, RefundStatus
from burrow.control.refunds.service import refund as refund_service
from burrow.control.refunds.tasks import execute_approved_refunds
from burrow.control.runtime import Runtime
from burrow.control.startup import prepare
from tests.control.refunds.conftest import METERED_POLICY
from tests.support.factories import create_account, get_plan

# stripe's own httpx client uploads its form as ``data=bytes``, which httpx deprecates.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Use 'content=<...>' to upload raw bytes:DeprecationWarning"
)


class FakeStripe:
    """Answers POST /v1/refunds with a Stripe-shaped refund; the same key, the same refund."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, list[str]]]] = []
        self.refunds: dict[str, dict[str, Any]] = {}
        self.failures = 0  # answer this many calls with a 500 first


@pytest.fixture
def fake_stripe() -> Iterator[tuple[str, FakeStripe]]:
    state = FakeStripe()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = parse_qs(self.rfile.read(length).decode())
            key = self.headers.get("Idempotency-Key", "")
            state.calls.append((key, form))
            if self.path != "/v1/refunds":
                self._answer(404, {"error": {"message": "no such route", "type": "invalid"}})
            elif state.failures:
                state.failures -= 1
                self._answer(500, {"error": {"message": "try later", "type": "api_error"}})
            else:
                refund = state.refunds.setdefault(
                    key,
                    {
                        "id": f"re_{len(state.refunds) + 1}",
                        "object": "refund",
                        "amount": int(form["amount"][0]),
                        "payment_intent": form.get("payment_intent", [None])[0],
                        "status": "succeeded",
                    },
                )
                self._answer(200, refund)

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
async def stripe_metered(
    settings: Settings, fake_stripe: tuple[str, FakeStripe]
) -> AsyncIterator[Runtime]:
    url, _ = fake_stripe
    configured = settings.model_copy(
        update={
            "policy_path": METERED_POLICY,
            "stripe_api_key": SecretStr("sk_test_burrow"),
            "stripe_api_base": url,
        }
    )
    rt = Runtime.build(configured)
    await prepare(rt)
    try:
        yield rt
    finally:
        await rt.close()


async def _stripe_order(runtime: Runtime, reference: str) -> tuple[Any, Order]:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
        plan = await get_plan(session, "personal-monthly")
        recorded = await billing_service.record_payment(
            session, runtime, account, plan, 1199, "USD", PaymentMethod.card, "stripe", reference
        )
        return account, recorded.order


async def test_approved_refund_goes_out_through_stripe_once(
    stripe_metered: Runtime, fake_stripe: tuple[str, FakeStripe]
) -> None:
    _, state = fake_stripe
    account, order = await _stripe_order(stripe_metered, "pi_abc")
    async with unit_of_work(stripe_metered.sessionmaker) as session:
        view = await refund_service.request(session, stripe_metered, account, order.id, "Slow")
    assert view.request.status == RefundStatus.executed
    assert view.request.provider_refund_id == "re_1"
    [(key, form)] = state.calls
    assert key == f"burrow-refund-{view.request.id}"
    assert form["payment_intent"] == ["pi_abc"]
    assert form["amount"] == ["1199"]
    async with unit_of_work(stripe_metered.sessionmaker) as session:
        stored = await session.get(Order, order.id)
        assert stored is not None
        assert stored.status == OrderStatus.refunded
    assert await execute_approved_refunds(stripe_metered) == 0
    assert len(state.calls) == 1


async def test_stripe_failure_is_retried_with_the_same_key(
    stripe_metered: Runtime, fake_stripe: tuple[str, FakeStripe]
) -> None:
    _, state = fake_stripe
    account, order = await _stripe_order(stripe_metered, "pi_retry")
    # More failures than the library's own retries: the request stays approved.
    state.failures = 3
    async with unit_of_work(stripe_metered.sessionmaker) as session:
        view = await refund_service.request(session, stripe_metered, account, order.id, "Slow")
    assert view.request.status == RefundStatus.approved
    assert len(state.calls) == 3
    assert state.refunds == {}
    assert await execute_approved_refunds(stripe_metered) == 1
    assert await execute_approved_refunds(stripe_metered) == 0
    async with unit_of_work(stripe_metered.sessionmaker) as session:
        stored = await session.get(RefundRequest, view.request.id)
        assert stored is not None
        assert stored.status == RefundStatus.executed
        assert stored.provider_refund_id == "re_1"
    assert len(state.calls) == 4
    assert {key for key, _ in state.calls} == {f"burrow-refund-{view.request.id}"}
    assert len(state.refunds) == 1
