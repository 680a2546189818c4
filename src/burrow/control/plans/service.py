"""Plans: mirrored from the policy file's ``[plans]`` at every start.

The policy is the source of truth; the table exists so that subscriptions can point at a plan
row. A plan that leaves the policy is retired (``retired_at``), never deleted, so existing
subscriptions keep loading; a plan that comes back is offered again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.errors import Conflict, InvalidInput
from burrow.control.models import Plan, PlanKind, utcnow
from burrow.control.plans.repository import PlanRepository
from burrow.control.policy.schemas import PlanSection, Policy

log = logging.getLogger(__name__)


class UnknownPlan(InvalidInput):
    title = "Unknown plan"
    type_slug = "unknown-plan"

    def __init__(self, code: str) -> None:
        super().__init__(
            f"There is no plan with the code '{code}'. "
            "The codes are listed by GET /api/v1/admin/plans.",
            field="plan_code",
        )


class PlanRetired(Conflict):
    title = "Plan retired"
    type_slug = "plan-retired"

    def __init__(self, code: str) -> None:
        super().__init__(
            f"The plan '{code}' has been retired from the policy file and cannot start new "
            "periods. Choose a plan listed by GET /api/v1/plans, or put the plan back into "
            "the policy file and restart.",
            field="plan_code",
        )


@dataclass
class PlanSyncResult:
    """Plan codes touched by one sync, for the start-up log and for tests."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.retired or self.restored)


def _fields_of(section: PlanSection) -> dict[str, Any]:
    return {
        "name": section.name,
        "kind": PlanKind(section.kind),
        "price_minor": section.price_minor,
        "currency": section.currency,
        "period_months": section.period_months,
        "device_limit": section.device_limit,
        "connection_limit": section.simultaneous_connections,
    }


class PlanService:
    async def sync_from_policy(self, session: AsyncSession, policy: Policy) -> PlanSyncResult:
        """Make the plans table say what the policy says; retire what it no longer names."""
        repository = PlanRepository(session)
        result = PlanSyncResult()
        now = utcnow()
        existing = {plan.code: plan for plan in await repository.list_all()}
        for code, section in policy.plans.items():
            wanted = _fields_of(section)
            plan = existing.get(code)
            if plan is None:
                await repository.add(Plan(code=code, **wanted))
                result.added.append(code)
                continue
            if plan.retired_at is not None:
                plan.retired_at = None
                result.restored.append(code)
            changed = [name for name, value in wanted.items() if getattr(plan, name) != value]
            for name in changed:
                setattr(plan, name, wanted[name])
            if changed:
                result.updated.append(code)
        for code, plan in existing.items():
            if code not in policy.plans and plan.retired_at is None:
                plan.retired_at = now
                result.retired.append(code)
        await session.flush()
        if result.changed:
            log.info(
                "plans synced from the policy: added %s, updated %s, retired %s, restored %s",
                result.added or "none",
                result.updated or "none",
                result.retired or "none",
                result.restored or "none",
            )
        return result

    async def list_active(self, session: AsyncSession) -> Sequence[Plan]:
        """The plans on offer now."""
        return await PlanRepository(session).list_active()

    async def list_all(self, session: AsyncSession) -> Sequence[Plan]:
        """Every plan ever mirrored, retired ones included."""
        return await PlanRepository(session).list_all()

    async def get(self, session: AsyncSession, plan_id: int) -> Plan | None:
        return await PlanRepository(session).get(plan_id)

    async def get_by_code(self, session: AsyncSession, code: str) -> Plan | None:
        return await PlanRepository(session).get_by_code(code)

    async def get_offered(self, session: AsyncSession, code: str) -> Plan:
        """A plan that may start a new period: it exists and is not retired."""
        plan = await PlanRepository(session).get_by_code(code)
        if plan is None:
            raise UnknownPlan(code)
        if plan.retired_at is not None:
            raise PlanRetired(code)
        return plan


plan = PlanService()
