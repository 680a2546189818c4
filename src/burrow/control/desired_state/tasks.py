"""Timed work for the desired state. (to be built)"""

from __future__ import annotations

from burrow.control.runtime import Runtime


async def prune_change_log(runtime: Runtime) -> int:
    return 0
