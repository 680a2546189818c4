from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import Boolean, ColumnElement, Enum, ForeignKey, String, and_, bindparam, or_
from sqlalchemy.orm import Mapped, mapped_column

from burrow.control.models.base import Base, BigId, CreatedMixin, IdMixin


class SubscriptionStatus(StrEnum):
    trialing = "trialing"
    active = "active"
    past_due = "past_due"
    canceled = "canceled"
    expired = "expired"


# These give access to the VPN until the period end (and only while the account is active);
# past_due gives it until ``grace_until`` instead: see ``gives_access_clause``.
ACCESS_STATUSES = frozenset({SubscriptionStatus.trialing, SubscriptionStatus.active})


class Subscription(IdMixin, CreatedMixin, Base):
    __tablename__ = "subscriptions"

    account_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    plan_id: Mapped[int] = mapped_column(BigId, ForeignKey("plans.id"), index=True)
    status: Mapped[SubscriptionStatus] = mapped_column(
        Enum(SubscriptionStatus, native_enum=False, length=20), index=True
    )
    current_period_start: Mapped[datetime]
    current_period_end: Mapped[datetime] = mapped_column(index=True)
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, default=False)
    canceled_at: Mapped[datetime | None] = mapped_column(default=None)
    ended_at: Mapped[datetime | None] = mapped_column(default=None)
    # A provider's recurring subscription behind this one (Stripe's ``sub_...``), if any.
    provider: Mapped[str | None] = mapped_column(String(32), default=None)
    provider_subscription_id: Mapped[str | None] = mapped_column(
        String(200), default=None, index=True
    )
    # The time of the newest provider object applied, so an older event arriving late
    # cannot undo a newer state.
    provider_updated_at: Mapped[datetime | None] = mapped_column(default=None)
    # past_due: access continues until here (the policy's grace), then the period expires.
    grace_until: Mapped[datetime | None] = mapped_column(default=None)
    # The period end a renewal reminder was sent for (non-recurring methods), sent once.
    reminder_sent_for: Mapped[datetime | None] = mapped_column(default=None)


# A subscription the provider renews (Stripe) keeps access this long past its period end while
# the renewal is charged: Stripe charges about an hour after the period ends, and its events
# (the new period, or a failed payment with the policy's grace) settle it within this margin.
PROVIDER_RENEWAL_MARGIN = timedelta(days=1)


def access_until(subscription: Subscription) -> datetime | None:
    """When this subscription's access ends, if it gives any (the account is checked elsewhere).

    The same rule as ``gives_access_clause`` in SQL.
    """
    sub = subscription
    if sub.status == SubscriptionStatus.past_due:
        return sub.grace_until
    if sub.status not in ACCESS_STATUSES:
        return None
    if (
        sub.status == SubscriptionStatus.active
        and sub.provider_subscription_id is not None
        and not sub.cancel_at_period_end
    ):
        return sub.current_period_end + PROVIDER_RENEWAL_MARGIN
    return sub.current_period_end


def gives_access_clause(now: datetime) -> ColumnElement[bool]:
    """SQL for "this subscription gives access at ``now``": trialing or active until the
    period end (a provider-renewed one until the renewal margin after it), or past_due (a
    failed renewal) until the policy's grace ends."""
    return _gives_access(now, now - PROVIDER_RENEWAL_MARGIN)


def gives_access_bound() -> ColumnElement[bool]:
    """``gives_access_clause`` with "now" left as bound parameters (``access_parameters``), so
    a statement built once can be run at any time without being built again."""
    moment = Subscription.current_period_end.type
    return _gives_access(
        bindparam("access_now", type_=moment), bindparam("access_renewed_after", type_=moment)
    )


def access_parameters(now: datetime) -> dict[str, datetime]:
    """The values of ``gives_access_bound``'s parameters at ``now``."""
    return {"access_now": now, "access_renewed_after": now - PROVIDER_RENEWAL_MARGIN}


def _gives_access(
    now: datetime | ColumnElement[datetime], renewed_after: datetime | ColumnElement[datetime]
) -> ColumnElement[bool]:
    return or_(
        and_(Subscription.status.in_(ACCESS_STATUSES), Subscription.current_period_end > now),
        and_(
            Subscription.status == SubscriptionStatus.active,
            Subscription.provider_subscription_id.is_not(None),
            Subscription.cancel_at_period_end.is_(False),
            Subscription.current_period_end > renewed_after,
        ),
        and_(
            Subscription.status == SubscriptionStatus.past_due,
            Subscription.grace_until.is_not(None),
            Subscription.grace_until > now,
        ),
    )
