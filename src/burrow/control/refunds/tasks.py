"""Timed work for refunds: executing approved refunds that did not go out yet."""

from __future__ import annotations

from burrow.control.refunds.service import refund as refund_service
from burrow.control.runtime import Runtime


async def execute_approved_refunds(runtime: Runtime) -> int:
    """Retry approved refunds whose execution failed or was cut short."""
    return await refund_service.execute_approved(runtime)
