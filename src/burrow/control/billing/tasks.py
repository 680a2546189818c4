"""Timed work for billing: handling stored webhook events that are not handled yet."""

from __future__ import annotations

# Imported for its handler registration: the scheduler's process handles Stripe events too.
from burrow.control.billing import stripe_events  # noqa: F401
from burrow.control.billing.service import webhook as webhook_service
from burrow.control.runtime import Runtime


async def process_webhook_events(runtime: Runtime) -> int:
    """Handle every stored event not handled yet (after a crash, or a failed handler)."""
    return await webhook_service.process_pending(runtime)
