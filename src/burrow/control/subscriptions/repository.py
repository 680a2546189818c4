"""SQL for subscriptions and trial claims. Reads of one account's rows go through ``_of``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.models import Account, Subscription, SubscriptionStatus, TrialClaim

# Not ended yet: the states a subscription can still leave on its own.
OPEN_STATUSES = frozenset(
    {SubscriptionStatus.trialing, SubscriptionStatus.active, SubscriptionStatus.past_due}
)


class SubscriptionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @staticmethod
    def _of(account_id: int) -> Select[Subscription]:
        """The one place that scopes subscriptions to an account."""
        return select(Subscription).where(Subscription.account_id == account_id)

    async def current(self, account_id: int) -> Subscription | None:
        """The newest subscription of the account that has not ended."""
        query = (
            self._of(account_id)
            .where(Subscription.status.in_(OPEN_STATUSES))
            .order_by(Subscription.id.desc())
            .limit(1)
        )
        return await self.session.scalar(query)

    async def latest(self, account_id: int) -> Subscription | None:
        """The newest subscription of the account, ended or not."""
        query = self._of(account_id).order_by(Subscription.id.desc()).limit(1)
        return await self.session.scalar(query)

    async def due(self, now: datetime, limit: int) -> Sequence[Subscription]:
        """Open subscriptions whose period has ended, oldest first, at most ``limit``.

        Uses the index on ``current_period_end``. On PostgreSQL the rows are locked and rows
        another replica is already expiring are skipped; SQLite has one writer anyway.
        """
        query = (
            select(Subscription)
            .where(
                Subscription.current_period_end <= now,
                Subscription.status.in_(OPEN_STATUSES),
            )
            .order_by(Subscription.current_period_end, Subscription.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return (await self.session.scalars(query)).all()

    async def add(self, subscription: Subscription) -> Subscription:
        self.session.add(subscription)
        await self.session.flush()
        return subscription

    async def get_account(self, account_id: int) -> Account | None:
        return await self.session.get(Account, account_id)

    async def trial_claimed(self, email_digest: str) -> bool:
        query = select(TrialClaim.id).where(TrialClaim.email_digest == email_digest)
        return (await self.session.scalar(query)) is not None

    async def add_trial_claim(self, email_digest: str) -> None:
        """Raises ``IntegrityError`` if a concurrent request claimed the same email first."""
        self.session.add(TrialClaim(email_digest=email_digest))
        await self.session.flush()
