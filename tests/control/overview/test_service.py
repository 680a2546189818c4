"""The admin overview's figures for a seeded month of activity equal counts computed here,
independently, from every row in the database."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.models import (
    Account,
    Device,
    Order,
    OrderKind,
    Plan,
    RefundRequest,
    RefundStatus,
    Subscription,
    SubscriptionStatus,
    TrialClaim,
    utcnow,
)
from burrow.control.overview import service as overview_service
from burrow.control.runtime import Runtime
from tests.support.factories import (
    create_account,
    create_device,
    create_order,
    create_subscription,
)

PLANS = ("personal-monthly", "personal-yearly", "business-monthly")


async def _seed_month(session: AsyncSession, now: datetime) -> None:
    rng = random.Random(14)
    for n in range(60):
        at = now - timedelta(days=rng.randrange(0, 35), hours=rng.randrange(0, 24))
        account = await create_account(session)
        account.created_at = at
        if n % 3 == 0:
            session.add(TrialClaim(email_digest=f"{n:064x}", created_at=at))
        if n % 2 == 0:
            sub = await create_subscription(session, account, plan_code=PLANS[n % 3])
            sub.created_at = sub.current_period_start = at
            if n % 8 == 0:
                sub.status = SubscriptionStatus.canceled
                sub.canceled_at = at + timedelta(days=2)
                sub.ended_at = at + timedelta(days=2)
            order = await create_order(session, account, plan_code=PLANS[n % 3])
            order.paid_at = at
            if n % 6 == 0:
                session.add(
                    RefundRequest(
                        order_id=order.id,
                        account_id=account.id,
                        terms_version="2026-11",
                        status=RefundStatus.queued,
                        requested_at=at + timedelta(hours=1),
                    )
                )
        if n % 5 == 0:
            sub = await create_subscription(
                session, account, plan_code="personal-monthly", status=SubscriptionStatus.trialing
            )
            sub.created_at = at
        for _ in range(n % 3):
            device = await create_device(session, account)
            device.created_at = at
    await session.flush()


def _per_day(times: list[datetime | None], first: date, days: int) -> list[int]:
    kept = Counter(t.astimezone(UTC).date() for t in times if t is not None)
    return [kept[first + timedelta(days=i)] for i in range(days)]


@pytest.mark.parametrize("days", [7, 30, 90])
async def test_figures_equal_independent_counts(
    session: AsyncSession, runtime: Runtime, days: int
) -> None:
    now = utcnow()
    await _seed_month(session, now)
    got = await overview_service.build(session, runtime, days, now)

    first = now.date() - timedelta(days=days - 1)
    start = datetime.combine(first, time(), tzinfo=UTC)

    async def column(col: object) -> list[datetime | None]:
        rows = (await session.execute(select(col))).scalars().all()  # type: ignore[call-overload]
        return [r for r in rows if r is not None and start <= r < now]

    assert [d.count for d in got.signups] == _per_day(await column(Account.created_at), first, days)
    assert [d.count for d in got.trials_started] == _per_day(
        await column(TrialClaim.created_at), first, days
    )
    orders = (await session.execute(select(Order))).scalars().all()
    firsts = [o.paid_at for o in orders if o.kind == OrderKind.first and o.paid_at]
    assert [d.count for d in got.first_payments] == _per_day(
        [t for t in firsts if start <= t < now], first, days
    )
    assert [d.count for d in got.cancellations] == _per_day(
        await column(Subscription.canceled_at), first, days
    )
    refunds = await column(RefundRequest.requested_at)
    assert [d.count for d in got.refund_requests] == _per_day(refunds, first, days)
    assert [d.count for d in got.devices_added] == _per_day(
        await column(Device.created_at), first, days
    )
    assert got.devices_total == len((await session.execute(select(Device.id))).all())
    paid = [o for o in orders if o.paid_at and start <= o.paid_at < now]
    assert got.paid_orders == len(paid)
    assert got.refund_rate == (len(refunds) / len(paid) if paid else None)
    assert sum(d.count for d in got.signups) > 0 or days == 7

    plans = {p.id: p for p in (await session.execute(select(Plan))).scalars()}
    subs = (await session.execute(select(Subscription))).scalars().all()
    live = Counter(
        plans[s.plan_id].name
        for s in subs
        if s.status
        in (SubscriptionStatus.trialing, SubscriptionStatus.active, SubscriptionStatus.past_due)
        and s.current_period_end > now
    )
    assert {p.plan: p.count for p in got.active_by_plan} == dict(live)

    def mrr(moment: datetime) -> int:
        return sum(
            round(plans[s.plan_id].price_minor / plans[s.plan_id].period_months)
            for s in subs
            if s.status != SubscriptionStatus.trialing
            and s.created_at <= moment
            and (s.ended_at is None or s.ended_at > moment)
        )

    assert got.mrr_minor == mrr(now)
    assert got.mrr_start_minor == mrr(start)
    assert got.mrr_minor > 0


async def test_an_unknown_range_is_refused(session: AsyncSession, runtime: Runtime) -> None:
    with pytest.raises(overview_service.UnknownRange):
        await overview_service.build(session, runtime, 12)
