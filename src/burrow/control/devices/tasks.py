"""Timed work for devices: forgetting the history of tunnel addresses past its retention.

A device itself changes only when its owner acts; what nodes serve follows subscriptions and
accounts, whose own tasks call ``desired_state_service``.
"""

from __future__ import annotations

from burrow.control.db import unit_of_work
from burrow.control.devices.service import device as device_service
from burrow.control.runtime import Runtime


async def purge_address_history(runtime: Runtime) -> int:
    """Delete the tunnel address history the policy no longer allows; returns how many rows."""
    async with unit_of_work(runtime.sessionmaker) as session:
        return await device_service.purge_address_history(session, runtime)
