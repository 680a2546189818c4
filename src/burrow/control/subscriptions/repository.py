"""SQL for subscriptions and trial claims. Reads of one account's rows go through ``_of``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Select, and_, not_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.db import lock_row
from burrow.control.models import (
    Account,
    Subscription,
    SubscriptionStatus,
    TrialClaim,
    gives_access_clause,
)

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

    async def history(self, account_id: int) -> Sequence[Subscription]:
        """Every subscription the account ever had, oldest first (the data export)."""
        query = self._of(account_id).order_by(Subscription.id)
        return (await self.session.scalars(query)).all()

    async def due(self, now: datetime, limit: int) -> Sequence[Subscription]:
        """Open subscriptions whose access has ended (the period, or a past_due one's grace),
        oldest period first, at most ``limit``.

        Uses the index on ``current_period_end``. On PostgreSQL the rows are locked and rows
        another replica is already expiring are skipped; SQLite has one writer anyway.
        """
        # The period end (or a past_due one's grace end) bounds the scan; past_due ones end
        # when their grace does, even inside a period the provider already moved on, and
        # provider-renewed ones after the renewal margin.
        query = (
            select(Subscription)
            .where(
                Subscription.status.in_(OPEN_STATUSES),
                or_(
                    Subscription.current_period_end <= now,
                    and_(
                        Subscription.status == SubscriptionStatus.past_due,
                        Subscription.grace_until <= now,
                    ),
                ),
                not_(gives_access_clause(now)),
            )
            .order_by(Subscription.current_period_end, Subscription.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return (await self.session.scalars(query)).all()

    async def by_provider_id(
        self, provider: str, provider_subscription_id: str
    ) -> Subscription | None:
        """The newest subscription linked to the provider's recurring subscription."""
        query = (
            select(Subscription)
            .where(
                Subscription.provider == provider,
                Subscription.provider_subscription_id == provider_subscription_id,
            )
            .order_by(Subscription.id.desc())
            .limit(1)
        )
        return await self.session.scalar(query)

    async def add(self, subscription: Subscription) -> Subscription:
        self.session.add(subscription)
        await self.session.flush()
        return subscription

    async def get_account(self, account_id: int) -> Account | None:
        return await self.session.get(Account, account_id)

    async def trial_claimed(self, email_digest: str) -> bool:
        query = select(TrialClaim.id).where(TrialClaim.email_digest == email_digest)
        return (await self.session.scalar(query)) is not None

    async def lock_account(self, account_id: int) -> None:
        """Changes to one account's subscriptions take turns until the unit of work ends."""
        await lock_row(self.session, Account, account_id)

    async def add_trial_claim(self, email_digest: str) -> None:
        """Raises ``IntegrityError`` if a concurrent request claimed the same email first."""
        self.session.add(TrialClaim(email_digest=email_digest))
        await self.session.flush()
