"""Renewal reminders: a period paid by a method that does not renew by itself (crypto, a
manual transfer) ends unless the customer pays again, so they get one email before it does.

The policy's ``payment_methods.recurring`` names the methods that renew through their provider;
``payment_methods.renewal_reminder_days`` says how early the reminder goes out. Each
subscription records the period end it was reminded of, so one period gets one email however
often the job runs, and a paid renewal (a new period end) gets its own.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.billing.repository import BillingRepository
from burrow.control.db import after_commit
from burrow.control.models import PaymentMethod, Subscription, utcnow
from burrow.control.runtime import Runtime

log = logging.getLogger(__name__)

BILLING_PATH = "/billing"

# How each method is named to the customer.
_METHOD_NAMES = {
    PaymentMethod.card: "card",
    PaymentMethod.paypal: "PayPal",
    PaymentMethod.crypto: "cryptocurrency",
    PaymentMethod.paymentwall: "PaymentWall",
    PaymentMethod.app_store: "the App Store",
    PaymentMethod.google_play: "Google Play",
    PaymentMethod.manual: "a manual payment",
}


def _moment(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC")


def reminder_text(
    runtime: Runtime, subscription: Subscription, method: PaymentMethod, now: datetime
) -> tuple[str, str]:
    """The subject and body of the reminder for one subscription."""
    provider = runtime.policy.provider.name
    end = subscription.current_period_end
    days = max(0, (end - now).days)
    when = "in less than a day" if days == 0 else f"in {days} day" + ("s" if days != 1 else "")
    link = runtime.settings.public_link(BILLING_PATH)
    subject = f"Your {provider} access ends on {end.date().isoformat()}"
    body = (
        f"Hello,\n\nyour {provider} subscription was paid by {_METHOD_NAMES[method]}, which "
        "does not renew by itself.\n\n"
        f"Your access ends on {_moment(end)} ({when}) unless you pay for the next period.\n\n"
        f"To renew, open {link} and choose a payment method.\n\n"
        "If you do not want to renew, there is nothing to do: access simply ends then.\n"
    )
    return subject, body


class RenewalReminderService:
    async def send_due(
        self,
        session: AsyncSession,
        runtime: Runtime,
        *,
        now: datetime | None = None,
        limit: int = 100,
    ) -> int:
        """Queue one reminder for each subscription that needs one now; returns how many.

        The emails go out after the surrounding unit of work commits, so a rollback sends
        nothing and leaves the subscriptions to be reminded on the next run.
        """
        now = now or utcnow()
        methods = runtime.policy.payment_methods
        until = now + timedelta(days=methods.renewal_reminder_days)
        recurring = [PaymentMethod(m) for m in methods.recurring]
        due = await BillingRepository(session).reminder_due(now, until, recurring, limit)
        for subscription, email, method in due:
            subject, body = reminder_text(runtime, subscription, method, now)
            subscription.reminder_sent_for = subscription.current_period_end
            after_commit(session, partial(runtime.mailer.send, email, subject, body))
            log.info(
                "renewal reminder queued for subscription %s (paid by %s)", subscription.id, method
            )
        await session.flush()
        return len(due)


renewal_reminder = RenewalReminderService()
