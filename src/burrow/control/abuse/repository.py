"""All SQL of the abuse desk: complaints, and the nodes that own an egress address."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.db import locked
from burrow.control.models import AbuseComplaint, ComplaintStatus, Node


class ComplaintRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_all(self, complaints: Sequence[AbuseComplaint]) -> None:
        self.session.add_all(complaints)
        await self.session.flush()

    async def get(self, complaint_id: int, *, lock: bool = False) -> AbuseComplaint | None:
        query = select(AbuseComplaint).where(AbuseComplaint.id == complaint_id)
        result = await self.session.execute(locked(query) if lock else query)
        return result.scalar_one_or_none()

    async def page(
        self, status: ComplaintStatus | None, limit: int, offset: int
    ) -> tuple[Sequence[AbuseComplaint], int]:
        query = select(AbuseComplaint)
        if status is not None:
            query = query.where(AbuseComplaint.status == status)
        total = (
            await self.session.execute(select(func.count()).select_from(query.subquery()))
        ).scalar_one()
        rows = await self.session.execute(
            query.order_by(AbuseComplaint.created_at.desc(), AbuseComplaint.id.desc())
            .limit(limit)
            .offset(offset)
        )
        return rows.scalars().all(), int(total)

    async def naming(self, account_id: int) -> Sequence[AbuseComplaint]:
        query = (
            select(AbuseComplaint)
            .where(AbuseComplaint.account_id == account_id)
            .order_by(AbuseComplaint.created_at, AbuseComplaint.id)
        )
        return (await self.session.execute(query)).scalars().all()

    async def nodes_with_egress(self, address: str) -> Sequence[Node]:
        query = (
            select(Node)
            .where(
                or_(
                    Node.egress_ipv4 == address,
                    Node.egress_ipv6 == address,
                    Node.egress_ipv4_extra.contains(address),
                )
            )
            .order_by(Node.id)
        )
        nodes = (await self.session.execute(query)).scalars().all()
        # ``contains`` matches 192.0.2.1 inside 192.0.2.10 too: keep whole addresses only.
        return [n for n in nodes if address in (*n.egress_ipv4_addresses, n.egress_ipv6)]

    async def flush(self) -> None:
        await self.session.flush()
