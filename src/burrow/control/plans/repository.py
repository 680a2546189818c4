"""SQL for plans. Plans are few (one row per policy code, retired ones included)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.models import Plan

# Cheapest first within a kind and a period: the order a price list reads in.
_ORDER = (Plan.kind, Plan.period_months, Plan.price_minor, Plan.code)


class PlanRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def list_all(self) -> Sequence[Plan]:
        return (await self.session.scalars(select(Plan).order_by(*_ORDER))).all()

    async def list_active(self) -> Sequence[Plan]:
        query = select(Plan).where(Plan.retired_at.is_(None)).order_by(*_ORDER)
        return (await self.session.scalars(query)).all()

    async def get(self, plan_id: int) -> Plan | None:
        return await self.session.get(Plan, plan_id)

    async def get_by_code(self, code: str) -> Plan | None:
        return await self.session.scalar(select(Plan).where(Plan.code == code))

    async def add(self, plan: Plan) -> Plan:
        self.session.add(plan)
        await self.session.flush()
        return plan
