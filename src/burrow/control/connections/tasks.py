"""Timed work for connections: ending lapsed leases and purging records past their retention."""

from __future__ import annotations

from burrow.control.connections.service import connection as connection_service
from burrow.control.db import unit_of_work
from burrow.control.runtime import Runtime


async def end_lapsed_leases(runtime: Runtime) -> int:
    """End leases whose nodes stopped renewing them; returns how many ended."""
    async with unit_of_work(runtime.sessionmaker) as session:
        return await connection_service.end_lapsed_leases(session, runtime)


async def purge_connection_records(runtime: Runtime) -> int:
    """Delete connection records older than the policy's retention; returns how many."""
    async with unit_of_work(runtime.sessionmaker) as session:
        return await connection_service.purge_records(session, runtime)
