"""All SQL of the admin overview: counts and sums over all customers, read only.

Per-day series are read as bare timestamps (no account, no id) and bucketed by the service,
so the grouping is the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from burrow.control.models import (
    Account,
    Device,
    Order,
    OrderKind,
    OrderStatus,
    Plan,
    RefundRequest,
    Subscription,
    SubscriptionStatus,
    TrialClaim,
)

LIVE = (SubscriptionStatus.trialing, SubscriptionStatus.active, SubscriptionStatus.past_due)


class OverviewRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _times(
        self,
        column: InstrumentedAttribute[datetime] | InstrumentedAttribute[datetime | None],
        start: datetime,
        end: datetime,
        *where: object,
    ) -> Sequence[datetime]:
        query = select(column).where(column >= start, column < end, *where)  # type: ignore[arg-type]
        return list((await self.session.execute(query)).scalars())  # type: ignore[arg-type]

    async def signups(self, start: datetime, end: datetime) -> Sequence[datetime]:
        return await self._times(Account.created_at, start, end)

    async def trials_started(self, start: datetime, end: datetime) -> Sequence[datetime]:
        return await self._times(TrialClaim.created_at, start, end)

    async def first_payments(self, start: datetime, end: datetime) -> Sequence[datetime]:
        return await self._times(
            Order.paid_at,
            start,
            end,
            Order.kind == OrderKind.first,
            Order.status != OrderStatus.pending,
        )

    async def paid_orders(self, start: datetime, end: datetime) -> int:
        query = select(func.count()).where(
            Order.paid_at >= start, Order.paid_at < end, Order.paid_at.is_not(None)
        )
        return int((await self.session.execute(query)).scalar_one())

    async def cancellations(self, start: datetime, end: datetime) -> Sequence[datetime]:
        return await self._times(Subscription.canceled_at, start, end)

    async def refund_requests(self, start: datetime, end: datetime) -> Sequence[datetime]:
        return await self._times(RefundRequest.requested_at, start, end)

    async def devices_added(self, start: datetime, end: datetime) -> Sequence[datetime]:
        return await self._times(Device.created_at, start, end)

    async def devices_total(self) -> int:
        return int((await self.session.execute(select(func.count(Device.id)))).scalar_one())

    async def active_by_plan(self, now: datetime) -> list[tuple[str, int]]:
        query = (
            select(Plan.name, func.count(Subscription.id))
            .select_from(Subscription)
            .join(Plan, Plan.id == Subscription.plan_id)
            .where(Subscription.status.in_(LIVE), Subscription.current_period_end > now)
            .group_by(Plan.name)
            .order_by(Plan.name)
        )
        return [(name, int(n)) for name, n in (await self.session.execute(query)).all()]

    async def paying_at(self, moment: datetime) -> list[tuple[int, int, str]]:
        """(price, months, currency) of every subscription that was not a trial, had begun by
        ``moment`` and had not ended then."""
        query = (
            select(Plan.price_minor, Plan.period_months, Plan.currency)
            .select_from(Subscription)
            .join(Plan, Plan.id == Subscription.plan_id)
            .where(
                Subscription.created_at <= moment,
                or_(Subscription.ended_at.is_(None), Subscription.ended_at > moment),
                Subscription.status != SubscriptionStatus.trialing,
            )
        )
        return [(int(p), int(m), c) for p, m, c in (await self.session.execute(query)).all()]
