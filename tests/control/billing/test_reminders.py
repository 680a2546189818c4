"""Renewal reminders: one email per period for methods that do not renew by themselves.

The job runs against the real database and sends through the real SMTP test server; the
strict example policy renews card and PayPal, reminds 7 days ahead (its default).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from burrow.control.billing.tasks import send_renewal_reminders
from burrow.control.db import unit_of_work
from burrow.control.models import (
    Account,
    Order,
    OrderKind,
    OrderStatus,
    PaymentMethod,
    Subscription,
    SubscriptionStatus,
    utcnow,
)
from burrow.control.runtime import Runtime
from burrow.control.scheduler import Scheduler
from tests.support.factories import create_account, create_subscription, get_plan
from tests.support.smtp import Inbox, SmtpServer


async def _customer(
    runtime: Runtime,
    method: PaymentMethod,
    *,
    ends_in: timedelta = timedelta(days=3),
    status: SubscriptionStatus = SubscriptionStatus.active,
    cancelled: bool = False,
    paid_before: PaymentMethod | None = None,
) -> tuple[Account, Subscription]:
    """An account with a subscription ending in ``ends_in``, last paid by ``method``."""
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
        plan = await get_plan(session, "personal-monthly")
        now = utcnow()
        paid = [(paid_before, now - timedelta(days=40))] if paid_before else []
        for paid_with, at in [*paid, (method, now - timedelta(days=27))]:
            session.add(
                Order(
                    account_id=account.id,
                    plan_id=plan.id,
                    kind=OrderKind.first,
                    amount_minor=plan.price_minor,
                    currency=plan.currency,
                    payment_method=paid_with,
                    status=OrderStatus.paid,
                    period_months=1,
                    paid_at=at,
                    provider="manual",
                )
            )
        subscription = await create_subscription(
            session, account, status=status, period_end=now + ends_in
        )
        subscription.cancel_at_period_end = cancelled
        await session.flush()
        return account, subscription


async def _reminded_for(runtime: Runtime, subscription_id: int) -> datetime | None:
    async with unit_of_work(runtime.sessionmaker) as session:
        found = await session.get(Subscription, subscription_id)
        assert found is not None
        return found.reminder_sent_for


async def test_crypto_period_gets_one_reminder_saying_when_and_how(
    runtime: Runtime, smtp: SmtpServer
) -> None:
    account, subscription = await _customer(runtime, PaymentMethod.crypto)

    assert await send_renewal_reminders(runtime) == 1

    [message] = smtp.inbox.wait_for(account.email)
    body = Inbox.body(message)
    end = subscription.current_period_end
    assert end.date().isoformat() in str(message["Subject"])
    assert end.strftime("%Y-%m-%d %H:%M UTC") in body
    assert "in 2 days" in body  # three days less the moments the test took
    assert "http://testserver/billing" in body
    assert "cryptocurrency" in body
    assert await _reminded_for(runtime, subscription.id) == end

    # Once per period: later runs send nothing more.
    assert await send_renewal_reminders(runtime) == 0
    assert await send_renewal_reminders(runtime) == 0
    assert len(smtp.inbox.to(account.email)) == 1


async def test_a_new_period_gets_its_own_reminder(runtime: Runtime, smtp: SmtpServer) -> None:
    account, subscription = await _customer(runtime, PaymentMethod.manual)
    assert await send_renewal_reminders(runtime) == 1
    smtp.inbox.wait_for(account.email)

    # Paid again (by hand) late: the new period also ends within the reminder window.
    async with unit_of_work(runtime.sessionmaker) as session:
        found = await session.get(Subscription, subscription.id)
        assert found is not None
        found.current_period_end = found.current_period_end + timedelta(days=2)
        new_end = found.current_period_end

    assert await send_renewal_reminders(runtime) == 1
    assert len(smtp.inbox.wait_for(account.email, count=2)) == 2
    assert await _reminded_for(runtime, subscription.id) == new_end


async def test_no_reminder_for_recurring_cancelled_far_or_ended(
    runtime: Runtime, smtp: SmtpServer
) -> None:
    card, _ = await _customer(runtime, PaymentMethod.card)
    paypal, _ = await _customer(runtime, PaymentMethod.paypal)
    cancelled, _ = await _customer(runtime, PaymentMethod.crypto, cancelled=True)
    far, _ = await _customer(runtime, PaymentMethod.crypto, ends_in=timedelta(days=8))
    over, _ = await _customer(runtime, PaymentMethod.crypto, ends_in=timedelta(minutes=-5))
    past_due, _ = await _customer(runtime, PaymentMethod.crypto, status=SubscriptionStatus.past_due)
    # Crypto once, then a card: the last paid order decides, and a card renews by itself.
    switched, _ = await _customer(runtime, PaymentMethod.card, paid_before=PaymentMethod.crypto)
    # The other way round: the card paid before, this period came by crypto.
    to_crypto, _ = await _customer(runtime, PaymentMethod.crypto, paid_before=PaymentMethod.card)
    edge, _ = await _customer(runtime, PaymentMethod.crypto, ends_in=timedelta(days=6, hours=23))

    assert await send_renewal_reminders(runtime) == 2
    smtp.inbox.wait_for(edge.email)
    smtp.inbox.wait_for(to_crypto.email)
    for silent in (card, paypal, cancelled, far, over, past_due, switched):
        assert smtp.inbox.to(silent.email) == [], silent.email


async def test_an_account_without_a_paid_order_gets_no_reminder(
    runtime: Runtime, smtp: SmtpServer
) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
        await create_subscription(session, account, period_end=utcnow() + timedelta(days=2))

    assert await send_renewal_reminders(runtime) == 0
    assert smtp.inbox.to(account.email) == []


async def test_the_job_works_in_batches_until_none_are_due(
    runtime: Runtime, smtp: SmtpServer
) -> None:
    accounts = [(await _customer(runtime, PaymentMethod.crypto))[0] for _ in range(5)]

    assert await send_renewal_reminders(runtime, batch_size=2) == 5
    for account in accounts:
        assert len(smtp.inbox.wait_for(account.email)) == 1
    assert await send_renewal_reminders(runtime, batch_size=2) == 0


async def test_the_scheduler_sends_them(runtime: Runtime, smtp: SmtpServer) -> None:
    account, _ = await _customer(runtime, PaymentMethod.crypto)
    await Scheduler(runtime).run_once()
    assert len(smtp.inbox.wait_for(account.email)) == 1
