"""All SQL of the usage counters."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.models import Order, RefundRequest, RefundStatus, UsageCounter


class UsageRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def usage_counter(self, account_id: int) -> UsageCounter | None:
        query = select(UsageCounter).where(UsageCounter.account_id == account_id)
        return await self.session.scalar(query)

    async def add_usage(
        self,
        account_id: int,
        *,
        order_id: int | None,
        bytes_total: int,
        sessions: int,
        now: datetime,
    ) -> None:
        """Add to the account's counter, making it on first use; ties it to ``order_id``.

        Two replicas making the same counter at once cannot happen with the in-RAM live
        store (one process owns the leases); a Redis store would need an upsert here.
        """
        counter = await self.usage_counter(account_id)
        if counter is None:
            counter = UsageCounter(
                account_id=account_id, bytes_total=0, sessions=0, created_at=now, updated_at=now
            )
            self.session.add(counter)
        if counter.order_id is None and order_id is not None:
            # The first order was paid: the counts so far (a trial) become its usage.
            counter.order_id = order_id
        counter.bytes_total += bytes_total
        counter.sessions += sessions
        counter.updated_at = now
        await self.session.flush()

    async def delete_all_usage_counters(self) -> int:
        result = await self.session.execute(delete(UsageCounter))
        return int(getattr(result, "rowcount", 0) or 0)

    async def unlinked_usage_counters(self) -> Sequence[UsageCounter]:
        """Counters not tied to a paid order yet (a trial, or a payment since the last look)."""
        query = select(UsageCounter).where(UsageCounter.order_id.is_(None))
        return (await self.session.scalars(query)).all()

    async def delete_usage_counter(self, counter_id: int) -> None:
        await self.session.execute(delete(UsageCounter).where(UsageCounter.id == counter_id))

    async def delete_usage_counters_ordered_before(self, before: datetime) -> int:
        """Delete counters whose order was paid before ``before``, unless a refund request of
        that order is still being decided."""
        ordered_at = func.coalesce(Order.paid_at, Order.created_at)
        expired = select(Order.id).where(ordered_at < before)
        pending = select(RefundRequest.order_id).where(
            RefundRequest.status.in_((RefundStatus.evaluating, RefundStatus.queued))
        )
        result = await self.session.execute(
            delete(UsageCounter).where(
                UsageCounter.order_id.in_(expired), UsageCounter.order_id.not_in(pending)
            )
        )
        return int(getattr(result, "rowcount", 0) or 0)
