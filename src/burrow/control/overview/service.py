"""The admin overview: per-day series and figures over 7, 30 or 90 days, all aggregates.

Node load and throughput come from the nodes' latest live reports (RAM only): nothing keeps
them over time, so the overview shows the current figure and says so.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.errors import BurrowError
from burrow.control.models import utcnow
from burrow.control.nodes.service import node as node_service
from burrow.control.overview.repository import OverviewRepository
from burrow.control.overview.schemas import RANGES, DayCount, NodeNow, Overview, PlanCount
from burrow.control.runtime import Runtime


class UnknownRange(BurrowError):
    status = 422
    title = "Unknown range"
    type_slug = "overview-range"

    def __init__(self) -> None:
        super().__init__("Choose a range of 7, 30 or 90 days.")


def per_day(times: Iterable[datetime], start: date, days: int) -> list[DayCount]:
    counts = Counter(t.date() for t in times)
    return [
        DayCount(day=start + timedelta(days=i), count=counts.get(start + timedelta(days=i), 0))
        for i in range(days)
    ]


def monthly_minor(rows: Iterable[tuple[int, int, str]]) -> tuple[int, str | None]:
    """The monthly recurring revenue in minor units and its currency (the most common one)."""
    total = 0
    currencies: Counter[str] = Counter()
    for price, months, currency in rows:
        total += round(price / max(1, months))
        currencies[currency] += 1
    return total, (currencies.most_common(1)[0][0] if currencies else None)


async def build(
    session: AsyncSession, runtime: Runtime, days: int, now: datetime | None = None
) -> Overview:
    if days not in RANGES:
        raise UnknownRange()
    now = now or utcnow()
    first = now.date() - timedelta(days=days - 1)
    start = datetime.combine(first, time(), tzinfo=UTC)
    repo = OverviewRepository(session)
    mrr, currency = monthly_minor(await repo.paying_at(now))
    mrr_start, start_currency = monthly_minor(await repo.paying_at(start))
    paid = await repo.paid_orders(start, now)
    refunds = per_day(await repo.refund_requests(start, now), first, days)
    nodes = []
    for node in await node_service.list_all(session):
        health = await node_service.health(runtime, node)
        fresh = health.state == "online"
        load = None
        if fresh and health.connected_devices is not None and node.capacity:
            load = health.connected_devices / node.capacity
        nodes.append(
            NodeNow(
                name=node.name,
                state=health.state,
                connected_devices=health.connected_devices if fresh else None,
                capacity=node.capacity,
                load=load,
                throughput_bps=health.throughput_bps if fresh else None,
            )
        )
    requested = sum(d.count for d in refunds)
    return Overview(
        days=days,
        start=first,
        end=now.date(),
        signups=per_day(await repo.signups(start, now), first, days),
        trials_started=per_day(await repo.trials_started(start, now), first, days),
        first_payments=per_day(await repo.first_payments(start, now), first, days),
        cancellations=per_day(await repo.cancellations(start, now), first, days),
        refund_requests=refunds,
        devices_added=per_day(await repo.devices_added(start, now), first, days),
        active_by_plan=[PlanCount(plan=p, count=n) for p, n in await repo.active_by_plan(now)],
        devices_total=await repo.devices_total(),
        paid_orders=paid,
        refund_rate=(requested / paid) if paid else None,
        currency=currency or start_currency,
        mrr_minor=mrr,
        mrr_start_minor=mrr_start,
        nodes=nodes,
    )
