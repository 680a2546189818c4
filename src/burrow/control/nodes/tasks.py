"""Timed work for nodes: forgetting enrollment tokens that expired unused."""

from __future__ import annotations

from burrow.control.db import unit_of_work
from burrow.control.nodes.service import node as node_service
from burrow.control.runtime import Runtime


async def void_expired_enrollments(runtime: Runtime) -> int:
    """Clear the hashes of expired enrollment tokens; returns how many nodes had one."""
    async with unit_of_work(runtime.sessionmaker) as session:
        return await node_service.void_expired_enrollments(session)
