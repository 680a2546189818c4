"""Timed work for billing: handling stored webhook events, and renewal reminders."""

from __future__ import annotations

import logging

# Imported for their handler registrations: the scheduler's process handles Stripe and
# CoinGate and PayPal events too.
from burrow.control.billing import coingate, paypal, stripe_events  # noqa: F401
from burrow.control.billing.reminders import renewal_reminder
from burrow.control.billing.service import webhook as webhook_service
from burrow.control.db import unit_of_work
from burrow.control.models import utcnow
from burrow.control.runtime import Runtime

log = logging.getLogger(__name__)

# Reminders per transaction; the job goes on in batches until none are due.
REMINDER_BATCH = 100
# A bound on one run, so that a mail server slower than the backlog cannot hold the scheduler.
REMINDER_MAX_BATCHES = 50


async def process_webhook_events(runtime: Runtime) -> int:
    """Handle every stored event not handled yet (after a crash, or a failed handler)."""
    return await webhook_service.process_pending(runtime)


async def reduce_handled_webhook_events(runtime: Runtime) -> int:
    """Handled provider events past the policy's retention keep only their id and type."""
    return await webhook_service.reduce_handled(runtime)


async def send_renewal_reminders(runtime: Runtime, *, batch_size: int = REMINDER_BATCH) -> int:
    """Email each customer whose non-recurring period ends soon, once per period."""
    now = utcnow()
    total = 0
    for _ in range(REMINDER_MAX_BATCHES):
        async with unit_of_work(runtime.sessionmaker) as session:
            count = await renewal_reminder.send_due(session, runtime, now=now, limit=batch_size)
        total += count
        if count < batch_size:
            break
    if total:
        log.info("sent %d renewal reminders", total)
    return total
