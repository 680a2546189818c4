"""Timed work for refunds: executing approved refunds that did not go out yet, and checking
queued requests against the rules again."""

from __future__ import annotations

from burrow.control.refunds.service import refund as refund_service
from burrow.control.runtime import Runtime


async def execute_approved_refunds(runtime: Runtime) -> int:
    """Retry approved refunds whose execution failed or was cut short."""
    return await refund_service.execute_approved(runtime)


async def recheck_queued_refunds(runtime: Runtime) -> int:
    """Refuse queued requests that a rule needing no person now refuses (an account
    terminated for a violation since it asked)."""
    return await refund_service.recheck_queued(runtime)
