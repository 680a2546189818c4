"""Plans: mirrored from the policy file at start. (to be built)"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.policy.schemas import Policy


class PlanService:
    async def sync_from_policy(self, session: AsyncSession, policy: Policy) -> None:
        return None


plan = PlanService()
