"""Stored webhook events never jam: one handler per event, the answer before the handling,
poison events retried with a growing backoff and then parked for an administrator, and a
new event handled within the scheduler's interval behind 600 failing ones."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.billing.service import (
    EVENT_MAX_ATTEMPTS,
    WEBHOOK_HANDLERS,
    event_backoff,
    webhook_handler,
)
from burrow.control.billing.service import billing as billing_service
from burrow.control.billing.service import webhook as webhook_service
from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.models import Order, OrderStatus, PaymentMethod, WebhookEvent, utcnow
from burrow.control.runtime import Runtime
from tests.support.app import running_runtime
from tests.support.factories import create_account, create_session_token, get_plan
from tests.support.server import serving
from tests.support.stripe_server import (
    HTTPX_DATA_WARNING,
    FakeStripe,
    event,
    sign,
    stripe_server,
    with_stripe,
)

pytestmark = pytest.mark.filterwarnings(HTTPX_DATA_WARNING)

SECRET = "whsec_events"


@pytest.fixture
def handled() -> Iterator[list[Any]]:
    """A provider "testpay" whose handler takes a moment, and fails when the payload says so
    (the handler runs in the server's thread too: the list is only appended to)."""
    seen: list[Any] = []

    @webhook_handler("testpay")
    async def _handle(
        session: AsyncSession, runtime: Runtime, event: WebhookEvent, payload: dict[str, Any]
    ) -> None:
        await asyncio.sleep(float(payload.get("takes", 0)))
        if payload.get("explode"):
            raise RuntimeError("handler failed")
        seen.append(payload["n"])

    yield seen
    WEBHOOK_HANDLERS.pop("testpay", None)


async def _event(runtime: Runtime, event_id: str) -> WebhookEvent:
    # A reading unit: on SQLite it waits for no write lock, so it sees a busy server's work
    # when it is committed, not when the busy handler happens to let it in.
    async with unit_of_work(runtime.sessionmaker, writes=False) as session:
        found = await session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == event_id))
        assert found is not None
        return found


async def test_concurrent_runs_handle_each_event_once(runtime: Runtime, handled: list[Any]) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        for n in range(5):
            await webhook_service.store(
                session, "testpay", f"evt_{n}", "paid", {"n": n, "takes": 0.05}
            )
    # Ten scheduler runs (replicas) and the webhook's own handling, all at once.
    await asyncio.gather(*(webhook_service.process_pending(runtime) for _ in range(10)))
    assert sorted(handled) == [0, 1, 2, 3, 4]
    async with unit_of_work(runtime.sessionmaker) as session:
        events = (await session.scalars(select(WebhookEvent))).all()
    assert all(e.processed_at is not None and e.attempts == 1 for e in events)


async def test_a_poison_event_backs_off_then_is_parked_and_retried_by_an_admin(
    runtime: Runtime, client: httpx.AsyncClient, handled: list[Any]
) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        await webhook_service.store(
            session, "testpay", "evt_bad", "paid", {"n": 1, "explode": True}
        )
        admin = await create_account(session, admin=True)
        headers = {"Authorization": f"Bearer {await create_session_token(session, admin)}"}

    for attempt in range(1, EVENT_MAX_ATTEMPTS + 1):
        assert await webhook_service.process_pending(runtime) == 0
        stored = await _event(runtime, "evt_bad")
        assert stored.attempts == attempt
        assert stored.error == "RuntimeError: handler failed"
        if attempt < EVENT_MAX_ATTEMPTS:
            assert stored.failed_at is None
            assert stored.next_attempt_at is not None
            wait = stored.next_attempt_at - utcnow()
            assert event_backoff(attempt) - timedelta(seconds=5) < wait <= event_backoff(attempt)
            # Not before its backoff ...
            assert await webhook_service.process_pending(runtime) == 0
            assert (await _event(runtime, "evt_bad")).attempts == attempt
            # ... and again once it is over.
            async with unit_of_work(runtime.sessionmaker) as session:
                await session.execute(
                    update(WebhookEvent).values(next_attempt_at=utcnow() - timedelta(seconds=1))
                )
    parked = await _event(runtime, "evt_bad")
    assert parked.failed_at is not None
    assert parked.processed_at is None
    assert event_backoff(2) == 2 * event_backoff(1)

    listed = await client.get("/api/v1/admin/webhook-events/failed", headers=headers)
    assert listed.status_code == 200, listed.text
    [shown] = listed.json()
    assert (shown["id"], shown["provider"], shown["type"]) == (parked.id, "testpay", "paid")
    assert shown["error"] == "RuntimeError: handler failed"
    assert shown["attempts"] == EVENT_MAX_ATTEMPTS

    # Fixed (the handler no longer explodes on it), and retried by the administrator.
    async with unit_of_work(runtime.sessionmaker) as session:
        await session.execute(update(WebhookEvent).values(payload='{"n": 1}'))
    retried = await client.post(f"/api/v1/admin/webhook-events/{parked.id}/retry", headers=headers)
    assert retried.status_code == 200, retried.text
    assert handled == [1]
    assert (await _event(runtime, "evt_bad")).processed_at is not None
    again = await client.post(f"/api/v1/admin/webhook-events/{parked.id}/retry", headers=headers)
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert (await client.get("/api/v1/admin/webhook-events/failed", headers=headers)).json() == []


# --- against a real server --------------------------------------------------------------------


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    with stripe_server() as state:
        yield state


INTERVAL = 2.0


@pytest.fixture
def live_settings(settings: Settings, fake_stripe: FakeStripe) -> Settings:
    return with_stripe(
        settings,
        fake_stripe,
        stripe_webhook_secret=SecretStr(SECRET),
        scheduler_enabled=True,
        scheduler_interval_seconds=INTERVAL,
    )


@pytest.fixture
async def seeded(live_settings: Settings) -> AsyncIterator[Runtime]:
    async with running_runtime(live_settings.model_copy(update={"scheduler_enabled": False})) as rt:
        yield rt


async def _wait_for(check: Any, seconds: float) -> float:
    """Poll ``check`` (an async callable) until it is true; returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if await check():
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {seconds} s")


async def test_the_webhook_answers_before_a_slow_stripe_is_asked(
    seeded: Runtime, live_settings: Settings, fake_stripe: FakeStripe
) -> None:
    async with unit_of_work(seeded.sessionmaker) as session:
        account = await create_account(session)
        plan = await get_plan(session, "personal-monthly")
        order = await billing_service.open_order(
            session, account, plan, PaymentMethod.card, "stripe"
        )
    completed = {
        "id": f"cs_{order.id}",
        "object": "checkout.session",
        "mode": "payment",
        "payment_status": "paid",
        "payment_intent": "pi_slow",
        "amount_total": 1199,
        "currency": "usd",
        "client_reference_id": str(order.id),
        "metadata": {
            "account_id": str(account.id),
            "plan_code": plan.code,
            "order_id": str(order.id),
        },
    }
    payload = event("evt_slow", "checkout.session.completed", completed)
    fake_stripe.delay = 5.0  # the handler asks Stripe for the card: 5 s
    with serving(live_settings.model_copy(update={"scheduler_enabled": False})) as live:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
            started = time.monotonic()
            response = await client.post(
                "/api/v1/billing/webhooks/stripe",
                content=payload,
                headers={"Stripe-Signature": sign(payload, SECRET)},
            )
            answered = time.monotonic() - started
        assert response.status_code == 200, response.text
        assert answered < 2.5, answered

        async def paid() -> bool:
            async with unit_of_work(seeded.sessionmaker) as session:
                found = await session.get(Order, order.id)
                return found is not None and found.status == OrderStatus.paid

        await _wait_for(paid, 15)


async def test_a_new_event_is_handled_ahead_of_600_failing_ones(
    seeded: Runtime, live_settings: Settings, handled: list[Any]
) -> None:
    async with unit_of_work(seeded.sessionmaker) as session:
        for n in range(600):
            await webhook_service.store(
                session,
                "testpay",
                f"evt_poison_{n}",
                "paid",
                {"n": n, "explode": True, "takes": 0.01},
            )

    async def untried() -> int:
        """Poison events never tried yet."""
        async with unit_of_work(seeded.sessionmaker, writes=False) as session:
            query = (
                select(func.count())
                .select_from(WebhookEvent)
                .where(WebhookEvent.attempts == 0, WebhookEvent.event_id != "evt_valid")
            )
            return int(await session.scalar(query) or 0)

    with serving(live_settings):

        async def churning() -> bool:
            return await untried() <= 550

        await _wait_for(churning, 30)
        # Stored as if its delivery's own handling died with its process: only the scheduler
        # is left to handle it.
        async with unit_of_work(seeded.sessionmaker) as session:
            await webhook_service.store(session, "testpay", "evt_valid", "paid", {"n": "valid"})
        waiting = await untried()

        async def done() -> bool:
            return (await _event(seeded, "evt_valid")).processed_at is not None

        # Handled within the interval as a rule (0.02-0.6 s alone; 2.8 s once in a loaded full
        # run), so the time is only bounded loosely here. What cannot depend on the machine's
        # load is the order: behind the backlog, every one of the waiting events (about 9 s of
        # failing handlers) would go first; ahead of it, at most the few claimed meanwhile.
        # The order is read from the rows themselves (when each old event failed, against
        # when the new one arrived and was handled), not from when this test got to look.
        await _wait_for(done, 3 * INTERVAL)
        valid = await _event(seeded, "evt_valid")
        assert valid.processed_at is not None
        first_wait = event_backoff(1)
        async with unit_of_work(seeded.sessionmaker, writes=False) as session:
            query = (
                select(func.count())
                .select_from(WebhookEvent)
                .where(
                    WebhookEvent.event_id != "evt_valid",
                    WebhookEvent.next_attempt_at > valid.received_at + first_wait,
                    WebhookEvent.next_attempt_at < valid.processed_at + first_wait,
                )
            )
            went_before = int(await session.scalar(query) or 0)
        # SQLite: 1-22 alone, 51-58 in loaded full runs (the valid event's handler waits for
        # the write lock while failing handlers take it in turn, longer on a busy machine);
        # PostgreSQL: 0-1. Behind the backlog it would be all of them: a quarter separates
        # the two by far whatever the load.
        assert went_before <= waiting // 4, f"{went_before} of {waiting} old events went first"
    assert "valid" in handled
