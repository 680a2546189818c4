"""Timed work of the accounts domain, for the scheduler: forget expired sessions and links."""

from __future__ import annotations

from burrow.control.accounts.service import account as account_service
from burrow.control.db import unit_of_work
from burrow.control.runtime import Runtime


async def purge_expired_sessions(runtime: Runtime) -> int:
    """Delete expired and idle sessions and stale links; returns how many rows went."""
    async with unit_of_work(runtime.sessionmaker) as session:
        return await account_service.purge_expired(session, runtime)
