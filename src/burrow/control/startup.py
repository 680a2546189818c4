"""What a control-plane process does once at start, after migrations and before serving."""

from __future__ import annotations

from burrow.control.db import unit_of_work
from burrow.control.plans.service import plan as plan_service
from burrow.control.runtime import Runtime
from burrow.control.terms.service import terms as terms_service


async def prepare(runtime: Runtime) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        await plan_service.sync_from_policy(session, runtime.policy)
        await terms_service.publish(session, runtime.policy)
