"""All SQL of billing: orders, payments, billing details and stored webhook events.

A customer's orders are only ever read through ``_orders_of``, the one place that scopes
them to an account.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, CursorResult, Select, and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.db import lock_row
from burrow.control.models import (
    Account,
    AccountStatus,
    BillingDetails,
    Order,
    OrderStatus,
    Payment,
    PaymentMethod,
    Subscription,
    SubscriptionStatus,
    WebhookEvent,
)

# Orders whose money came in, whatever happened to it later.
PAID_STATUSES = frozenset({OrderStatus.paid, OrderStatus.refunded, OrderStatus.partially_refunded})


class BillingRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @staticmethod
    def _orders_of(account_id: int) -> Select[Order]:
        """Tenant scoping: every read of a customer's orders starts here."""
        return select(Order).where(Order.account_id == account_id)

    async def get_account(self, account_id: int) -> Account | None:
        return await self.session.get(Account, account_id)

    async def orders_of(self, account_id: int) -> Sequence[Order]:
        query = self._orders_of(account_id).order_by(Order.created_at.desc(), Order.id.desc())
        return (await self.session.scalars(query)).all()

    async def order_of(self, account_id: int, order_id: int) -> Order | None:
        return await self.session.scalar(self._orders_of(account_id).where(Order.id == order_id))

    async def get_order(self, order_id: int) -> Order | None:
        return await self.session.get(Order, order_id)

    async def paid_order_count(self, account_id: int) -> int:
        query = (
            select(func.count())
            .select_from(Order)
            .where(Order.account_id == account_id, Order.status.in_(PAID_STATUSES))
        )
        return int(await self.session.scalar(query) or 0)

    async def first_paid_order_id(self, account_id: int) -> int | None:
        query = (
            self._orders_of(account_id)
            .where(Order.status.in_(PAID_STATUSES))
            .order_by(Order.paid_at, Order.id)
            .limit(1)
        )
        order = await self.session.scalar(query)
        return order.id if order is not None else None

    async def payments_of(self, order_ids: Sequence[int]) -> Sequence[Payment]:
        if not order_ids:
            return []
        query = select(Payment).where(Payment.order_id.in_(order_ids)).order_by(Payment.id)
        return (await self.session.scalars(query)).all()

    async def payment_by_provider_id(
        self, provider: str, provider_payment_id: str
    ) -> Payment | None:
        query = select(Payment).where(
            Payment.provider == provider, Payment.provider_payment_id == provider_payment_id
        )
        return await self.session.scalar(query)

    async def lock_order(self, order: Order) -> None:
        """Pay one order one unit of work at a time (two provider events about one payment
        arriving together): lock its row, then read it again as the winner left it."""
        await lock_row(self.session, Order, order.id)
        await self.session.refresh(order)

    async def add(self, row: Order | Payment | BillingDetails) -> None:
        self.session.add(row)
        await self.session.flush()

    async def details_of(self, account_id: int) -> BillingDetails | None:
        query = select(BillingDetails).where(BillingDetails.account_id == account_id)
        return await self.session.scalar(query)

    # --- webhook events ----------------------------------------------------------------------

    async def event(self, provider: str, event_id: str) -> WebhookEvent | None:
        query = select(WebhookEvent).where(
            WebhookEvent.provider == provider, WebhookEvent.event_id == event_id
        )
        return await self.session.scalar(query)

    async def add_event(
        self, provider: str, event_id: str, type_: str, payload: str, received_at: datetime
    ) -> int | None:
        """Store the event unless (provider, event_id) is already there; its id if stored.

        ``ON CONFLICT DO NOTHING`` (both databases have it) keeps a concurrent duplicate from
        failing the transaction.
        """
        values = {
            "provider": provider,
            "event_id": event_id,
            "type": type_,
            "payload": payload,
            "received_at": received_at,
        }
        dialect = self.session.get_bind().dialect.name
        insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
        statement = (
            insert(WebhookEvent)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["provider", "event_id"])
        )
        stored = await self.session.scalar(statement.returning(WebhookEvent.id))
        return None if stored is None else int(stored)

    @staticmethod
    def _due(now: datetime) -> ColumnElement[bool]:
        """Not handled, not parked, out of its backoff, and claimed by no live handler."""
        return and_(
            WebhookEvent.processed_at.is_(None),
            WebhookEvent.failed_at.is_(None),
            or_(WebhookEvent.next_attempt_at.is_(None), WebhookEvent.next_attempt_at <= now),
            or_(WebhookEvent.claimed_until.is_(None), WebhookEvent.claimed_until < now),
        )

    async def claim_event(
        self, now: datetime, until: datetime, event_id: int | None = None
    ) -> int | None:
        """Claim one due event (``event_id``, or the next one) until ``until``; returns its id,
        or None when there is none to claim.

        Never-tried events come first and the newest of them first, so an event that just
        arrived is never stuck behind a backlog (handlers apply events by the provider's own
        state and times, so the order they run in does not change the outcome); retries
        follow, the fewest attempts first.

        PostgreSQL skips rows another claimer holds (``FOR UPDATE SKIP LOCKED``); SQLite has
        one writer at a time, and the claim is the UPDATE whose WHERE still finds the event
        due, so of two claimers exactly one gets a row back.
        """
        query = select(WebhookEvent.id).where(self._due(now))
        if event_id is not None:
            query = query.where(WebhookEvent.id == event_id)
        query = query.order_by(WebhookEvent.attempts, WebhookEvent.id.desc()).limit(1)
        if self.session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        for _ in range(20):
            found = await self.session.scalar(query)
            if found is None:
                return None
            claim = (
                update(WebhookEvent)
                .where(WebhookEvent.id == found, self._due(now))
                .values(claimed_until=until, attempts=WebhookEvent.attempts + 1)
                .execution_options(synchronize_session=False)
            )
            result: CursorResult[Any] = await self.session.execute(claim)  # type: ignore[assignment]
            if result.rowcount == 1:
                return int(found)
        return None

    async def finish_event(self, event_id: int, now: datetime) -> bool:
        """Mark a claimed event handled, unless another handler finished it first."""
        statement = (
            update(WebhookEvent)
            .where(WebhookEvent.id == event_id, WebhookEvent.processed_at.is_(None))
            .values(processed_at=now, claimed_until=None, error=None, next_attempt_at=None)
            .execution_options(synchronize_session=False)
        )
        result: CursorResult[Any] = await self.session.execute(statement)  # type: ignore[assignment]
        return result.rowcount == 1

    async def reduce_events(self, handled_before: datetime, reduced: str) -> int:
        statement = (
            update(WebhookEvent)
            .where(
                WebhookEvent.processed_at.is_not(None),
                WebhookEvent.processed_at < handled_before,
                WebhookEvent.payload != reduced,
            )
            .values(payload=reduced)
            .execution_options(synchronize_session=False)
        )
        result: CursorResult[Any] = await self.session.execute(statement)  # type: ignore[assignment]
        return int(result.rowcount or 0)

    async def failed_events(self, limit: int) -> Sequence[WebhookEvent]:
        """Events parked after their last attempt, the latest first."""
        query = (
            select(WebhookEvent)
            .where(WebhookEvent.failed_at.is_not(None), WebhookEvent.processed_at.is_(None))
            .order_by(WebhookEvent.failed_at.desc(), WebhookEvent.id.desc())
            .limit(limit)
        )
        return (await self.session.scalars(query)).all()

    async def get_event(self, event_id: int) -> WebhookEvent | None:
        return await self.session.get(WebhookEvent, event_id)

    # --- renewal reminders -------------------------------------------------------------------

    async def reminder_due(
        self,
        now: datetime,
        until: datetime,
        recurring: Sequence[PaymentMethod],
        limit: int,
    ) -> Sequence[tuple[Subscription, str, PaymentMethod]]:
        """Active, not cancelled subscriptions ending in (now, until] that were paid last by a
        method outside ``recurring`` and have no reminder for this period yet; with the
        account's email and that method.

        The last paid order is found in the same query, so subscriptions paid by a recurring
        method never fill the batch and hold back the ones that need a reminder.
        """
        last_method = (
            select(Order.payment_method)
            .where(Order.account_id == Subscription.account_id, Order.status.in_(PAID_STATUSES))
            .order_by(Order.paid_at.desc(), Order.id.desc())
            .limit(1)
            .correlate(Subscription)
            .scalar_subquery()
        )
        query = (
            select(Subscription, Account.email, last_method)
            .join(Account, Account.id == Subscription.account_id)
            .where(
                Subscription.status == SubscriptionStatus.active,
                Subscription.cancel_at_period_end.is_(False),
                Subscription.current_period_end > now,
                Subscription.current_period_end <= until,
                or_(
                    Subscription.reminder_sent_for.is_(None),
                    Subscription.reminder_sent_for != Subscription.current_period_end,
                ),
                Account.status == AccountStatus.active,
                last_method.is_not(None),
                last_method.not_in(list(recurring)),
            )
            .order_by(Subscription.current_period_end, Subscription.id)
            .limit(limit)
        )
        rows = (await self.session.execute(query)).all()
        return [(row[0], row[1], PaymentMethod(row[2])) for row in rows]
