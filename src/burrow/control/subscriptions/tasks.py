"""Timed work for subscriptions. (to be built)"""

from __future__ import annotations

from burrow.control.runtime import Runtime


async def expire_due_subscriptions(runtime: Runtime) -> int:
    return 0
