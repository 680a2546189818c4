"""Timed work for subscriptions: ending those whose period is over."""

from __future__ import annotations

import logging

from burrow.control.db import unit_of_work
from burrow.control.models import utcnow
from burrow.control.runtime import Runtime
from burrow.control.subscriptions.service import subscription as subscription_service

log = logging.getLogger(__name__)

# One transaction per batch: each batch holds the desired-state writer lock while it refreshes
# its accounts, so a large backlog must not hold it (or grow one session) for long.
BATCH_SIZE = 100


async def expire_due_subscriptions(runtime: Runtime, *, batch_size: int = BATCH_SIZE) -> int:
    """Expire (or, when cancelled, cancel) every subscription whose period has ended.

    Returns how many were ended.
    """
    now = utcnow()
    total = 0
    while True:
        async with unit_of_work(runtime.sessionmaker) as session:
            count = await subscription_service.expire_due(
                session, runtime, now=now, limit=batch_size
            )
        total += count
        if count < batch_size:
            break
    if total:
        log.info("ended %d subscriptions whose period was over", total)
    return total
