"""Timed work of the usage counters: deleting those past their order's refund window."""

from __future__ import annotations

from burrow.control.db import unit_of_work
from burrow.control.refunds.usage.service import usage as usage_service
from burrow.control.runtime import Runtime


async def expire_usage_counters(runtime: Runtime) -> int:
    """Delete first-order usage counters past their order's refund window; returns how many."""
    async with unit_of_work(runtime.sessionmaker) as session:
        return await usage_service.expire(session, runtime)
