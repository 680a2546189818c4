"""Billing service: payments make orders and periods; webhooks are stored first, handled
second."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.audit.service import CliOperator, NotAnAdministrator, admin_audit
from burrow.control.billing.schemas import BillingDetailsIn
from burrow.control.billing.service import (
    WEBHOOK_HANDLERS,
    AccountTerminated,
    BillingDetailsNotNeeded,
    DuplicatePayment,
    OrderNotPayable,
    webhook_handler,
)
from burrow.control.billing.service import billing as billing_service
from burrow.control.billing.service import webhook as webhook_service
from burrow.control.billing.tasks import process_webhook_events
from burrow.control.db import unit_of_work
from burrow.control.errors import InvalidInput
from burrow.control.models import (
    Account,
    AccountStatus,
    OrderKind,
    OrderStatus,
    PaymentMethod,
    ServedPeer,
    SubscriptionStatus,
    WebhookEvent,
    utcnow,
)
from burrow.control.runtime import Runtime
from burrow.control.subscriptions.service import subscription as subscription_service
from tests.support.factories import create_account, create_device, get_plan


async def _pay(
    session: AsyncSession,
    runtime: Runtime,
    account: Account,
    reference: str,
    *,
    plan_code: str = "personal-monthly",
    method: PaymentMethod = PaymentMethod.card,
) -> Any:
    plan = await get_plan(session, plan_code)
    return await billing_service.record_payment(
        session,
        runtime,
        account,
        plan,
        plan.price_minor,
        plan.currency,
        method,
        "manual",
        reference,
    )


async def test_first_payment_then_renewal_extends_the_period(
    session: AsyncSession, runtime: Runtime
) -> None:
    account = await create_account(session)
    first = await _pay(session, runtime, account, "ref-1")
    assert first.order.kind == OrderKind.first
    assert first.order.status == OrderStatus.paid
    assert first.order.amount_minor == 699
    assert first.payment.provider_payment_id == "ref-1"
    current = await subscription_service.current(session, account.id)
    assert current is not None
    assert current.status == SubscriptionStatus.active
    end = current.current_period_end
    plan = await subscription_service.access_plan(session, account.id)
    assert plan is not None
    assert plan.code == "personal-monthly"

    second = await _pay(session, runtime, account, "ref-2")
    assert second.order.kind == OrderKind.renewal
    again = await subscription_service.current(session, account.id)
    assert again is not None
    assert again.id == current.id
    assert again.current_period_end > end
    assert "Extended" in second.message


async def test_payment_serves_the_devices(runtime: Runtime) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
        device = await create_device(session, account)
        await _pay(session, runtime, account, "ref-served")
    async with unit_of_work(runtime.sessionmaker) as session:
        keys = set(
            await session.scalars(
                select(ServedPeer.public_key).where(ServedPeer.account_id == account.id)
            )
        )
    assert keys == {device.public_key}


async def test_duplicate_payment_changes_nothing(session: AsyncSession, runtime: Runtime) -> None:
    account = await create_account(session)
    await _pay(session, runtime, account, "ref-dup")
    with pytest.raises(DuplicatePayment) as caught:
        await _pay(session, runtime, account, "ref-dup")
    assert "already recorded" in caught.value.message


async def test_pending_order_is_paid_once_then_renewal_kind(
    session: AsyncSession, runtime: Runtime
) -> None:
    account = await create_account(session)
    plan = await get_plan(session, "personal-monthly")
    order = await billing_service.open_order(session, account, plan, PaymentMethod.crypto, "x")
    assert (order.status, order.amount_minor, order.currency) == (OrderStatus.pending, 699, "USD")
    assert order.paid_at is None
    assert await subscription_service.access_plan(session, account.id) is None
    # A renewal opened before the first is paid: kinds are decided when each is paid.
    later = await billing_service.open_order(session, account, plan, PaymentMethod.crypto, "x")

    paid = await billing_service.pay_order(
        session, runtime, later, "x-pay-1", 650, "USD", "fp-1", provider_subscription_id="xs-1"
    )
    assert paid.order is later
    assert (later.status, later.kind, later.amount_minor) == (OrderStatus.paid, "first", 650)
    assert later.paid_at is not None
    assert paid.payment.fingerprint == "fp-1"
    current = await subscription_service.current(session, account.id)
    assert current is not None
    assert (current.provider, current.provider_subscription_id) == ("x", "xs-1")
    end = current.current_period_end

    with pytest.raises(DuplicatePayment):
        await billing_service.pay_order(session, runtime, order, "x-pay-1", 699, "USD")
    assert order.status == OrderStatus.pending
    with pytest.raises(OrderNotPayable):
        await billing_service.pay_order(session, runtime, later, "x-pay-2", 699, "USD")

    renewal = await billing_service.pay_order(session, runtime, order, "x-pay-3", 699, "USD")
    assert renewal.order.kind == OrderKind.renewal
    assert current.current_period_end > end


async def test_failed_order_stays_failed_and_a_paid_one_never_fails(
    session: AsyncSession, runtime: Runtime
) -> None:
    account = await create_account(session)
    plan = await get_plan(session, "personal-monthly")
    order = await billing_service.open_order(session, account, plan, PaymentMethod.card, "x")
    await billing_service.fail_order(session, order, "expired")
    assert order.status == OrderStatus.failed
    # Money that arrives for it after all still counts.
    await billing_service.pay_order(session, runtime, order, "x-late", 699, "USD")
    assert order.status == OrderStatus.paid
    await billing_service.fail_order(session, order, "late failure")
    assert order.status == OrderStatus.paid


async def test_pay_order_checks_the_money(session: AsyncSession, runtime: Runtime) -> None:
    account = await create_account(session)
    plan = await get_plan(session, "personal-monthly")
    order = await billing_service.open_order(session, account, plan, PaymentMethod.card, "x")
    for amount, currency in [(0, "USD"), (699, "EUR"), (6.99, "USD")]:
        with pytest.raises(InvalidInput):
            await billing_service.pay_order(
                session,
                runtime,
                order,
                "x-bad",
                amount,  # type: ignore[arg-type]
                currency,
            )
    assert order.status == OrderStatus.pending
    account.status = AccountStatus.terminated
    with pytest.raises(AccountTerminated):
        await billing_service.open_order(session, account, plan, PaymentMethod.card, "x")
    with pytest.raises(AccountTerminated):
        await billing_service.pay_order(session, runtime, order, "x-term", 699, "USD")
    # A late payment event for an account its owner erased brings nothing back.
    account.status = AccountStatus.erased
    with pytest.raises(AccountTerminated, match="is erased"):
        await billing_service.pay_order(session, runtime, order, "x-erased", 699, "USD")
    assert order.status == OrderStatus.pending


async def test_bad_money_refused(session: AsyncSession, runtime: Runtime) -> None:
    account = await create_account(session)
    plan = await get_plan(session, "personal-monthly")
    for amount, currency in [(0, "USD"), (-5, "USD"), (699, "EUR")]:
        with pytest.raises(InvalidInput):
            await billing_service.record_payment(
                session,
                runtime,
                account,
                plan,
                amount,
                currency,
                PaymentMethod.card,
                "manual",
                f"bad-{amount}-{currency}",
            )
    floating: Any = 6.99
    with pytest.raises(InvalidInput):
        await billing_service.record_payment(
            session,
            runtime,
            account,
            plan,
            floating,
            "USD",
            PaymentMethod.card,
            "manual",
            "float",
        )


async def test_terminated_account_cannot_pay(session: AsyncSession, runtime: Runtime) -> None:
    account = await create_account(session, status=AccountStatus.terminated)
    with pytest.raises(AccountTerminated):
        await _pay(session, runtime, account, "ref-term")


async def test_billing_details_only_for_paid_accounts(
    session: AsyncSession, runtime: Runtime
) -> None:
    account = await create_account(session)
    data = BillingDetailsIn(country="nl", city="Utrecht", postal_code="3511", card_last4="4242")
    with pytest.raises(BillingDetailsNotNeeded):
        await billing_service.set_details(session, account.id, data)
    await _pay(session, runtime, account, "ref-details")
    stored = await billing_service.set_details(session, account.id, data)
    assert stored.country == "NL"
    assert stored.card_last4 == "4242"
    changed = await billing_service.set_details(
        session, account.id, BillingDetailsIn(country="DE", city="Berlin", postal_code="10115")
    )
    assert changed.id == stored.id
    assert changed.card_last4 is None


# --- webhooks -------------------------------------------------------------------------------


@pytest.fixture
def handled() -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    @webhook_handler("testpay")
    async def _handle(
        session: AsyncSession, runtime: Runtime, event: WebhookEvent, payload: dict[str, Any]
    ) -> None:
        if payload.get("explode"):
            raise RuntimeError("handler failed")
        seen.append(payload)

    yield seen
    WEBHOOK_HANDLERS.pop("testpay", None)


async def _events(runtime: Runtime) -> list[WebhookEvent]:
    async with unit_of_work(runtime.sessionmaker) as session:
        return list(await session.scalars(select(WebhookEvent).order_by(WebhookEvent.id)))


async def test_duplicate_delivery_changes_nothing(
    runtime: Runtime, handled: list[dict[str, Any]]
) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        assert await webhook_service.store(session, "testpay", "evt_1", "paid", {"n": 1})
    async with unit_of_work(runtime.sessionmaker) as session:
        assert not await webhook_service.store(session, "testpay", "evt_1", "paid", {"n": 2})
    assert await process_webhook_events(runtime) == 1
    async with unit_of_work(runtime.sessionmaker) as session:
        assert not await webhook_service.store(session, "testpay", "evt_1", "paid", {"n": 3})
    assert await process_webhook_events(runtime) == 0
    assert handled == [{"n": 1}]
    events = await _events(runtime)
    assert len(events) == 1
    assert events[0].processed_at is not None


async def test_stored_but_unhandled_event_is_handled_next_run(
    runtime: Runtime, handled: list[dict[str, Any]]
) -> None:
    # Stored, then the process "crashes" before handling: nothing but the row remains.
    async with unit_of_work(runtime.sessionmaker) as session:
        await webhook_service.store(session, "testpay", "evt_a", "paid", {"n": "a"})
        await webhook_service.store(session, "testpay", "evt_b", "paid", {"n": "b"})
    assert handled == []
    assert all(e.processed_at is None for e in await _events(runtime))
    assert await webhook_service.process_pending(runtime) == 2
    # The newest first: an event that just came is never stuck behind a backlog.
    assert handled == [{"n": "b"}, {"n": "a"}]


async def test_failing_handler_keeps_its_event_for_later(
    runtime: Runtime, handled: list[dict[str, Any]]
) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        await webhook_service.store(session, "testpay", "evt_x", "paid", {"explode": True})
        await webhook_service.store(session, "testpay", "evt_y", "paid", {"n": "y"})
        await webhook_service.store(session, "nobody", "evt_z", "paid", {})
    assert await webhook_service.process_pending(runtime) == 1
    assert handled == [{"n": "y"}]
    by_id = {e.event_id: e for e in await _events(runtime)}
    assert by_id["evt_x"].processed_at is None
    assert by_id["evt_x"].error == "RuntimeError: handler failed"
    assert by_id["evt_x"].failed_at is None
    assert by_id["evt_x"].next_attempt_at is not None
    # No retry can find a handler that does not exist: parked at once for a person.
    assert by_id["evt_z"].processed_at is None
    assert by_id["evt_z"].failed_at is not None
    assert "No handler" in (by_id["evt_z"].error or "")
    async with unit_of_work(runtime.sessionmaker) as session:
        count = await session.scalar(select(func.count()).select_from(WebhookEvent))
    assert count == 3


_STORE_THEN_HANG = """
import asyncio, sys
from burrow.control.billing.service import webhook
from burrow.control.db import create_engine, make_sessionmaker, unit_of_work

async def main() -> None:
    engine = create_engine(sys.argv[1])
    async with unit_of_work(make_sessionmaker(engine)) as session:
        await webhook.store(session, "testpay", "evt_killed", "paid", {"n": "killed"})
    print("stored", flush=True)
    await asyncio.sleep(120)  # where the handling would run; the process is killed first

asyncio.run(main())
"""


async def test_process_killed_after_storing_loses_nothing(
    runtime: Runtime, handled: list[dict[str, Any]]
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _STORE_THEN_HANG,
        runtime.settings.database_url,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        assert line.strip() == b"stored"
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
    assert process.returncode == -signal.SIGKILL
    assert handled == []
    assert await process_webhook_events(runtime) == 1
    assert handled == [{"n": "killed"}]
    [event] = await _events(runtime)
    assert event.processed_at is not None


async def test_an_operators_payment_and_retry_record_themselves(runtime: Runtime) -> None:
    """A manual payment and a parked event's retry write their own rows of the admin trail;
    an actor who is not an administrator is refused and the payment goes with the refusal."""
    async with unit_of_work(runtime.sessionmaker) as session:
        admin = await create_account(session, admin=True)
        customer = await create_account(session)
        recorded = await billing_service.record_manual_payment(
            session, runtime, admin, customer.id, "personal-monthly", 699, "USD",
            PaymentMethod.manual, "wire-1",
        )  # fmt: skip
        parked = WebhookEvent(
            provider="testpay", event_id="evt_parked", type="paid", payload="{}",
            attempts=5, failed_at=utcnow(),
        )  # fmt: skip
        session.add(parked)
        await session.flush()
        await webhook_service.retry(session, CliOperator("root"), parked.id)
        trail = {e.action.action: e for e in (await admin_audit.search(session)).items}
    payment = trail["payment.record_manual"]
    assert (payment.action.admin_id, payment.action.target_id) == (admin.id, str(customer.id))
    assert payment.detail["order_id"] == recorded.order.id
    assert payment.detail["reference"] == "wire-1"
    retry = trail["webhook_event.retry"]
    assert retry.action.target_id == str(parked.id)
    assert retry.detail == {"provider": "testpay", "type": "paid", "via": "cli", "operator": "root"}

    with pytest.raises(NotAnAdministrator):
        async with unit_of_work(runtime.sessionmaker) as session:
            await billing_service.record_manual_payment(
                session, runtime, customer, customer.id, "personal-monthly", 699, "USD",
                PaymentMethod.manual, "wire-2",
            )  # fmt: skip
    async with unit_of_work(runtime.sessionmaker) as session:
        orders = await billing_service.orders(session, customer.id)
        assert len(orders) == 1  # only the administrator's payment
