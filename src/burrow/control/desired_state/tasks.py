"""Timed work for the desired state: pruning the change log."""

from __future__ import annotations

from burrow.control.db import unit_of_work
from burrow.control.desired_state.service import desired_state as desired_state_service
from burrow.control.runtime import Runtime


async def prune_change_log(runtime: Runtime) -> int:
    """Keep the newest ``change_log_keep`` revisions; returns how many rows were deleted."""
    async with unit_of_work(runtime.sessionmaker) as session:
        return await desired_state_service.prune_change_log(session, runtime)
