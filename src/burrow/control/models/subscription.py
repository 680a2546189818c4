from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, Enum, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from burrow.control.models.base import Base, BigId, CreatedMixin, IdMixin


class SubscriptionStatus(StrEnum):
    trialing = "trialing"
    active = "active"
    past_due = "past_due"
    canceled = "canceled"
    expired = "expired"


# Only these give access to the VPN (and only while the account is active).
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
