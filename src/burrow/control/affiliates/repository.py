"""SQL of the affiliate program: affiliates, referrals, commissions, payout batches."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.db import locked
from burrow.control.models import (
    Account,
    Affiliate,
    AffiliateStatus,
    Commission,
    CommissionStatus,
    Order,
    OrderStatus,
    Payment,
    PayoutBatch,
    PayoutBatchStatus,
    PayoutItem,
    Referral,
)


class AffiliateRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, row: object) -> None:
        self.session.add(row)
        await self.session.flush()

    # --- affiliates and referrals ------------------------------------------------------------

    async def get(self, affiliate_id: int) -> Affiliate | None:
        return await self.session.get(Affiliate, affiliate_id)

    async def of_account(self, account_id: int) -> Affiliate | None:
        query = select(Affiliate).where(Affiliate.account_id == account_id)
        return await self.session.scalar(query)

    async def by_code(self, code: str) -> Affiliate | None:
        return await self.session.scalar(select(Affiliate).where(Affiliate.code == code))

    async def get_account(self, account_id: int) -> Account | None:
        return await self.session.get(Account, account_id)

    async def listed(self, statuses: Sequence[AffiliateStatus] | None = None) -> list[Affiliate]:
        query = select(Affiliate).order_by(Affiliate.id)
        if statuses is not None:
            query = query.where(Affiliate.status.in_(list(statuses)))
        return list((await self.session.scalars(query)).all())

    async def count_click(self, code: str) -> bool:
        """One more click on an approved affiliate's link (an atomic increment)."""
        result = await self.session.execute(
            update(Affiliate)
            .where(Affiliate.code == code, Affiliate.status == AffiliateStatus.approved)
            .values(clicks=Affiliate.clicks + 1)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0) == 1

    async def referral_of(self, account_id: int) -> Referral | None:
        return await self.session.scalar(select(Referral).where(Referral.account_id == account_id))

    async def referrals_count(self, affiliate_id: int) -> int:
        query = select(func.count()).where(Referral.affiliate_id == affiliate_id)
        return int(await self.session.scalar(query.select_from(Referral)) or 0)

    async def referred_orders(self, affiliate_id: int) -> list[Order]:
        """Paid (and later refunded) orders of the accounts the affiliate referred."""
        query = (
            select(Order)
            .join(Referral, Referral.account_id == Order.account_id)
            .where(
                Referral.affiliate_id == affiliate_id,
                Order.status.in_(
                    [OrderStatus.paid, OrderStatus.refunded, OrderStatus.partially_refunded]
                ),
            )
            .order_by(Order.id)
        )
        return list((await self.session.scalars(query)).all())

    async def first_paid_at(self, account_id: int) -> datetime | None:
        query = select(func.min(Order.paid_at)).where(
            Order.account_id == account_id, Order.paid_at.is_not(None)
        )
        found: datetime | None = await self.session.scalar(query)
        return found

    async def fingerprints_of_account(self, account_id: int) -> set[str]:
        query = (
            select(Payment.fingerprint)
            .join(Order, Order.id == Payment.order_id)
            .where(Order.account_id == account_id, Payment.fingerprint.is_not(None))
        )
        return {f for f in (await self.session.scalars(query)).all() if f}

    # --- commissions -------------------------------------------------------------------------

    async def earned_on(self, order_id: int) -> Commission | None:
        query = select(Commission).where(Commission.earned_order_id == order_id)
        return await self.session.scalar(locked(query))

    async def commissions_of(self, affiliate_id: int) -> list[Commission]:
        query = (
            select(Commission)
            .where(Commission.affiliate_id == affiliate_id)
            .order_by(Commission.id)
        )
        return list((await self.session.scalars(query)).all())

    async def by_status(self, status: CommissionStatus, *, limit: int = 500) -> list[Commission]:
        query = select(Commission).where(Commission.status == status).order_by(Commission.id)
        return list((await self.session.scalars(query.limit(limit))).all())

    async def release_due(self, now: datetime) -> int:
        """Pending commissions past their holding period become payable."""
        result = await self.session.execute(
            update(Commission)
            .where(Commission.status == CommissionStatus.pending, Commission.available_at <= now)
            .values(status=CommissionStatus.payable)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def payable_locked(self) -> list[Commission]:
        """Every payable commission of an approved affiliate, locked against a second payout
        made at the same time."""
        query = (
            select(Commission)
            .join(Affiliate, Affiliate.id == Commission.affiliate_id)
            .where(
                Commission.status == CommissionStatus.payable,
                Affiliate.status.in_([AffiliateStatus.approved, AffiliateStatus.terminated]),
            )
            .order_by(Commission.id)
        )
        return list((await self.session.scalars(locked(query))).all())

    async def commissions_in_item(self, item_id: int) -> list[Commission]:
        query = select(Commission).where(Commission.payout_item_id == item_id)
        return list((await self.session.scalars(query)).all())

    # --- payouts -----------------------------------------------------------------------------

    async def batch(self, batch_id: int) -> PayoutBatch | None:
        return await self.session.get(PayoutBatch, batch_id)

    async def batch_locked(self, batch_id: int) -> PayoutBatch | None:
        query = select(PayoutBatch).where(PayoutBatch.id == batch_id)
        found = await self.session.scalar(locked(query))
        if found is not None:
            await self.session.refresh(found)
        return found

    async def batches(self, *, limit: int = 100) -> list[PayoutBatch]:
        query = select(PayoutBatch).order_by(PayoutBatch.id.desc()).limit(limit)
        return list((await self.session.scalars(query)).all())

    async def unfinished_batches(self) -> list[int]:
        query = select(PayoutBatch.id).where(
            PayoutBatch.status.in_([PayoutBatchStatus.created, PayoutBatchStatus.pending])
        )
        return list((await self.session.scalars(query)).all())

    async def item_by_sender_id(self, sender_item_id: str) -> PayoutItem | None:
        query = select(PayoutItem).where(PayoutItem.sender_item_id == sender_item_id)
        return await self.session.scalar(query)

    async def items_of(self, batch_id: int) -> list[PayoutItem]:
        query = select(PayoutItem).where(PayoutItem.batch_id == batch_id).order_by(PayoutItem.id)
        return list((await self.session.scalars(query)).all())

    async def items_of_affiliate(self, affiliate_id: int) -> list[PayoutItem]:
        query = (
            select(PayoutItem)
            .where(PayoutItem.affiliate_id == affiliate_id)
            .order_by(PayoutItem.id)
        )
        return list((await self.session.scalars(query)).all())
